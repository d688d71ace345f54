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

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::mask::AttentionBias;

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

    /// Renumbers positions from the most recent item (0) backwards.
    pub fn count_positions_from_end(&mut self) {
        for (b, &n) in self.lengths.iter().enumerate() {
            let start = b * self.len + (self.len - n);
            for j in 0..n {
                self.positions[start + j] = (n - 1 - j) as i64;
            }
        }
    }

    /// Flat index (`b * len + t`) of the last column of row `b`.
    pub fn last(&self, b: usize) -> usize {
        b * self.len + self.len - 1
    }

    /// Real (not padding) positions of the batch.
    pub fn real_len(&self) -> usize {
        self.lengths.iter().sum()
    }

    /// Flat rows (`b * len + t`) converted to packed rows: the index of each among the real
    /// positions in row-major order (its row in a packed `[real_len, width]` matrix). A row at
    /// padding (a placeholder, as the absent rows of a mixture plan) becomes 0.
    pub fn packed_rows(&self, rows: &[i64]) -> Vec<i64> {
        let mut before = Vec::with_capacity(self.batch + 1);
        let mut sum = 0usize;
        for &n in &self.lengths {
            before.push(sum);
            sum += n;
        }
        rows.iter()
            .map(|&r| {
                let flat = r as usize;
                if flat >= self.pad.len() || self.pad[flat] {
                    return 0;
                }
                let (b, t) = (flat / self.len, flat % self.len);
                (before[b] + t - (self.len - self.lengths[b])) as i64
            })
            .collect()
    }

    /// Moves the plan to `device`.
    pub fn to_tensors(&self, device: &Device) -> SubSequenceBatch {
        let shape = [self.batch, self.len];
        SubSequenceBatch {
            items: Tensor::from_data(TensorData::new(self.items.clone(), shape), device),
            positions: Tensor::from_data(TensorData::new(self.positions.clone(), shape), device),
            bias: AttentionBias::causal(&self.pad, self.batch, self.len, device),
        }
    }

    /// The real positions of the plan, packed, on `device` (what training encodes).
    pub fn packed(&self, device: &Device) -> Packed {
        let real: Vec<usize> = (0..self.pad.len()).filter(|&i| !self.pad[i]).collect();
        let n = real.len();
        let pick = |v: &[i64]| -> Tensor<1, Int> {
            let picked: Vec<i64> = real.iter().map(|&i| v[i]).collect();
            Tensor::from_data(TensorData::new(picked, [n]), device)
        };
        let flat: Vec<i64> = real.iter().map(|&i| i as i64).collect();
        Packed {
            flat: Tensor::from_data(TensorData::new(flat, [n]), device),
            items: pick(&self.items),
            positions: pick(&self.positions),
            len: n,
        }
    }
}

/// The real (not padding) positions of a padded sub-sequence batch, in row-major order: what
/// the training encoders compute their position-wise layers on
/// ([`crate::model::SequenceEncoder::forward_packed`]), so that padding costs no matrix
/// product outside attention.
#[derive(Debug, Clone)]
pub struct Packed {
    /// `[N]` flat index (`b * L + t`) of each real position.
    pub flat: Tensor<1, Int>,
    /// `[N]` global item id at each real position.
    pub items: Tensor<1, Int>,
    /// `[N]` position number at each real position.
    pub positions: Tensor<1, Int>,
    /// `N`, the number of real positions.
    pub len: usize,
}

/// One padded sub-sequence batch on a device.
#[derive(Debug, Clone)]
pub struct SubSequenceBatch {
    /// `[B, L]` global item ids.
    pub items: Tensor<2, Int>,
    /// `[B, L]` positions.
    pub positions: Tensor<2, Int>,
    /// `[B, 1, L, L]` additive attention bias: causal, padding masked out as a key.
    pub bias: AttentionBias,
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

    /// Moves the targets to `device`, their rows as rows of the packed hidden states of
    /// `input`, the padded batch they index ([`PaddedPlan::packed_rows`]); `None` when there
    /// are none.
    pub fn to_tensors(&self, input: &PaddedPlan, device: &Device) -> Option<Targets> {
        if self.is_empty() {
            return None;
        }
        let n = self.rows.len();
        Some(Targets {
            rows: Tensor::from_data(TensorData::new(input.packed_rows(&self.rows), [n]), device),
            local: Tensor::from_data(TensorData::new(self.local.clone(), [n]), device),
            local_ids: self.local.clone(),
        })
    }
}

