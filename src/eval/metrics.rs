//! Ranking metrics as pure functions of ranks.
//!
//! A rank is 1-based: `1 + the number of candidates scoring strictly higher than the target`, as
//! in C2DSR (ties favour the target). A NaN target score ranks below every non-NaN candidate; a
//! NaN candidate never outranks the target.

use serde::{Deserialize, Serialize};

/// The rank of a target scoring `target` among `candidates` (which exclude the target).
pub fn rank(target: f32, candidates: &[f32]) -> usize {
    1 + candidates
        .iter()
        .filter(|&&s| s > target || (target.is_nan() && !s.is_nan()))
        .count()
}

/// Mean reciprocal rank.
pub fn mrr(ranks: &[usize]) -> f64 {
    mean(ranks.iter().map(|&r| 1.0 / r as f64), ranks.len())
}

/// NDCG@k with one relevant item: `1 / log2(rank + 1)` when `rank <= k`, else 0, averaged.
pub fn ndcg_at(ranks: &[usize], k: usize) -> f64 {
    mean(
        ranks.iter().map(|&r| {
            if r <= k {
                1.0 / ((r + 1) as f64).log2()
            } else {
                0.0
            }
        }),
        ranks.len(),
    )
}

/// Hit ratio at k: the share of targets ranked in the top k.
pub fn hr_at(ranks: &[usize], k: usize) -> f64 {
    mean(
        ranks.iter().map(|&r| f64::from(u8::from(r <= k))),
        ranks.len(),
    )
}

fn mean(values: impl Iterator<Item = f64>, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        values.sum::<f64>() / n as f64
    }
}

/// The metrics reported per target domain.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DomainMetrics {
    /// Mean reciprocal rank.
    pub mrr: f64,
    /// NDCG@5.
    pub ndcg5: f64,
    /// NDCG@10.
    pub ndcg10: f64,
    /// HR@1.
    pub hr1: f64,
    /// HR@5.
    pub hr5: f64,
    /// HR@10.
    pub hr10: f64,
    /// Number of examples.
    pub n: usize,
}

impl DomainMetrics {
    /// Computes every metric from the ranks of one domain's examples.
    pub fn from_ranks(ranks: &[usize]) -> Self {
        Self {
            mrr: mrr(ranks),
            ndcg5: ndcg_at(ranks, 5),
            ndcg10: ndcg_at(ranks, 10),
            hr1: hr_at(ranks, 1),
            hr5: hr_at(ranks, 5),
            hr10: hr_at(ranks, 10),
            n: ranks.len(),
        }
    }
}

/// Upper bounds (inclusive) of the popularity slices: a target is put in the first slice
/// whose bound is at least its number of training interactions; the last slice is open.
pub const POPULARITY_BOUNDS: [u32; 3] = [0, 4, 19];

/// The metrics of the examples whose target has a given range of training interactions: how a
/// model does on cold items (never seen in training) against popular ones.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PopularitySlice {
    /// Fewest training interactions of a target in the slice.
    pub min: u32,
    /// Most training interactions of a target in the slice (`None`: no upper bound).
    pub max: Option<u32>,
    /// The slice's metrics.
    pub metrics: DomainMetrics,
}

impl PopularitySlice {
    /// The slice's range as text: `0`, `1-4`, `20+`.
    pub fn label(&self) -> String {
        match self.max {
            Some(max) if max == self.min => format!("{max}"),
            Some(max) => format!("{}-{max}", self.min),
            None => format!("{}+", self.min),
        }
    }

