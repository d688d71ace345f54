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
    /// Per domain, the last item with a positive probability (what a draw of `u` close to 1
    /// falls back to when rounding leaves the distribution's total below it).
    last: [usize; 2],
    /// `log(K * q(i))` per domain, on the training device.
    log_q: [Tensor<1>; 2],
}

impl NegativeSampler {
    /// A sampler of `k` negatives per domain and step. With `seen_only`, items without a
    /// training interaction are never drawn (a domain without any seen item falls back to
    /// all of its items).
    pub(super) fn new(
        dataset: &Dataset,
        k: usize,
        sampler: &Sampler,
        seen_only: bool,
        device: &Device,
    ) -> Self {
        let counts = dataset.train_counts();
        let build = |d: DomainId| {
            let dom = dataset.domain(d);
            let weight = |i: u32, with_unseen: bool| {
                let c = counts[i as usize];
                if c == 0 && !with_unseen {
                    return 0.0;
                }
                match sampler {
                    Sampler::Uniform => 1.0,
                    Sampler::Popularity { power } => (f64::from(c) + 1.0).powf(*power),
                }
            };
            let mut weights: Vec<f64> = dom.items().map(|i| weight(i, !seen_only)).collect();
            if weights.iter().all(|&w| w == 0.0) {
                weights = dom.items().map(|i| weight(i, true)).collect();
            }
            let total: f64 = weights.iter().sum();
            let mut acc = 0.0;
            let cdf: Vec<f64> = weights
                .iter()
                .map(|w| {
                    acc += w / total;
                    acc
                })
                .collect();
            let last = weights.iter().rposition(|&w| w > 0.0).unwrap_or(0);
            // Items that are never drawn get 0: their entries are never read.
            let log_q: Vec<f32> = weights
                .iter()
                .map(|&w| {
                    if w > 0.0 {
                        ((k as f64) * w / total).ln() as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            let n = log_q.len();
            (
                cdf,
                last,
                Tensor::from_data(TensorData::new(log_q, [n]), device),
            )
        };
        let (cx, lx, qx) = build(DomainId::X);
        let (cy, ly, qy) = build(DomainId::Y);
        Self {
            k,
            cdf: [cx, cy],
            last: [lx, ly],
            log_q: [qx, qy],
        }
    }

    pub(super) fn sample(&self, rng: &mut ChaCha8Rng, device: &Device) -> [DomainNegatives; 2] {
        std::array::from_fn(|d| {
            let cdf = &self.cdf[d];
            let ids: Vec<i64> = (0..self.k)
                .map(|_| {
                    let u: f64 = rng.random();
                    // The first item whose cumulative probability exceeds `u`: an item of
                    // probability 0 never is.
                    cdf.partition_point(|&c| c <= u).min(self.last[d]) as i64
                })
                .collect();
            DomainNegatives {
                ids: Tensor::<1, Int>::from_data(TensorData::new(ids, [self.k]), device),
                log_q: self.log_q[d].clone(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn seen_only_never_draws_an_item_without_training_interactions() {
        let device = crate::test_device();
        let data = crate::test_data(12, 30, 40);
        let dataset = &data.dataset;
        let counts = dataset.train_counts();
        let unseen: Vec<u32> = (0..dataset.num_items() as u32)
            .filter(|&i| counts[i as usize] == 0)
            .collect();
        assert!(!unseen.is_empty(), "the test data has unseen items");
        for sampler in [Sampler::Uniform, Sampler::Popularity { power: 0.75 }] {
            let mut rng = ChaCha8Rng::seed_from_u64(3);
            let mut drew_unseen = [false, false];
            for seen_only in [true, false] {
                let s = NegativeSampler::new(dataset, 500, &sampler, seen_only, &device);
                for _ in 0..4 {
                    for (d, neg) in s.sample(&mut rng, &device).iter().enumerate() {
                        let start = dataset.domain(DomainId::BOTH[d]).start;
                        let ids = neg
                            .ids
                            .to_data()
                            .convert::<i64>()
                            .try_to_vec::<i64>()
                            .unwrap();
                        let log_q = neg.log_q.to_data().try_to_vec::<f32>().unwrap();
                        for i in ids {
                            let item = start + i as u32;
                            let is_unseen = counts[item as usize] == 0;
                            assert!(!(seen_only && is_unseen), "{sampler:?} drew {item}");
                            drew_unseen[usize::from(seen_only)] |= is_unseen;
                            assert!(log_q[i as usize].is_finite());
                        }
                    }
                }
            }
            // Without the switch, unseen items are drawn like the others.
            assert!(drew_unseen[0], "{sampler:?}");
        }
    }
}
