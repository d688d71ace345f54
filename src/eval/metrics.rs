//! Ranking metrics as pure functions of ranks.
//!
//! A [`Rank`] is where a target lands among its candidates: `higher` candidates score strictly
//! above it and `tied` score exactly the same. Items with identical vectors (untitled items
//! never seen in training, whose learned rows shrink to zero, say) tie exactly, and a rule that
//! breaks every tie in the target's favour would reward a model for giving many items one
//! score. Every metric is therefore the expectation under a uniformly random order of the tied
//! items: the target's position is `higher + 1 + j` with `j` uniform in `0..=tied`, so MRR is
//! `E[1 / rank]`, HR@k is `P(rank <= k)` and NDCG@k is `E[NDCG@k]`. Without ties these are the
//! usual values. A NaN target score ranks below every non-NaN candidate and ties with NaN
//! candidates; a NaN candidate never outranks a non-NaN target.

use serde::{Deserialize, Serialize};

/// Where a target lands among its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rank {
    /// Candidates scoring strictly higher than the target.
    pub higher: usize,
    /// Candidates scoring exactly as the target (the target itself excluded).
    pub tied: usize,
}

impl Rank {
    /// A rank without ties: `position` is 1-based.
    ///
    /// # Panics
    /// If `position` is 0.
    pub fn at(position: usize) -> Self {
        assert!(position >= 1, "ranks are 1-based");
        Self {
            higher: position - 1,
            tied: 0,
        }
    }

    /// The best position the target can take (the rule that breaks ties in its favour).
    pub fn best(self) -> usize {
        self.higher + 1
    }

    /// The positions the target takes with equal probability.
    fn positions(self) -> std::ops::RangeInclusive<usize> {
        self.higher + 1..=self.higher + 1 + self.tied
    }

    /// `E[1 / rank]` under a random order of the tied items.
    pub fn reciprocal(self) -> f64 {
        self.positions().map(|r| 1.0 / r as f64).sum::<f64>() / (self.tied + 1) as f64
    }

    /// `P(rank <= k)` under a random order of the tied items.
    pub fn hit(self, k: usize) -> f64 {
        let inside = k.saturating_sub(self.higher).min(self.tied + 1);
        inside as f64 / (self.tied + 1) as f64
    }

    /// `E[NDCG@k]` with one relevant item under a random order of the tied items.
    pub fn ndcg(self, k: usize) -> f64 {
        self.positions()
            .take_while(|&r| r <= k)
            .map(|r| 1.0 / ((r + 1) as f64).log2())
            .sum::<f64>()
            / (self.tied + 1) as f64
    }
}

/// The rank of a target scoring `target` among `candidates` (which exclude the target).
pub fn rank(target: f32, candidates: &[f32]) -> Rank {
    let mut out = Rank::default();
    for &s in candidates {
        if target.is_nan() {
            if s.is_nan() {
                out.tied += 1;
            } else {
                out.higher += 1;
            }
        } else if s > target {
            out.higher += 1;
        } else if s == target {
            out.tied += 1;
        }
    }
    out
}

/// The rank of the candidate at `target` in a row of scores that holds it.
///
/// # Panics
/// If `target` is out of the row.
pub fn rank_in_row(scores: &[f32], target: usize) -> Rank {
    let mut out = rank(scores[target], &scores[..target]);
    let after = rank(scores[target], &scores[target + 1..]);
    out.higher += after.higher;
    out.tied += after.tied;
    out
}

/// Mean reciprocal rank (`E[1 / rank]` per target, averaged).
pub fn mrr(ranks: &[Rank]) -> f64 {
    mean(ranks.iter().map(|r| r.reciprocal()), ranks.len())
}

/// NDCG@k with one relevant item: `1 / log2(rank + 1)` when `rank <= k`, else 0, in
/// expectation over ties, averaged.
pub fn ndcg_at(ranks: &[Rank], k: usize) -> f64 {
    mean(ranks.iter().map(|r| r.ndcg(k)), ranks.len())
}

/// Hit ratio at k: the expected share of targets ranked in the top k.
pub fn hr_at(ranks: &[Rank], k: usize) -> f64 {
    mean(ranks.iter().map(|r| r.hit(k)), ranks.len())
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
    /// Examples whose target ties with at least one candidate.
    #[serde(default)]
    pub tied: usize,
    /// MRR under the rule that breaks every tie in the target's favour (`1 / (higher + 1)`),
    /// the rule of results written before ties were counted as expectations: the difference
    /// to `mrr` is what that rule added.
    #[serde(default)]
    pub mrr_ties_first: f64,
}

