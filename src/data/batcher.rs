//! Batches: the three sub-sequences of the paper (S^X, S^Y and the merged S^{X+Y}) of each
//! example, left-padded, with padding masks, positions and next-item targets.
//!
//! The work is done in two steps so that the layout can be tested without tensors: `*Plan`
//! structs hold plain vectors, and `to_tensors` moves them to a device.
//!
//! Layout of one sub-sequence batch `[B, L]` (`L` = the longest sub-sequence of the batch, at
//! most `max_len`, at least 1): row `b` holds the last `min(len_b, max_len)` items right-aligned;
//! padding sits on the left, is marked `true` in the padding mask and holds item 0 (masked out of
//! attention, never used as a target). Positions count from 0 at the first real item of the row,
//! so padding never changes a real item's position.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::dataset::{Dataset, Domain, DomainId, Example, ItemId, Sequence};

/// One padded sub-sequence batch, in plain vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaddedPlan {
    /// Rows.
    pub batch: usize,
    /// Columns.
    pub len: usize,
    /// `[batch * len]` global item ids (0 at padding).
    pub items: Vec<i64>,
    /// `[batch * len]` positions (0 at padding).
    pub positions: Vec<i64>,
    /// `[batch * len]` padding mask (`true` = padding).
    pub pad: Vec<bool>,
    /// Real items per row.
    pub lengths: Vec<usize>,
}

impl PaddedPlan {
    /// Left-pads `rows`, keeping the last `max_len` items of each.
    pub fn new(rows: &[&[ItemId]], max_len: usize) -> Self {
        let batch = rows.len();
        let lengths: Vec<usize> = rows.iter().map(|r| r.len().min(max_len)).collect();
        let len = lengths.iter().copied().max().unwrap_or(0).max(1);
        let mut items = vec![0i64; batch * len];
        let mut positions = vec![0i64; batch * len];
        let mut pad = vec![true; batch * len];
        for (b, row) in rows.iter().enumerate() {
            let n = lengths[b];
            let kept = &row[row.len() - n..];
            let offset = b * len + (len - n);
            for (j, &item) in kept.iter().enumerate() {
                items[offset + j] = item as i64;
                positions[offset + j] = j as i64;
                pad[offset + j] = false;
            }
        }
        Self {
            batch,
            len,
            items,
            positions,
            pad,
            lengths,
        }
    }

    /// Flat index (`b * len + t`) of the last column of row `b`.
    pub fn last(&self, b: usize) -> usize {
        b * self.len + self.len - 1
    }

    /// Moves the plan to `device`.
    pub fn to_tensors(&self, device: &Device) -> SubSequenceBatch {
        let shape = [self.batch, self.len];
        SubSequenceBatch {
            items: Tensor::from_data(TensorData::new(self.items.clone(), shape), device),
            positions: Tensor::from_data(TensorData::new(self.positions.clone(), shape), device),
            pad_mask: Tensor::from_data(TensorData::new(self.pad.clone(), shape), device),
        }
    }
}

/// One padded sub-sequence batch on a device.
#[derive(Debug, Clone)]
pub struct SubSequenceBatch {
    /// `[B, L]` global item ids.
    pub items: Tensor<2, Int>,
    /// `[B, L]` positions.
    pub positions: Tensor<2, Int>,
    /// `[B, L]` padding mask (`true` = padding).
    pub pad_mask: Tensor<2, Bool>,
}

/// Next-item targets of one domain inside one sub-sequence batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetPlan {
    /// Flat indices (`b * L + t`) of the positions that predict an item of the domain.
    pub rows: Vec<i64>,
    /// The item that follows each of those positions, as an index inside the domain.
    pub local: Vec<i64>,
}

impl TargetPlan {
    /// Number of targets.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Moves the targets to `device`; `None` when there are none.
    pub fn to_tensors(&self, device: &Device) -> Option<Targets> {
        if self.is_empty() {
            return None;
        }
        let n = self.rows.len();
        Some(Targets {
            rows: Tensor::from_data(TensorData::new(self.rows.clone(), [n]), device),
            local: Tensor::from_data(TensorData::new(self.local.clone(), [n]), device),
            local_ids: self.local.clone(),
        })
    }
}

