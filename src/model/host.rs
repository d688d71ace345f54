//! Eq. 11 on the host: the logits of a batch read back once, then mixed row by row with the
//! vectorised kernels of [`crate::fastmath`]. The server ([`crate::recommend`]) mixes whole
//! rows; evaluation under a sampled protocol mixes only the candidates' columns, each
//! sub-sequence's softmax still normalised over the whole domain.

use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};

use super::{LlmEmf, Modality, ScoreQueries};
use crate::error::{Error, Result};
use crate::fastmath;

/// The Eq. 11 logits of one batch on the host.
pub(crate) struct HostParts {
    /// Per scored sub-sequence: its weight and whether each row has an item of it.
    parts: Vec<(f64, Vec<bool>)>,
    /// Per modality: its weight and the `[parts * batch * n]` `f32` logits, sub-sequence-major
    /// (as [`LlmEmf::stacked_logits`] makes them); kept as read (no copy), checked to be `f32`
    /// by [`HostParts::new`].
    modalities: Vec<(f64, TensorData)>,
    /// Combine as a product of experts (weighted logits) instead of Eq. 11's mixture.
    product: bool,
    /// The popularity adjustment per item of the domain, added to a log-score
    /// ([`LlmEmf::log_prior`]): the mixture is multiplied by its `exp`, the product's score
    /// gets it added.
    log_prior: Option<Arc<[f32]>>,
}

impl HostParts {
    /// The parts of a batch from per-sub-sequence weights and presence, per-modality weights
    /// and logits, and how to combine them; an error if some logits are not `f32`.
    pub(crate) fn new(
        parts: Vec<(f64, Vec<bool>)>,
        modalities: Vec<(f64, TensorData)>,
        product: bool,
    ) -> Result<Self> {
        for (_, data) in &modalities {
            data.as_slice::<f32>()
                .map_err(|e| Error::InvalidInput(format!("reading scores back: {e:?}")))?;
        }
        Ok(Self {
            parts,
            modalities,
            product,
            log_prior: None,
        })
    }

    /// The same parts with the popularity adjustment `log_prior` (one value per item of the
    /// domain, [`LlmEmf::log_prior`]) applied to every mixed score.
    pub(crate) fn with_log_prior(mut self, log_prior: Option<Arc<[f32]>>) -> Self {
        self.log_prior = log_prior;
        self
    }

    /// The host copy of `model`'s popularity adjustment of domain `d` (`None` without one, or
    /// when it cannot be read back).
    pub(crate) fn host_log_prior(model: &LlmEmf, d: crate::data::DomainId) -> Option<Arc<[f32]>> {
        model
            .log_prior(d)
            .and_then(|p| p.into_data().convert::<f32>().try_into_vec::<f32>().ok())
            .map(Arc::from)
    }

    /// Applies the popularity adjustment to `score`, whose entry `k` is item `item(k)`.
    fn adjust(&self, score: &mut [f32], item: impl Fn(usize) -> usize) {
        let Some(prior) = &self.log_prior else {
            return;
        };
        for (k, s) in score.iter_mut().enumerate() {
            let p = prior[item(k)];
            if self.product {
                *s += p;
            } else {
                *s *= p.exp();
            }
        }
    }

    /// Scores `queries` against `heads` on the device ([`LlmEmf::stacked_logits`]) and reads
    /// the logits back, one read per modality (no copy on the CPU backends).
    pub(crate) fn score(
        model: &LlmEmf,
        queries: ScoreQueries,
        heads: &[Option<Tensor<2>>; 3],
    ) -> Result<Self> {
        // On the CPU backends, a uniquely owned result is handed over without a copy.
        let modalities = model
            .stacked_logits(queries.domain, queries.modalities, heads)
            .into_iter()
            .map(|(_, w, logits): (Modality, f64, Tensor<2>)| {
                (w, logits.into_data().convert::<f32>())
            })
            .collect();
        let domain = queries.domain;
        Ok(Self::new(
            queries.parts.into_iter().map(|(_, w, p)| (w, p)).collect(),
            modalities,
            model.product_of_experts(),
        )?
        .with_log_prior(Self::host_log_prior(model, domain)))
    }

    /// Rows of the batch.
    fn batch(&self) -> usize {
        self.parts.first().map_or(0, |p| p.1.len())
    }

    /// The product's weights are renormalised over the sub-sequences present in the row; the
    /// mixture's are not.
    fn norm(&self, row: usize) -> f64 {
        if self.product {
            self.parts
                .iter()
                .filter(|p| p.1[row])
                .map(|p| p.0)
                .sum::<f64>()
                .max(1e-12)
        } else {
            1.0
        }
    }

    /// Calls `f(weight, logits)` for each (sub-sequence present in `row`, modality), with the
    /// combined weight `w_s * a_m` (divided by the row's norm under the product) and the
    /// logits row of length `n`.
    fn for_each_logits_row(&self, row: usize, n: usize, mut f: impl FnMut(f32, &[f32])) {
        let (b, norm) = (self.batch(), self.norm(row));
        for (k, (w, present)) in self.parts.iter().enumerate() {
            if !present[row] {
                continue;
            }
            for (a, data) in &self.modalities {
                let logits = data
                    .as_slice::<f32>()
                    .expect("f32 logits, checked by `new`");
                let start = (k * b + row) * n;
                f((*w * *a / norm) as f32, &logits[start..start + n]);
            }
        }
    }