/// Next-item targets of one domain on a device.
#[derive(Debug, Clone)]
pub struct Targets {
    /// `[P]` rows of the packed hidden states (real positions in row-major order) that predict
    /// the targets.
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
    /// Per target domain, every transition of the merged sequence lined up across the
    /// sub-sequences (cross-domain targets only): what a mixture objective trains.
    pub mixture: Option<[MixturePlan; 2]>,
}

/// The transitions whose next item is in one domain, each with the row of every sub-sequence
/// batch that predicts it (the sub-sequence's last item at or before the transition).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MixturePlan {
    /// The next item of each transition, as an index inside the domain.
    pub local: Vec<i64>,
    /// Per sub-sequence (X, Y, merged), the flat row predicting each transition (0 where the
    /// sub-sequence has none: it is empty so far, or truncated away).
    pub rows: [Vec<i64>; 3],
    /// Per sub-sequence, whether it has a row for each transition.
    pub present: [Vec<bool>; 3],
    /// The sequence (row of the batch) each transition belongs to, in ascending order.
    pub sequence: Vec<u32>,
}

/// Target counts of a whole batch, for normalising the loss of a part of it: a batch split into
/// shards computes, in each shard, sums divided by the whole batch's counts, so that the
/// shards' losses (and gradients) add up to the whole batch's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetCounts {
    /// Targets per sub-sequence and domain (`cells[s][d]`).
    pub cells: [[usize; 2]; 3],
    /// Lined-up transitions per target domain (mixture objective).
    pub mixture: [usize; 2],
    /// Sequences with at least one transition per target domain (mixture objective).
    pub mixture_sequences: [usize; 2],
}

impl TargetCounts {
    /// The counts of the plans together.
    pub fn of(plans: &[TrainPlan]) -> Self {
        let mut c = Self::default();
        for p in plans {
            for (cells, targets) in c.cells.iter_mut().zip(&p.targets) {
                for (n, t) in cells.iter_mut().zip(targets) {
                    *n += t.len();
                }
            }
            if let Some(m) = &p.mixture {
                for (d, plan) in m.iter().enumerate() {
                    c.mixture[d] += plan.local.len();
                    c.mixture_sequences[d] += plan.sequences();
                }
            }
        }
        c
    }

    /// Whether there is nothing to predict.
    pub fn is_empty(&self) -> bool {
        self.cells.iter().flatten().all(|&n| n == 0) && self.mixture.iter().all(|&n| n == 0)
    }
}

/// A [`MixturePlan`] on a device.
#[derive(Debug, Clone)]
pub struct MixtureTargets {
    /// `[P]` target indices inside the domain.
    pub local: Tensor<1, Int>,
    /// Per sub-sequence, `[P]` rows of the packed hidden states (0 where absent).
    pub rows: [Tensor<1, Int>; 3],
    /// Per sub-sequence, `[P, 1]`: 0 where present, a large negative log-weight where not.
    pub absent: [Tensor<2>; 3],
    /// Per sub-sequence, `[P, 1]`: 1 where present, 0 where not.
    pub present: [Tensor<2>; 3],
    /// Whether each sub-sequence has any row at all.
    pub any: [bool; 3],
    /// `[P, 1]`: `1 / n` for a transition of a sequence with `n` transitions here
    /// ([`MixturePlan::sequence_weights`]).
    pub sequence_weights: Tensor<2>,
    /// The number of sequences with transitions here.
    pub sequences: usize,
    /// `P`.
    pub len: usize,
}

impl MixturePlan {
    /// The number of sequences with at least one transition here.
    pub fn sequences(&self) -> usize {
        // `sequence` is ascending: one run per sequence.
        self.sequence.chunk_by(|a, b| a == b).count()
    }

    /// Per transition, `1 / n` where `n` is the number of transitions of its sequence here:
    /// the weights that make a sum over transitions a sum of per-sequence means.
    pub fn sequence_weights(&self) -> Vec<f32> {
        let mut weights = Vec::with_capacity(self.sequence.len());
        for run in self.sequence.chunk_by(|a, b| a == b) {
            weights.extend(std::iter::repeat_n(1.0 / run.len() as f32, run.len()));
        }
        weights
    }