/// Next-item targets of one domain on a device.
#[derive(Debug, Clone)]
pub struct Targets {
    /// `[P]` flat positions.
    pub rows: Tensor<1, Int>,
    /// `[P]` target indices inside the domain.
    pub local: Tensor<1, Int>,
    /// The same indices on the host (used to find accidental hits among sampled negatives).
    pub local_ids: Vec<i64>,
}

/// Which sub-sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubSequence {
    /// S^X: the domain-X items of the sequence.
    X,
    /// S^Y: the domain-Y items of the sequence.
    Y,
    /// S^{X+Y}: the whole merged sequence.
    Merged,
}

impl SubSequence {
    /// All three, in the paper's order.
    pub const ALL: [SubSequence; 3] = [SubSequence::X, SubSequence::Y, SubSequence::Merged];

    /// The single-domain sub-sequence of `d`.
    pub fn of_domain(d: DomainId) -> Self {
        match d {
            DomainId::X => SubSequence::X,
            DomainId::Y => SubSequence::Y,
        }
    }

    /// 0, 1, 2 for X, Y, merged.
    pub fn index(self) -> usize {
        match self {
            SubSequence::X => 0,
            SubSequence::Y => 1,
            SubSequence::Merged => 2,
        }
    }
}

/// Splits a merged sequence into `[S^X, S^Y]`.
pub fn split_by_domain(items: &[ItemId], x: &Domain) -> [Vec<ItemId>; 2] {
    let (xs, ys): (Vec<ItemId>, Vec<ItemId>) = items.iter().partition(|&&i| x.contains(i));
    [xs, ys]
}

/// A training batch in plain vectors: the inputs of the three sub-sequences and, for each, the
/// next-item targets per domain (`targets[s][d]`; S^X has only X targets, S^Y only Y targets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainPlan {
    /// Inputs of S^X, S^Y, S^{X+Y}.
    pub inputs: [PaddedPlan; 3],
    /// `targets[sub-sequence][domain]`.
    pub targets: [[TargetPlan; 2]; 3],
}

/// A training batch on a device.
#[derive(Debug, Clone)]
pub struct TrainBatch {
    /// Inputs of S^X, S^Y, S^{X+Y}.
    pub inputs: [SubSequenceBatch; 3],
    /// `targets[sub-sequence][domain]`, `None` when the batch has no such target.
    pub targets: [[Option<Targets>; 2]; 3],
    /// Number of sequences.
    pub sequences: usize,
}

/// An evaluation batch in plain vectors: the histories' three sub-sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalPlan {
    /// Inputs of S^X, S^Y, S^{X+Y}.
    pub inputs: [PaddedPlan; 3],
}

impl EvalPlan {
    /// Whether row `b` of sub-sequence `s` holds at least one item.
    pub fn non_empty(&self, s: SubSequence, b: usize) -> bool {
        self.inputs[s.index()].lengths[b] > 0
    }
}

/// Builds batches from sequences and examples.
#[derive(Debug, Clone)]
pub struct SequenceBatcher {
    domains: [Domain; 2],
    max_len: usize,
    cross_domain_targets: bool,
}

impl SequenceBatcher {
    /// A batcher for `dataset`'s domains, keeping at most `max_len` items per sub-sequence.
    pub fn new(dataset: &Dataset, max_len: usize) -> Self {
        Self {
            domains: dataset.domains().clone(),
            max_len: max_len.max(1),
            cross_domain_targets: false,
        }
    }

    /// With `true`, S^X and S^Y also get the other domain's next items as targets: every item
    /// of the merged sequence is predicted by each single-domain sub-sequence from its last item
    /// at or before the preceding step (so the S^Y encoder learns P^Y(x | S) of Eq. 11 too).
    pub fn with_cross_domain_targets(mut self, on: bool) -> Self {
        self.cross_domain_targets = on;
        self
    }