    /// Eq. 11 for row `row`: `sum_s w_s sum_m a_m softmax(logits_{s,m})`, over the
    /// sub-sequences present in the row, in one pass over each logits row.
    /// Under the product of experts: `sum_s w_s sum_m a_m logits_{s,m} / sum_s w_s`.
    pub(crate) fn mix_row(&self, row: usize, n: usize) -> Vec<f32> {
        let mut score = vec![0.0f32; n];
        let mut buf = vec![0.0f32; n];
        self.for_each_logits_row(row, n, |c, l| {
            if self.product {
                for (s, &x) in score.iter_mut().zip(l) {
                    *s += c * x;
                }
            } else {
                fastmath::add_softmax(l, c, &mut buf, &mut score);
            }
        });
        self.adjust(&mut score, |k| k);
        score
    }

    /// [`Self::mix_row`] at `columns` only (local item indices below `n`, in any order,
    /// repeats allowed): the same values up to rounding, each softmax still normalised over
    /// all `n` items, at the cost of one `log_sum_exp` per logits row instead of a full mix.
    ///
    /// # Panics
    /// If a column is `n` or more.
    pub(crate) fn mix_columns(&self, row: usize, n: usize, columns: &[u32]) -> Vec<f32> {
        let mut score = vec![0.0f32; columns.len()];
        let mut picked = vec![0.0f32; columns.len()];
        self.for_each_logits_row(row, n, |c, l| {
            for (p, &col) in picked.iter_mut().zip(columns) {
                *p = l[col as usize];
            }
            if self.product {
                for (s, &x) in score.iter_mut().zip(&picked) {
                    *s += c * x;
                }
            } else {
                let lse = fastmath::log_sum_exp(l);
                // A row of -inf (or NaN) logits adds nothing, as in `mix_row`.
                if lse.is_finite() {
                    fastmath::add_exp(&picked, lse, c, &mut score);
                }
            }
        });
        self.adjust(&mut score, |k| columns[k] as usize);
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(product: bool) -> HostParts {
        let n = 7;
        // Two parts of two rows, two modalities; the second part is missing in row 1.
        let logits = |seed: usize| -> Vec<f32> {
            (0..2 * 2 * n)
                .map(|i| (((i + seed) * 31 % 17) as f32) * 0.4 - 3.0)
                .collect()
        };
        let data = |v: Vec<f32>| {
            let len = v.len();
            TensorData::new(v, [len])
        };
        HostParts::new(
            vec![(0.7, vec![true, true]), (0.3, vec![true, false])],
            vec![(0.6, data(logits(1))), (0.4, data(logits(2)))],
            product,
        )
        .unwrap()
    }

    #[test]
    fn columns_equal_the_full_row_at_those_columns() {
        let n = 7;
        for product in [false, true] {
            let p = parts(product);
            for row in 0..2 {
                let full = p.mix_row(row, n);
                let columns = [6u32, 0, 3, 3, 1];
                let picked = p.mix_columns(row, n, &columns);
                for (&c, got) in columns.iter().zip(picked) {
                    let want = full[c as usize];
                    assert!(
                        (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
                        "product {product}, row {row}, column {c}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_row_mixes_the_parts_it_has() {
        let n = 7;
        // The mixture of softmaxes is a distribution weighted by the parts present.
        let p = parts(false);
        let sum: f32 = p.mix_row(0, n).iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        let sum: f32 = p.mix_row(1, n).iter().sum();
        assert!((sum - 0.7).abs() < 1e-5, "{sum}");
        // The product renormalises: row 1 is part 0's weighted logits alone.
        let p = parts(true);
        let row1 = p.mix_row(1, n);
        let l0 = p.modalities[0].1.as_slice::<f32>().unwrap();
        let l1 = p.modalities[1].1.as_slice::<f32>().unwrap();
        for i in 0..n {
            let want = 0.6 * l0[n + i] + 0.4 * l1[n + i];
            assert!((row1[i] - want).abs() < 1e-5, "{} vs {want}", row1[i]);
        }
    }

    #[test]
    fn the_popularity_adjustment_scales_the_mixture_and_shifts_the_product() {
        let n = 7;
        let prior: Arc<[f32]> = (0..n).map(|i| 0.3 * i as f32 - 1.0).collect();
        for product in [false, true] {
            let plain = parts(product);
            let adjusted = parts(product).with_log_prior(Some(prior.clone()));
            for row in 0..2 {
                let base = plain.mix_row(row, n);
                let got = adjusted.mix_row(row, n);
                for i in 0..n {
                    let want = if product {
                        base[i] + prior[i]
                    } else {
                        base[i] * prior[i].exp()
                    };
                    assert!((got[i] - want).abs() <= 1e-6 * want.abs().max(1e-3));
                }
                // The candidates' columns get their own items' adjustment.
                let columns = [6u32, 0, 3];
                let picked = adjusted.mix_columns(row, n, &columns);
                for (&c, value) in columns.iter().zip(picked) {
                    let want = got[c as usize];
                    assert!((value - want).abs() <= 1e-6 * want.abs().max(1e-3));
                }
            }
        }
    }
}