    /// Moves the plan to `device`, its rows as rows of the packed hidden states of `inputs`
    /// (the three padded batches they index); `None` without transitions.
    pub fn to_tensors(&self, inputs: &[PaddedPlan; 3], device: &Device) -> Option<MixtureTargets> {
        let n = self.local.len();
        if n == 0 {
            return None;
        }
        let ints = |v: Vec<i64>| Tensor::<1, Int>::from_data(TensorData::new(v, [n]), device);
        Some(MixtureTargets {
            local: ints(self.local.clone()),
            rows: std::array::from_fn(|s| ints(inputs[s].packed_rows(&self.rows[s]))),
            absent: std::array::from_fn(|s| {
                let v: Vec<f32> = self.present[s]
                    .iter()
                    .map(|&p| if p { 0.0 } else { ABSENT })
                    .collect();
                Tensor::<2>::from_data(TensorData::new(v, [n, 1]), device)
            }),
            present: std::array::from_fn(|s| {
                let v: Vec<f32> = self.present[s]
                    .iter()
                    .map(|&p| f32::from(u8::from(p)))
                    .collect();
                Tensor::<2>::from_data(TensorData::new(v, [n, 1]), device)
            }),
            any: std::array::from_fn(|s| self.present[s].iter().any(|&p| p)),
            sequence_weights: Tensor::<2>::from_data(
                TensorData::new(self.sequence_weights(), [n, 1]),
                device,
            ),
            sequences: self.sequences(),
            len: n,
        })
    }
}

/// Log-weight of a sub-sequence that has no row for a transition: `exp` of it is 0 in `f32`.
pub const ABSENT: f32 = -1.0e30;

/// A training batch on a device.
#[derive(Debug, Clone)]
pub struct TrainBatch {
    /// Inputs of S^X, S^Y, S^{X+Y}.
    pub inputs: [SubSequenceBatch; 3],
    /// The real positions of each input, packed (what the training encoders compute on).
    pub packed: [Packed; 3],
    /// `targets[sub-sequence][domain]`, `None` when the batch has no such target.
    pub targets: [[Option<Targets>; 2]; 3],
    /// Per target domain, the lined-up transitions (cross-domain targets only).
    pub mixture: Option<[Option<MixtureTargets>; 2]>,
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
    positions_from_end: bool,
    mixture_subs: [bool; 3],
}

impl SequenceBatcher {
    /// A batcher for `dataset`'s domains, keeping at most `max_len` items per sub-sequence.
    pub fn new(dataset: &Dataset, max_len: usize) -> Self {
        Self {
            domains: dataset.domains().clone(),
            max_len: max_len.max(1),
            cross_domain_targets: false,
            positions_from_end: false,
            mixture_subs: [true; 3],
        }
    }

    /// The sub-sequences (X, Y, merged) a model reads: a transition enters the mixture plan
    /// only when one of them predicts it. Default: all three.
    pub fn with_sub_sequences(mut self, used: [bool; 3]) -> Self {
        self.mixture_subs = used;
        self
    }

