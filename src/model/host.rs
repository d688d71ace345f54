//! Eq. 11 on the host: the logits of a batch read back once, then mixed row by row with the
//! vectorised kernels of [`crate::fastmath`]. The server ([`crate::recommend`]) mixes whole
//! rows; evaluation under a sampled protocol mixes only the candidates' columns, each
//! sub-sequence's softmax still normalised over the whole domain.

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
}

impl HostParts {
    /// The parts of a batch from per-sub-sequence weights and presence and per-modality
    /// weights and logits; an error if some logits are not `f32`.
    pub(crate) fn new(
        parts: Vec<(f64, Vec<bool>)>,
        modalities: Vec<(f64, TensorData)>,
    ) -> Result<Self> {
        for (_, data) in &modalities {
            data.as_slice::<f32>()
                .map_err(|e| Error::InvalidInput(format!("reading scores back: {e:?}")))?;
        }
        Ok(Self { parts, modalities })
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
            .stacked_logits(queries.modalities, heads)
            .into_iter()
            .map(|(_, w, logits): (Modality, f64, Tensor<2>)| {
                (w, logits.into_data().convert::<f32>())
            })
            .collect();
        Self::new(
            queries.parts.into_iter().map(|(_, w, p)| (w, p)).collect(),
            modalities,
        )
    }

    /// Rows of the batch.
    fn batch(&self) -> usize {
        self.parts.first().map_or(0, |p| p.1.len())
    }

    /// Calls `f(weight, logits)` for each (sub-sequence present in `row`, modality), with the
    /// combined weight `w_s * a_m` and the logits row of length `n`.
    fn for_each_logits_row(&self, row: usize, n: usize, mut f: impl FnMut(f32, &[f32])) {
        let b = self.batch();
        for (k, (w, present)) in self.parts.iter().enumerate() {
            if !present[row] {
                continue;
            }
            for (a, data) in &self.modalities {
                let logits = data
                    .as_slice::<f32>()
                    .expect("f32 logits, checked by `new`");
                let start = (k * b + row) * n;
                f((*w * *a) as f32, &logits[start..start + n]);
            }
        }
    }

    /// Eq. 11 for row `row`: `sum_s w_s sum_m a_m softmax(logits_{s,m})`, over the
    /// sub-sequences present in the row, in one pass over each logits row.
    pub(crate) fn mix_row(&self, row: usize, n: usize) -> Vec<f32> {
        let mut score = vec![0.0f32; n];
        let mut buf = vec![0.0f32; n];
        self.for_each_logits_row(row, n, |c, l| {
            fastmath::add_softmax(l, c, &mut buf, &mut score);
        });
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
            let lse = fastmath::log_sum_exp(l);
            // A row of -inf (or NaN) logits adds nothing, as in `mix_row`.
            if lse.is_finite() {
                fastmath::add_exp(&picked, lse, c, &mut score);
            }
        });
        score
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> HostParts {
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
        )
        .unwrap()
    }

    #[test]
    fn columns_equal_the_full_row_at_those_columns() {
        let n = 7;
        let p = parts();
        for row in 0..2 {
            let full = p.mix_row(row, n);
            let columns = [6u32, 0, 3, 3, 1];
            let picked = p.mix_columns(row, n, &columns);
            for (&c, got) in columns.iter().zip(picked) {
                let want = full[c as usize];
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1e-3),
                    "row {row}, column {c}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn a_row_mixes_the_parts_it_has() {
        let n = 7;
        // The mixture of softmaxes is a distribution weighted by the parts present.
        let p = parts();
        let sum: f32 = p.mix_row(0, n).iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{sum}");
        let sum: f32 = p.mix_row(1, n).iter().sum();
        assert!((sum - 0.7).abs() < 1e-5, "{sum}");
    }

    #[test]
    fn logits_that_are_not_f32_are_refused() {
        let data = TensorData::new(vec![1.0f64, 2.0], [2]);
        assert!(HostParts::new(vec![(1.0, vec![true])], vec![(1.0, data)]).is_err());
    }
}