    /// The maximum sub-sequence length.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    fn domain_of(&self, item: ItemId) -> usize {
        usize::from(!self.domains[0].contains(item))
    }

    /// Plans a training batch: each sub-sequence predicts, at every position, the item that
    /// follows it in that sub-sequence (S^X: the next X item; S^Y: the next Y item; S^{X+Y}: the
    /// next item, within its own domain). Only the last `max_len` transitions are kept.
    pub fn plan_train(&self, sequences: &[&Sequence]) -> TrainPlan {
        if self.cross_domain_targets {
            return self.plan_train_cross(sequences);
        }
        let subs: Vec<[Vec<ItemId>; 3]> = sequences
            .iter()
            .map(|s| {
                let [xs, ys] = split_by_domain(&s.items, &self.domains[0]);
                [xs, ys, s.items.clone()]
            })
            .collect();
        let mut inputs = Vec::with_capacity(3);
        let mut targets: [[TargetPlan; 2]; 3] = Default::default();
        for s in 0..3 {
            // Inputs: all but the last item; targets: all but the first.
            let rows: Vec<&[ItemId]> = subs
                .iter()
                .map(|sub| &sub[s][..sub[s].len().saturating_sub(1)])
                .collect();
            let plan = PaddedPlan::new(&rows, self.max_len);
            for (b, sub) in subs.iter().enumerate() {
                let n = plan.lengths[b];
                let next = &sub[s][sub[s].len() - n..];
                for (j, &item) in next.iter().enumerate() {
                    let d = self.domain_of(item);
                    let row = b * plan.len + (plan.len - n) + j;
                    targets[s][d].rows.push(row as i64);
                    targets[s][d].local.push(self.domains[d].local(item) as i64);
                }
            }
            inputs.push(plan);
        }
        let inputs: [PaddedPlan; 3] = inputs.try_into().expect("three sub-sequences");
        TrainPlan { inputs, targets }
    }

    /// [`Self::plan_train`] with cross-domain targets for S^X and S^Y.
    fn plan_train_cross(&self, sequences: &[&Sequence]) -> TrainPlan {
        let mut inputs = Vec::with_capacity(3);
        let mut targets: [[TargetPlan; 2]; 3] = Default::default();
        for (s, targets_s) in targets.iter_mut().enumerate() {
            // Per sequence: the sub-sequence's items among all but the last merged item, and for
            // each merged transition t -> t+1 the index (in that list) of its last item <= t.
            let mut rows_items: Vec<Vec<ItemId>> = Vec::with_capacity(sequences.len());
            let mut links: Vec<Vec<(usize, ItemId)>> = Vec::with_capacity(sequences.len());
            for seq in sequences {
                let n = seq.items.len();
                let mut items = Vec::new();
                let mut link = Vec::new();
                for t in 0..n.saturating_sub(1) {
                    let item = seq.items[t];
                    if s == 2 || self.domain_of(item) == s {
                        items.push(item);
                    }
                    if let Some(last) = items.len().checked_sub(1) {
                        link.push((last, seq.items[t + 1]));
                    }
                }
                rows_items.push(items);
                links.push(link);
            }
            let rows: Vec<&[ItemId]> = rows_items.iter().map(Vec::as_slice).collect();
            let plan = PaddedPlan::new(&rows, self.max_len);
            for (b, link) in links.iter().enumerate() {
                let (total, kept) = (rows_items[b].len(), plan.lengths[b]);
                for &(idx, next) in link {
                    // Items truncated away have no row.
                    let Some(j) = (idx + kept).checked_sub(total) else {
                        continue;
                    };
                    let d = self.domain_of(next);
                    let row = b * plan.len + (plan.len - kept) + j;
                    targets_s[d].rows.push(row as i64);
                    targets_s[d].local.push(self.domains[d].local(next) as i64);
                }
            }
            inputs.push(plan);
        }
        let inputs: [PaddedPlan; 3] = inputs.try_into().expect("three sub-sequences");
        TrainPlan { inputs, targets }
    }

    /// Plans an evaluation batch from the examples' histories (targets stay with the caller).
    pub fn plan_eval(&self, examples: &[&Example]) -> EvalPlan {
        let histories: Vec<&[ItemId]> = examples.iter().map(|e| e.history.as_slice()).collect();
        self.plan_histories(&histories)
    }

    /// Plans an evaluation batch from bare histories.
    pub fn plan_histories(&self, histories: &[&[ItemId]]) -> EvalPlan {
        let split: Vec<[Vec<ItemId>; 2]> = histories
            .iter()
            .map(|h| split_by_domain(h, &self.domains[0]))
            .collect();
        let xs: Vec<&[ItemId]> = split.iter().map(|s| s[0].as_slice()).collect();
        let ys: Vec<&[ItemId]> = split.iter().map(|s| s[1].as_slice()).collect();
        EvalPlan {
            inputs: [
                PaddedPlan::new(&xs, self.max_len),
                PaddedPlan::new(&ys, self.max_len),
                PaddedPlan::new(histories, self.max_len),
            ],
        }
    }
}