    /// With `true`, positions count back from the most recent item (0 = the last item), so the
    /// most recent items share position embeddings whatever the length. Default `false`
    /// (positions count from the first item, as in the paper's SASRec-style encoders).
    pub fn with_positions_from_end(mut self, on: bool) -> Self {
        self.positions_from_end = on;
        self
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

    /// Pads `rows` with this batcher's length and position numbering.
    fn padded(&self, rows: &[&[ItemId]]) -> PaddedPlan {
        let mut plan = PaddedPlan::new(rows, self.max_len);
        if self.positions_from_end {
            plan.count_positions_from_end();
        }
        plan
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
            let plan = self.padded(&rows);
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
        TrainPlan {
            inputs,
            targets,
            mixture: None,
        }
    }

    /// [`Self::plan_train`] with cross-domain targets for S^X and S^Y.
    fn plan_train_cross(&self, sequences: &[&Sequence]) -> TrainPlan {
        let mut inputs = Vec::with_capacity(3);
        let mut targets: [[TargetPlan; 2]; 3] = Default::default();
        // row_of[s][b][t]: the flat row of sub-sequence s predicting transition t of sequence b.
        let mut row_of: [Vec<Vec<Option<i64>>>; 3] = Default::default();
        for (s, targets_s) in targets.iter_mut().enumerate() {
            // Per sequence: the sub-sequence's items among all but the last merged item, and for
            // each merged transition t -> t+1 the index (in that list) of its last item <= t.
            let mut rows_items: Vec<Vec<ItemId>> = Vec::with_capacity(sequences.len());
            let mut links: Vec<Vec<Option<usize>>> = Vec::with_capacity(sequences.len());
            for seq in sequences {
                let n = seq.items.len();
                let mut items = Vec::new();
                let mut link = Vec::with_capacity(n.saturating_sub(1));
                for t in 0..n.saturating_sub(1) {
                    let item = seq.items[t];
                    if s == 2 || self.domain_of(item) == s {
                        items.push(item);
                    }
                    link.push(items.len().checked_sub(1));
                }
                rows_items.push(items);
                links.push(link);
            }
            let rows: Vec<&[ItemId]> = rows_items.iter().map(Vec::as_slice).collect();
            let plan = self.padded(&rows);
            for (b, link) in links.iter().enumerate() {
                let (total, kept) = (rows_items[b].len(), plan.lengths[b]);
                let mut row_b = Vec::with_capacity(link.len());
                for (t, idx) in link.iter().enumerate() {
                    // Items truncated away have no row.
                    let row = idx
                        .and_then(|idx| (idx + kept).checked_sub(total))
                        .map(|j| (b * plan.len + (plan.len - kept) + j) as i64);
                    row_b.push(row);
                    if let Some(row) = row {
                        let next = sequences[b].items[t + 1];
                        let d = self.domain_of(next);
                        targets_s[d].rows.push(row);
                        targets_s[d].local.push(self.domains[d].local(next) as i64);
                    }
                }
                row_of[s].push(row_b);
            }
            inputs.push(plan);
        }
        let inputs: [PaddedPlan; 3] = inputs.try_into().expect("three sub-sequences");
        let mut mixture: [MixturePlan; 2] = Default::default();
        for (b, seq) in sequences.iter().enumerate() {
            for (t, &next) in seq.items.iter().enumerate().skip(1) {
                let rows = [0, 1, 2].map(|s| row_of[s][b][t - 1]);
                let predicted = rows.iter().zip(self.mixture_subs);
                if !predicted.clone().any(|(r, used)| used && r.is_some()) {
                    continue;
                }
                let d = self.domain_of(next);
                let m = &mut mixture[d];
                m.local.push(self.domains[d].local(next) as i64);
                m.sequence.push(b as u32);
                for ((row, present), r) in m.rows.iter_mut().zip(&mut m.present).zip(rows) {
                    row.push(r.unwrap_or(0));
                    present.push(r.is_some());
                }
            }
        }
        TrainPlan {
            inputs,
            targets,
            mixture: Some(mixture),
        }
    }

    /// Plans an evaluation batch from the examples' histories (targets stay with the caller).
    pub fn plan_eval(&self, examples: &[&Example]) -> EvalPlan {
        let histories: Vec<&[ItemId]> = examples.iter().map(|e| e.history.as_slice()).collect();
        self.plan_histories(&histories)
    }

    /// The sub-sequence `s` of each history (S^X: its X items; S^Y: its Y items; S^{X+Y}:
    /// the history), unpadded.
    pub fn sub_sequence<'a>(
        &self,
        s: SubSequence,
        history: &'a [ItemId],
    ) -> std::borrow::Cow<'a, [ItemId]> {
        match s {
            SubSequence::Merged => std::borrow::Cow::Borrowed(history),
            SubSequence::X | SubSequence::Y => {
                let [xs, ys] = split_by_domain(history, &self.domains[0]);
                std::borrow::Cow::Owned(if s == SubSequence::X { xs } else { ys })
            }
        }
    }

    /// Pads the sub-sequence `s` of each history alone, as [`Self::plan_histories`] pads it:
    /// for callers that batch each sub-sequence by its own lengths.
    pub fn plan_sub_sequence(&self, s: SubSequence, histories: &[&[ItemId]]) -> PaddedPlan {
        let subs: Vec<_> = histories.iter().map(|h| self.sub_sequence(s, h)).collect();
        let rows: Vec<&[ItemId]> = subs.iter().map(|c| c.as_ref()).collect();
        self.padded(&rows)
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
            inputs: [self.padded(&xs), self.padded(&ys), self.padded(histories)],
        }
    }
}

