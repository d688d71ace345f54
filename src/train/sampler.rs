//! Negatives of the sampled softmax: `K` items per domain and step, shared by every position
//! of the batch, drawn uniformly or by popularity, with the log expected counts that the loss
//! subtracts (log-Q correction).

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::config::Sampler;
use crate::data::{Dataset, DomainId};
use crate::model::DomainNegatives;

/// Per-domain negative sampler of the sampled softmax.
pub(super) struct NegativeSampler {
    k: usize,
    /// Cumulative distribution over each domain's items.
    cdf: [Vec<f64>; 2],
    /// `log(K * q(i))` per domain, on the training device.
    log_q: [Tensor<1>; 2],
}

impl NegativeSampler {
    pub(super) fn new(dataset: &Dataset, k: usize, sampler: &Sampler, device: &Device) -> Self {
        let counts = dataset.train_counts();
        let build = |d: DomainId| {
            let dom = dataset.domain(d);
            let weights: Vec<f64> = dom
                .items()
                .map(|i| match sampler {
                    Sampler::Uniform => 1.0,
                    Sampler::Popularity { power } => (counts[i as usize] as f64 + 1.0).powf(*power),
                })
                .collect();
            let total: f64 = weights.iter().sum();
            let mut acc = 0.0;
            let cdf: Vec<f64> = weights
                .iter()
                .map(|w| {
                    acc += w / total;
                    acc
                })
                .collect();
            let log_q: Vec<f32> = weights
                .iter()
                .map(|w| ((k as f64) * w / total).ln() as f32)
                .collect();
            let n = log_q.len();
            (cdf, Tensor::from_data(TensorData::new(log_q, [n]), device))
        };
        let (cx, qx) = build(DomainId::X);
        let (cy, qy) = build(DomainId::Y);
        Self {
            k,
            cdf: [cx, cy],
            log_q: [qx, qy],
        }
    }

    pub(super) fn sample(&self, rng: &mut ChaCha8Rng, device: &Device) -> [DomainNegatives; 2] {
        std::array::from_fn(|d| {
            let cdf = &self.cdf[d];
            let ids: Vec<i64> = (0..self.k)
                .map(|_| {
                    let u: f64 = rng.random();
                    cdf.partition_point(|&c| c < u).min(cdf.len() - 1) as i64
                })
                .collect();
            DomainNegatives {
                ids: Tensor::<1, Int>::from_data(TensorData::new(ids, [self.k]), device),
                log_q: self.log_q[d].clone(),
            }
        })
    }
}