impl TrainPlan {
    /// Moves the plan to `device`.
    pub fn to_tensors(&self, device: &Device) -> TrainBatch {
        TrainBatch {
            inputs: self.inputs.clone().map(|p| p.to_tensors(device)),
            targets: self
                .targets
                .clone()
                .map(|per_domain| per_domain.map(|t| t.to_tensors(device))),
            sequences: self.inputs[0].batch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::{Item, TrainingData};

    fn dataset() -> Dataset {
        // X = 0..4, Y = 4..7.
        Dataset::new(
            "t",
            [
                Domain {
                    name: "X".into(),
                    start: 0,
                    len: 4,
                },
                Domain {
                    name: "Y".into(),
                    start: 4,
                    len: 3,
                },
            ],
            vec![Item::default(); 7],
            TrainingData::Present(vec![]),
            vec![],
            vec![],
        )
        .unwrap()
    }

    #[test]
    fn left_padding_and_positions() {
        let p = PaddedPlan::new(&[&[5, 6, 7], &[9]], 10);
        assert_eq!((p.batch, p.len), (2, 3));
        assert_eq!(p.items, vec![5, 6, 7, 0, 0, 9]);
        assert_eq!(p.positions, vec![0, 1, 2, 0, 0, 0]);
        assert_eq!(p.pad, vec![false, false, false, true, true, false]);
        assert_eq!(p.lengths, vec![3, 1]);
        assert_eq!(p.last(1), 5);
    }

    #[test]
    fn truncation_keeps_the_most_recent_items() {
        let p = PaddedPlan::new(&[&[1, 2, 3, 4, 5]], 2);
        assert_eq!(p.items, vec![4, 5]);
        assert_eq!(p.positions, vec![0, 1]);
    }

    #[test]
    fn all_empty_rows_still_have_one_column() {
        let p = PaddedPlan::new(&[&[], &[]], 5);
        assert_eq!(p.len, 1);
        assert_eq!(p.pad, vec![true, true]);
    }

    #[test]
    fn train_plan_targets_follow_each_sub_sequence() {
        let d = dataset();
        let batcher = SequenceBatcher::new(&d, 10);
        // Merged: 0(X) 4(Y) 1(X) 5(Y) 2(X).
        let seq = Sequence {
            user: 0,
            items: vec![0, 4, 1, 5, 2],
        };
        let plan = batcher.plan_train(&[&seq]);
        // S^X = [0, 1, 2]: inputs [0, 1], targets 1, 2 (local ids 1, 2).
        assert_eq!(plan.inputs[0].items, vec![0, 1]);
        assert_eq!(plan.targets[0][0].local, vec![1, 2]);
        assert_eq!(plan.targets[0][0].rows, vec![0, 1]);
        assert!(plan.targets[0][1].is_empty());
        // S^Y = [4, 5]: input [4], target 5 (local 1).
        assert_eq!(plan.inputs[1].items, vec![4]);
        assert_eq!(plan.targets[1][1].local, vec![1]);
        assert!(plan.targets[1][0].is_empty());
        // Merged inputs [0, 4, 1, 5], targets 4(Y) 1(X) 5(Y) 2(X).
        assert_eq!(plan.inputs[2].items, vec![0, 4, 1, 5]);
        assert_eq!(plan.targets[2][0].rows, vec![1, 3]);
        assert_eq!(plan.targets[2][0].local, vec![1, 2]);
        assert_eq!(plan.targets[2][1].rows, vec![0, 2]);
        assert_eq!(plan.targets[2][1].local, vec![0, 1]);
    }

    #[test]
    fn train_plan_rows_account_for_padding_and_truncation() {
        let d = dataset();
        let batcher = SequenceBatcher::new(&d, 2);
        let long = Sequence {
            user: 0,
            items: vec![0, 1, 2, 3],
        };
        let short = Sequence {
            user: 1,
            items: vec![4, 0],
        };
        let plan = batcher.plan_train(&[&long, &short]);
        // Merged: long keeps inputs [1, 2] -> targets 2, 3; short input [4] -> target 0.
        let m = &plan.inputs[2];
        assert_eq!(m.items, vec![1, 2, 0, 4]);
        assert_eq!(plan.targets[2][0].rows, vec![0, 1, 3]);
        assert_eq!(plan.targets[2][0].local, vec![2, 3, 0]);
        // S^Y of both: long has none, short has [4] alone -> no transition.
        assert!(plan.targets[1][1].is_empty());
        assert_eq!(plan.inputs[1].lengths, vec![0, 0]);
    }

    #[test]
    fn cross_domain_targets_cover_every_transition() {
        let d = dataset();
        let batcher = SequenceBatcher::new(&d, 10).with_cross_domain_targets(true);
        // Merged: 0(X) 4(Y) 5(Y) 1(X) 2(X).
        let seq = Sequence {
            user: 0,
            items: vec![0, 4, 5, 1, 2],
        };
        let plan = batcher.plan_train(&[&seq]);
        // S^X inputs: X items among the first four merged items: [0, 1].
        assert_eq!(plan.inputs[0].items, vec![0, 1]);
        // Transitions 0->4, 4->5, 5->1 are predicted from S^X row 0; 1->2 from row 1.
        assert_eq!(plan.targets[0][1].rows, vec![0, 0]);
        assert_eq!(plan.targets[0][1].local, vec![0, 1]);
        assert_eq!(plan.targets[0][0].rows, vec![0, 1]);
        assert_eq!(plan.targets[0][0].local, vec![1, 2]);
        // S^Y inputs [4, 5]: 4->5 from row 0, 5->1 and 1->2 from row 1; 0->4 has no Y item yet.
        assert_eq!(plan.inputs[1].items, vec![4, 5]);
        assert_eq!(plan.targets[1][1].rows, vec![0]);
        assert_eq!(plan.targets[1][0].rows, vec![1, 1]);
        assert_eq!(plan.targets[1][0].local, vec![1, 2]);
        // The merged sequence is the same as without cross targets.
        let plain = SequenceBatcher::new(&d, 10).plan_train(&[&seq]);
        assert_eq!(plan.inputs[2], plain.inputs[2]);
        assert_eq!(plan.targets[2], plain.targets[2]);
        // Same-domain targets of S^X match the plain plan's.
        assert_eq!(plan.targets[0][0].local, plain.targets[0][0].local);
    }

    #[test]
    fn cross_domain_targets_respect_truncation() {
        let d = dataset();
        let batcher = SequenceBatcher::new(&d, 1).with_cross_domain_targets(true);
        let seq = Sequence {
            user: 0,
            items: vec![0, 1, 4],
        };
        let plan = batcher.plan_train(&[&seq]);
        // S^X keeps only [1]: the transition 0->1 came from the dropped row 0.
        assert_eq!(plan.inputs[0].items, vec![1]);
        assert_eq!(plan.targets[0][0].rows, Vec::<i64>::new());
        assert_eq!(plan.targets[0][1].rows, vec![0]);
    }

    #[test]
    fn eval_plan_splits_histories() {
        let d = dataset();
        let batcher = SequenceBatcher::new(&d, 10);
        let e = Example {
            user: 0,
            history: vec![4, 0, 5],
            target: 1,
        };
        let plan = batcher.plan_eval(&[&e]);
        assert_eq!(plan.inputs[0].items, vec![0]);
        assert_eq!(plan.inputs[1].items, vec![4, 5]);
        assert_eq!(plan.inputs[2].items, vec![4, 0, 5]);
        assert!(plan.non_empty(SubSequence::X, 0));
        let empty = Example {
            user: 0,
            history: vec![4],
            target: 1,
        };
        let plan = batcher.plan_eval(&[&empty]);
        assert!(!plan.non_empty(SubSequence::X, 0));
        assert!(plan.non_empty(SubSequence::Y, 0));
    }
}