impl TrainPlan {
    /// Moves the plan to `device`.
    pub fn to_tensors(&self, device: &Device) -> TrainBatch {
        TrainBatch {
            inputs: self.inputs.clone().map(|p| p.to_tensors(device)),
            packed: std::array::from_fn(|s| self.inputs[s].packed(device)),
            targets: std::array::from_fn(|s| {
                std::array::from_fn(|d| self.targets[s][d].to_tensors(&self.inputs[s], device))
            }),
            mixture: self.mixture.as_ref().map(|m| {
                [
                    m[0].to_tensors(&self.inputs, device),
                    m[1].to_tensors(&self.inputs, device),
                ]
            }),
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
    fn positions_can_count_from_the_end() {
        let mut p = PaddedPlan::new(&[&[5, 6, 7], &[9]], 10);
        p.count_positions_from_end();
        assert_eq!(p.positions, vec![2, 1, 0, 0, 0, 0]);
        assert_eq!(p.items, vec![5, 6, 7, 0, 0, 9]);
    }

    #[test]
    fn mixture_plan_lines_up_every_transition() {
        let d = dataset();
        let batcher = SequenceBatcher::new(&d, 10).with_cross_domain_targets(true);
        // Merged: 0(X) 4(Y) 5(Y) 1(X) 2(X).
        let seq = Sequence {
            user: 0,
            items: vec![0, 4, 5, 1, 2],
        };
        let plan = batcher.plan_train(&[&seq]);
        let [mx, my] = plan.mixture.clone().unwrap();
        // X targets: 5->1 (t = 2) and 1->2 (t = 3), local ids 1 and 2.
        assert_eq!(mx.local, vec![1, 2]);
        assert_eq!(mx.rows[0], vec![0, 1]); // S^X rows: item 0 (row 0), item 1 (row 1)
        assert_eq!(mx.rows[1], vec![1, 1]); // S^Y: item 5 (row 1) both times
        assert_eq!(mx.rows[2], vec![2, 3]); // merged: positions 2 and 3
        assert_eq!(mx.present, [vec![true; 2], vec![true; 2], vec![true; 2]]);
        // Y targets: 0->4 (t = 0, S^Y still empty) and 4->5 (t = 1).
        assert_eq!(my.local, vec![0, 1]);
        assert_eq!(my.present[1], vec![false, true]);
        assert_eq!(my.rows[1], vec![0, 0]);
        assert_eq!(my.rows[0], vec![0, 0]);
        assert_eq!(my.rows[2], vec![0, 1]);
        // Without the merged sequence, a transition nobody predicts is left out.
        let only_y = SequenceBatcher::new(&d, 10)
            .with_cross_domain_targets(true)
            .with_sub_sequences([false, true, false]);
        let [_, my] = only_y.plan_train(&[&seq]).mixture.unwrap();
        assert_eq!(my.local, vec![1]);
        // Two sequences: each transition names its own.
        let other = Sequence {
            user: 1,
            items: vec![4, 1, 2],
        };
        let [mx, my] = batcher.plan_train(&[&seq, &other]).mixture.unwrap();
        assert_eq!(mx.sequence, vec![0, 0, 1, 1]);
        assert_eq!(my.sequence, vec![0, 0]);
        assert_eq!((mx.sequences(), my.sequences()), (2, 1));
        // The plain (non-cross) plan has no mixture.
        assert!(
            SequenceBatcher::new(&d, 10)
                .plan_train(&[&seq])
                .mixture
                .is_none()
        );
    }

    #[test]
    fn truncation_keeps_the_most_recent_items() {
        let p = PaddedPlan::new(&[&[1, 2, 3, 4, 5]], 2);
        assert_eq!(p.items, vec![4, 5]);
        assert_eq!(p.positions, vec![0, 1]);
    }

    #[test]
    fn packed_rows_count_real_positions_in_row_major_order() {
        // Rows of 2, 1, 0 and 3 items, padded on the left to 3.
        let rows: [&[ItemId]; 4] = [&[1, 2], &[3], &[], &[4, 5, 6]];
        let plan = PaddedPlan::new(&rows, 5);
        assert_eq!(plan.real_len(), 6);
        // Real flat positions: 1, 2 | 5 | - | 9, 10, 11.
        assert_eq!(
            plan.packed_rows(&[1, 2, 5, 9, 10, 11]),
            vec![0, 1, 2, 3, 4, 5]
        );
        // Padding (a placeholder row) maps to 0.
        assert_eq!(plan.packed_rows(&[0, 6, 11]), vec![0, 0, 5]);
        let device = crate::test_device();
        let packed = plan.packed(&device);
        let ints = |t: Tensor<1, Int>| t.into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
        assert_eq!(packed.len, 6);
        assert_eq!(ints(packed.flat), vec![1, 2, 5, 9, 10, 11]);
        assert_eq!(ints(packed.items), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(ints(packed.positions), vec![0, 1, 0, 0, 1, 2]);
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
