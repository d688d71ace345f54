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
}