impl DomainMetrics {
    /// Computes every metric from the ranks of one domain's examples.
    pub fn from_ranks(ranks: &[Rank]) -> Self {
        Self {
            mrr: mrr(ranks),
            ndcg5: ndcg_at(ranks, 5),
            ndcg10: ndcg_at(ranks, 10),
            hr1: hr_at(ranks, 1),
            hr5: hr_at(ranks, 5),
            hr10: hr_at(ranks, 10),
            n: ranks.len(),
            tied: ranks.iter().filter(|r| r.tied > 0).count(),
            mrr_ties_first: mean(ranks.iter().map(|r| 1.0 / r.best() as f64), ranks.len()),
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
    pub fn split(ranks: &[Rank], counts: &[u32]) -> Vec<Self> {
        assert_eq!(ranks.len(), counts.len(), "one training count per rank");
        let mut lower = 0;
        let mut slices = Vec::with_capacity(POPULARITY_BOUNDS.len() + 1);
        for max in POPULARITY_BOUNDS
            .iter()
            .map(|&b| Some(b))
            .chain(std::iter::once(None))
        {
            let inside: Vec<Rank> = ranks
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
    fn rank_counts_higher_and_tied_scores() {
        let r = |higher, tied| Rank { higher, tied };
        assert_eq!(rank(0.5, &[0.1, 0.9, 0.5, 0.7]), r(2, 1));
        assert_eq!(rank(1.0, &[]), r(0, 0));
        assert_eq!(rank(f32::NAN, &[0.1, f32::NAN]), r(1, 1));
        assert_eq!(rank(0.2, &[f32::NAN, 0.1]), r(0, 0));
        // In a row that holds the target, the target does not tie with itself.
        assert_eq!(rank_in_row(&[0.1, 0.5, 0.9, 0.5], 1), r(1, 1));
        assert_eq!(rank_in_row(&[f32::NAN, 0.5], 0), r(1, 0));
    }

    #[test]
    fn ties_count_as_the_expectation_over_a_random_order() {
        // One strictly higher candidate and two tied: positions 2, 3, 4 with probability 1/3.
        let r = Rank { higher: 1, tied: 2 };
        assert_eq!(r.best(), 2);
        assert!((r.reciprocal() - (1.0 / 2.0 + 1.0 / 3.0 + 1.0 / 4.0) / 3.0).abs() < 1e-12);
        assert_eq!(r.hit(1), 0.0);
        assert!((r.hit(2) - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.hit(3) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(r.hit(4), 1.0);
        assert_eq!(r.hit(100), 1.0);
        let ndcg3 = (1.0 / 3f64.log2() + 1.0 / 4f64.log2()) / 3.0;
        assert!((r.ndcg(3) - ndcg3).abs() < 1e-12);
        assert_eq!(r.ndcg(1), 0.0);
        // A target tied with every one of n - 1 candidates is as good as a random order:
        // MRR is the mean of 1/1 .. 1/n, not 1.
        let n = 1000;
        let all_tied = rank(0.0, &vec![0.0; n - 1]);
        let harmonic: f64 = (1..=n).map(|k| 1.0 / k as f64).sum();
        assert!((mrr(&[all_tied]) - harmonic / n as f64).abs() < 1e-12);
        assert!((hr_at(&[all_tied], 10) - 10.0 / n as f64).abs() < 1e-12);
        // Without ties the values are the usual ones.
        assert_eq!(Rank::at(4).reciprocal(), 0.25);
        assert_eq!(Rank::at(4).hit(4), 1.0);
        assert_eq!(Rank::at(5).hit(4), 0.0);
        // The metrics record how many targets tied and what ties-first would have said.
        let m = DomainMetrics::from_ranks(&[all_tied, Rank::at(2)]);
        assert_eq!(m.tied, 1);
        assert!((m.mrr_ties_first - 0.75).abs() < 1e-12);
        assert!(m.mrr < m.mrr_ties_first);
    }

    #[test]
    fn hand_computed_values() {
        let ranks = [1, 2, 4, 11].map(Rank::at);
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
        let ranks = [1, 2, 4, 10, 100, 5].map(Rank::at);
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