    /// Splits one domain's ranks by the training count of each example's target
    /// ([`POPULARITY_BOUNDS`]); `counts[k]` belongs to `ranks[k]`. Every slice is returned,
    /// empty ones with `n = 0`.
    ///
    /// # Panics
    /// If `ranks` and `counts` differ in length.
    pub fn split(ranks: &[usize], counts: &[u32]) -> Vec<Self> {
        assert_eq!(ranks.len(), counts.len(), "one training count per rank");
        let mut lower = 0;
        let mut slices = Vec::with_capacity(POPULARITY_BOUNDS.len() + 1);
        for max in POPULARITY_BOUNDS
            .iter()
            .map(|&b| Some(b))
            .chain(std::iter::once(None))
        {
            let inside: Vec<usize> = ranks
                .iter()
                .zip(counts)
                .filter(|&(_, &c)| c >= lower && max.is_none_or(|m| c <= m))
                .map(|(&r, _)| r)
                .collect();
            slices.push(Self {
                min: lower,
                max,
                metrics: DomainMetrics::from_ranks(&inside),
            });
            lower = max.map_or(lower, |m| m + 1);
        }
        slices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_counts_strictly_higher_scores() {
        assert_eq!(rank(0.5, &[0.1, 0.9, 0.5, 0.7]), 3);
        assert_eq!(rank(1.0, &[]), 1);
        assert_eq!(rank(f32::NAN, &[0.1, f32::NAN]), 2);
        assert_eq!(rank(0.2, &[f32::NAN, 0.1]), 1);
    }

    #[test]
    fn hand_computed_values() {
        let ranks = [1, 2, 4, 11];
        // MRR = (1 + 1/2 + 1/4 + 1/11) / 4.
        assert!((mrr(&ranks) - (1.0 + 0.5 + 0.25 + 1.0 / 11.0) / 4.0).abs() < 1e-12);
        // NDCG@5 = (1 + 1/log2(3) + 1/log2(5) + 0) / 4.
        let expected = (1.0 + 1.0 / 3f64.log2() + 1.0 / 5f64.log2()) / 4.0;
        assert!((ndcg_at(&ranks, 5) - expected).abs() < 1e-12);
        // NDCG@1 counts only rank 1.
        assert!((ndcg_at(&ranks, 1) - 0.25).abs() < 1e-12);
        assert!((hr_at(&ranks, 1) - 0.25).abs() < 1e-12);
        assert!((hr_at(&ranks, 5) - 0.75).abs() < 1e-12);
        assert!((hr_at(&ranks, 10) - 0.75).abs() < 1e-12);
        assert!((hr_at(&ranks, 11) - 1.0).abs() < 1e-12);
        let m = DomainMetrics::from_ranks(&ranks);
        assert_eq!(m.n, 4);
        assert!((m.ndcg10 - expected).abs() < 1e-12);
    }

    #[test]
    fn empty_ranks_give_zero() {
        let m = DomainMetrics::from_ranks(&[]);
        assert_eq!((m.mrr, m.hr10, m.n), (0.0, 0.0, 0));
    }

    #[test]
    fn popularity_slices_partition_the_ranks_by_training_count() {
        let ranks = [1, 2, 4, 10, 100, 5];
        let counts = [0, 0, 3, 4, 19, 250];
        let slices = PopularitySlice::split(&ranks, &counts);
        let labels: Vec<String> = slices.iter().map(PopularitySlice::label).collect();
        assert_eq!(labels, ["0", "1-4", "5-19", "20+"]);
        let n: Vec<usize> = slices.iter().map(|s| s.metrics.n).collect();
        assert_eq!(n, [2, 2, 1, 1]);
        assert!((slices[0].metrics.mrr - 0.75).abs() < 1e-12);
        assert!((slices[1].metrics.mrr - (0.25 + 0.1) / 2.0).abs() < 1e-12);
        assert!((slices[2].metrics.mrr - 0.01).abs() < 1e-12);
        assert!((slices[3].metrics.mrr - 0.2).abs() < 1e-12);
        // Weighted by their sizes, the slices give back the whole domain's MRR.
        let whole = DomainMetrics::from_ranks(&ranks).mrr;
        let pooled: f64 = slices
            .iter()
            .map(|s| s.metrics.mrr * s.metrics.n as f64)
            .sum();
        assert!((pooled / ranks.len() as f64 - whole).abs() < 1e-12);
    }
}
