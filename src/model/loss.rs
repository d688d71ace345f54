//! The training loss of Eq. 9-10: the negative log-likelihood of the fused next-item
//! probability (Eq. 8) at every trained position, per sub-sequence and target domain, combined
//! by the [`super::DomainLoss`] block (Eq. 10), or, under the mixture objective, the Eq. 11 score of
//! the target itself.
//!
//! The computation is arranged for few, large tensor operations: for each target domain and
//! modality, the hidden states of every sub-sequence that predicts that domain are gathered into
//! one matrix, normalised once, and scored against the target domain's table (or the target rows
//! and the step's shared negatives) in one matrix product; per-sub-sequence sums are slices of
//! the result.

use burn::tensor::{Int, Tensor};

use super::config::Modality;
use super::fusion::log_sum_exp;
use super::items::ItemFeatures;
use super::llm_emf::{LlmEmf, l2_normalise};
use crate::data::DomainId;
use crate::data::batcher::{MixtureTargets, PaddedPlan, SubSequence, TargetCounts, TrainBatch};

/// Shared negatives of one training step for one domain (sampled softmax).
#[derive(Debug, Clone)]
pub struct DomainNegatives {
    /// `[K]` negative indices inside the domain.
    pub ids: Tensor<1, Int>,
    /// `[n_D]` log expected count `log(K * q(i))` of every item of the domain under the sampler.
    pub log_q: Tensor<1>,
}

/// Value given to the logit of a sampled negative equal to the target (an accidental hit).
const ACCIDENTAL_HIT: f32 = -1.0e9;

/// The encoders' outputs for a training batch ([`LlmEmf::encode_train`]).
#[derive(Debug, Clone)]
pub struct TrainHidden {
    /// `[N, width]` per sub-sequence (X, Y, merged) and used modality (id, image, text
    /// order), the real positions of the sub-sequence's batch in row-major order (the rows the
    /// targets index); empty for a sub-sequence without targets or encoders.
    pub hidden: [Vec<Tensor<2>>; 3],
}

impl LlmEmf {
    /// The training loss (Eq. 9-10): next-item negative log-likelihood of the fused probability
    /// (Eq. 8) at every position of every sub-sequence, averaged, combined per target domain D as
    /// `L^D + lambda1 L^other + lambda2 L^{X+Y}` and summed over `target_domains`.
    ///
    /// Without cross-domain targets, `L^D` is S^D's loss on D's items, `L^other` the other
    /// sub-sequence's loss on its own domain's items and `L^{X+Y}` the merged sequence's loss on
    /// all its items. With them (see [`super::ModelConfig::cross_domain_targets`]), every term is
    /// the loss on D's items: S^D's, the other sub-sequence's and the merged sequence's. With
    /// `negatives` (one entry per domain) the softmax is sampled.
    ///
    /// # Panics
    /// Under the mixture objective, if `batch` was planned without cross-domain targets: plan
    /// batches with [`super::ModelConfig::batcher`], which matches the model's settings.
    ///
    /// # Shapes
    /// - output `[1]`
    pub fn loss(
        &self,
        batch: &TrainBatch,
        features: &ItemFeatures,
        target_domains: &[DomainId],
        negatives: Option<&[DomainNegatives; 2]>,
    ) -> Tensor<1> {
        let hidden = self.encode_train(batch, features);
        self.loss_from(&hidden, batch, features, target_domains, negatives, None)
    }

    /// The encoders' outputs at every position of a training batch: the forward half of
    /// [`Self::loss`], separate so that a profiler can time it.
    pub fn encode_train(&self, batch: &TrainBatch, features: &ItemFeatures) -> TrainHidden {
        let modalities = self.modalities();
        let mut hidden: [Vec<Tensor<2>>; 3] = Default::default();
        for s in self.sub_sequences() {
            if batch.targets[s.index()].iter().all(Option::is_none) {
                continue;
            }
            let (input, packed) = (&batch.inputs[s.index()], &batch.packed[s.index()]);
            hidden[s.index()] = modalities
                .iter()
                .filter_map(|&m| self.encode_packed(s, m, input, packed, features))
                .collect();
        }
        TrainHidden { hidden }
    }

    /// The loss of [`Self::loss`] from the encoders' outputs ([`Self::encode_train`]): the
    /// cosine heads, the softmax, the fusion and the lambda weights. Means are taken over
    /// `counts` when given (the whole batch this batch is a shard of), else over this batch.
    ///
    /// # Shapes
    /// - output `[1]`
    pub fn loss_from(
        &self,
        hidden: &TrainHidden,
        batch: &TrainBatch,
        features: &ItemFeatures,
        target_domains: &[DomainId],
        negatives: Option<&[DomainNegatives; 2]>,
        counts: Option<&TargetCounts>,
    ) -> Tensor<1> {
        if self.domain_loss.mixture {
            return self.joint_loss(
                &hidden.hidden,
                batch,
                features,
                target_domains,
                negatives,
                counts,
            );
        }
        let sums = self.cell_losses(&hidden.hidden, batch, features, negatives);
        // Mean loss over the given (sub-sequence, domain) cells that have targets.
        let mean = |cells: &[(SubSequence, DomainId)]| -> Option<Tensor<1>> {
            let (mut total, mut count) = (None::<Tensor<1>>, 0usize);
            for (s, d) in cells {
                let local = &sums[s.index()][d.index()];
                if let Some((sum, _)) = local {
                    total = Some(match total {
                        Some(t) => t + sum.clone(),
                        None => sum.clone(),
                    });
                }
                count += match counts {
                    Some(c) => c.cells[s.index()][d.index()],
                    None => local.as_ref().map_or(0, |(_, n)| *n),
                };
            }
            total.map(|t| t.div_scalar(count as f64))
        };
        let per_domain = target_domains.iter().filter_map(|&d| {
            // Per sub-sequence (X, Y, merged), the mean loss Eq. 10 weighs for target D.
            let own = SubSequence::of_domain(d);
            let other = SubSequence::of_domain(d.other());
            let (own_loss, other_loss, merged_loss) = if self.cross_domain_targets {
                (
                    mean(&[(own, d)]),
                    mean(&[(other, d)]),
                    mean(&[(SubSequence::Merged, d)]),
                )
            } else {
                (
                    mean(&[(own, d)]),
                    mean(&[(other, d.other())]),
                    mean(&[
                        (SubSequence::Merged, DomainId::X),
                        (SubSequence::Merged, DomainId::Y),
                    ]),
                )
            };
            let mut losses: [Option<Tensor<1>>; 3] = Default::default();
            losses[own.index()] = own_loss;
            losses[other.index()] = other_loss;
            losses[SubSequence::Merged.index()] = merged_loss;
            self.domain_loss.forward(d, losses)
        });
        per_domain
            .reduce(|a, b| a + b)
            // No target at all in this batch: a constant zero, with nothing to differentiate.
            .unwrap_or_else(|| Tensor::zeros([1], &batch.inputs[0].items.device()))
    }

    /// Sum of `-log P` (fused over modalities) and the number of targets, per (sub-sequence,
    /// target domain) cell of the batch; `None` where the cell has no target.
    fn cell_losses(
        &self,
        hidden: &[Vec<Tensor<2>>; 3],
        batch: &TrainBatch,
        features: &ItemFeatures,
        negatives: Option<&[DomainNegatives; 2]>,
    ) -> [[Option<(Tensor<1>, usize)>; 2]; 3] {
        let modalities = self.modalities();
        let mut sums: [[Option<(Tensor<1>, usize)>; 2]; 3] = Default::default();
        for d in DomainId::BOTH {
            let cells: Vec<_> = SubSequence::ALL
                .into_iter()
                .filter(|s| !hidden[s.index()].is_empty())
                .filter_map(|s| batch.targets[s.index()][d.index()].as_ref().map(|t| (s, t)))
                .collect();
            if cells.is_empty() {
                continue;
            }
            let targets = cat_1d(cells.iter().map(|(_, t)| t.local.clone()).collect());
            let rows: Vec<_> = cells.iter().map(|(s, t)| (*s, t.rows.clone())).collect();
            let terms = self.stacked_log_probs(
                hidden,
                &rows,
                &modalities,
                d,
                &targets,
                features,
                negatives,
            );
            let nll = self.fusion.fuse(terms).neg();
            let mut offset = 0;
            for (s, t) in cells {
                let n = t.local_ids.len();
                let sum = nll.clone().narrow(0, offset, n).sum().reshape([1]);
                sums[s.index()][d.index()] = Some((sum, n));
                offset += n;
            }
        }
        sums
    }

    /// The mixture objective: the mean over every transition of
    /// `-log sum_s w_s P^s(target)`, the Eq. 11 score of the target itself, with the fused
    /// (Eq. 8) probability of each sub-sequence that has seen an item so far; with
    /// `per_sequence`, the mean over (sequence, target domain) pairs of each sequence's mean
    /// over its transitions into that domain.
    fn joint_loss(
        &self,
        hidden: &[Vec<Tensor<2>>; 3],
        batch: &TrainBatch,
        features: &ItemFeatures,
        target_domains: &[DomainId],
        negatives: Option<&[DomainNegatives; 2]>,
        counts: Option<&TargetCounts>,
    ) -> Tensor<1> {
        let device = batch.inputs[0].items.device();
        let Some(mixture) = batch.mixture.as_ref() else {
            panic!("the mixture objective needs a batch planned with cross-domain targets");
        };
        let modalities = self.modalities();
        let per_sequence = self.domain_loss.per_sequence;
        let (mut total, mut count) = (None::<Tensor<1>>, 0usize);
        for &d in target_domains {
            let Some(mt) = &mixture[d.index()] else {
                continue;
            };
            let nll = self.mixture_nll(hidden, mt, d, &modalities, features, negatives);
            total = Some(match total {
                Some(t) => t + nll,
                None => nll,
            });
            count += if per_sequence { mt.sequences } else { mt.len };
        }
        if let Some(c) = counts {
            let of = |d: &DomainId| {
                if per_sequence {
                    c.mixture_sequences[d.index()]
                } else {
                    c.mixture[d.index()]
                }
            };
            count = target_domains.iter().map(of).sum();
        }
        match total {
            Some(t) => t.div_scalar(count as f64),
            None => Tensor::zeros([1], &device),
        }
    }

    /// Sum of `-log` of the mixture over the transitions of target domain `d` (each weighted
    /// by `1 / n`, `n` its sequence's transitions into `d`, with `per_sequence`).
    fn mixture_nll(
        &self,
        hidden: &[Vec<Tensor<2>>; 3],
        mt: &MixtureTargets,
        d: DomainId,
        modalities: &[Modality],
        features: &ItemFeatures,
        negatives: Option<&[DomainNegatives; 2]>,
    ) -> Tensor<1> {
        let p = mt.len;
        let joint = joint_rows(hidden, mt);
        let weights = self
            .domain_loss
            .per_sequence
            .then(|| mt.sequence_weights.clone());
        if self.query_fusion {
            return self.fused_nll(
                hidden,
                mt,
                &joint,
                d,
                modalities,
                features,
                negatives,
                weights.as_ref(),
            );
        }
        let JointRows {
            subs,
            targets,
            rows,
        } = joint;
        let per_modality =
            self.stacked_log_probs(hidden, &rows, modalities, d, &targets, features, negatives);
        let experts = self.expert_losses(
            per_modality.iter().map(|(_, lp)| lp.clone()),
            mt,
            &subs,
            weights.as_ref(),
        );
        let fused = self.fusion.fuse(per_modality);
        let terms = subs
            .iter()
            .enumerate()
            .map(|(k, &s)| {
                (
                    s,
                    fused.clone().narrow(0, k * p, p) + mt.absent[s.index()].clone(),
                )
            })
            .collect();
        // Where a sub-sequence is still empty the mixture is renormalised over the others, so
        // that it stays a distribution: `log sum_s w_s P_s - log sum_s w_s`, s present.
        let norm = self.domain_loss.mix(
            d,
            subs.iter()
                .map(|&s| (s, mt.absent[s.index()].clone()))
                .collect(),
        );
        let nll = (self.domain_loss.mix(d, terms) - norm).neg();
        let mixture = match &weights {
            Some(w) => nll * w.clone(),
            None => nll,
        }
        .sum()
        .reshape([1]);
        match experts {
            Some(e) => mixture + e,
            None => mixture,
        }
    }

    /// [`Self::mixture_nll`] under query fusion (`ModelConfig::query_fusion`): per modality,
    /// the sub-sequences' unit queries of each transition summed with their weights (those
    /// present in its history only) and scored by one softmax; the experts' own losses as
    /// under the mixture.
    #[allow(clippy::too_many_arguments)]
    fn fused_nll(
        &self,
        hidden: &[Vec<Tensor<2>>; 3],
        mt: &MixtureTargets,
        joint: &JointRows,
        d: DomainId,
        modalities: &[Modality],
        features: &ItemFeatures,
        negatives: Option<&[DomainNegatives; 2]>,
        weights: Option<&Tensor<2>>,
    ) -> Tensor<1> {
        let JointRows {
            subs,
            targets,
            rows,
        } = joint;
        let device = mt.local.device();
        let shares = self.domain_loss.shares(d, subs, &device);
        let per_modality: Vec<(usize, Tensor<2>)> = modalities
            .iter()
            .enumerate()
            .map(|(k, &m)| {
                let query = rows
                    .iter()
                    .enumerate()
                    .map(|(j, (s, r))| {
                        let h = hidden[s.index()][k].clone().select(0, r.clone());
                        let unit = l2_normalise(h);
                        let c = mt.present[s.index()].clone()
                            * shares.clone().narrow(0, j, 1).reshape([1, 1]);
                        unit * c
                    })
                    .reduce(|a, b| a + b)
                    .expect("the merged sequence is always present");
                let (positive, logits) = self.head_logits(
                    m,
                    query,
                    d,
                    mt.local.clone(),
                    features,
                    negatives.map(|n| &n[d.index()]),
                );
                (m.index(), positive - log_sum_exp(logits))
            })
            .collect();
        let nll = self.fusion.fuse(per_modality).neg();
        let fused = match weights {
            Some(w) => nll * w.clone(),
            None => nll,
        }
        .sum()
        .reshape([1]);
        if self.domain_loss.expert_loss <= 0.0 {
            return fused;
        }
        let experts =
            self.stacked_log_probs(hidden, rows, modalities, d, targets, features, negatives);
        match self.expert_losses(experts.into_iter().map(|(_, lp)| lp), mt, subs, weights) {
            Some(e) => fused + e,
            None => fused,
        }
    }

    /// Every expert (sub-sequence x modality) also learns from its own prediction, whatever its
    /// weight in the joint score: otherwise an expert that starts with a small share gets small
    /// gradients and stays behind. The mean over experts of the summed NLL of the rows where
    /// the sub-sequence is present (each times its `weights` entry when given), times
    /// `expert_loss`; `None` when that weight is 0.
    ///
    /// # Shapes
    /// - each `log_probs`: `[subs * P, 1]`, sub-sequence-major as [`JointRows`] stacks them
    fn expert_losses(
        &self,
        log_probs: impl ExactSizeIterator<Item = Tensor<2>>,
        mt: &MixtureTargets,
        subs: &[SubSequence],
        weights: Option<&Tensor<2>>,
    ) -> Option<Tensor<1>> {
        if self.domain_loss.expert_loss <= 0.0 {
            return None;
        }
        let present = cat_2d(subs.iter().map(|s| mt.present[s.index()].clone()).collect());
        let present = match weights {
            Some(w) => present * cat_2d(vec![w.clone(); subs.len()]),
            None => present,
        };
        let n = (subs.len() * log_probs.len()) as f64;
        log_probs
            .map(|lp| (lp * present.clone()).sum().neg().reshape([1]))
            .reduce(|a, b| a + b)
            .map(|t| t.mul_scalar(self.domain_loss.expert_loss / n))
    }

    /// Per modality, the log-probability of `targets` from the given rows of several
    /// sub-sequences, stacked in the order of `rows` (one head computation per modality).
    ///
    /// # Shapes
    /// - each `rows` entry: `[P_s]` packed rows; `targets`: `[sum P_s]`; output `[sum P_s, 1]` each
    #[allow(clippy::too_many_arguments)]
    fn stacked_log_probs(
        &self,
        hidden: &[Vec<Tensor<2>>; 3],
        rows: &[(SubSequence, Tensor<1, Int>)],
        modalities: &[Modality],
        d: DomainId,
        targets: &Tensor<1, Int>,
        features: &ItemFeatures,
        negatives: Option<&[DomainNegatives; 2]>,
    ) -> Vec<(usize, Tensor<2>)> {
        self.stacked_head_logits(hidden, rows, modalities, d, targets, features, negatives)
            .into_iter()
            .map(|(m, positive, logits)| (m.index(), positive - log_sum_exp(logits)))
            .collect()
    }

    /// Per modality, [`Self::head_logits`] of the given rows of several sub-sequences, stacked
    /// in the order of `rows`: one head computation per modality.
    ///
    /// # Shapes
    /// - each `rows` entry: `[P_s]` packed rows; `targets`: `[sum P_s]`; outputs `[sum P_s, 1]`
    ///   (the targets') and `[sum P_s, C]` (the softmax's)
    #[allow(clippy::too_many_arguments)]
    fn stacked_head_logits(
        &self,
        hidden: &[Vec<Tensor<2>>; 3],
        rows: &[(SubSequence, Tensor<1, Int>)],
        modalities: &[Modality],
        d: DomainId,
        targets: &Tensor<1, Int>,
        features: &ItemFeatures,
        negatives: Option<&[DomainNegatives; 2]>,
    ) -> Vec<(Modality, Tensor<2>, Tensor<2>)> {
        modalities
            .iter()
            .enumerate()
            .map(|(k, &m)| {
                let h = cat_2d(
                    rows.iter()
                        .map(|(s, r)| hidden[s.index()][k].clone().select(0, r.clone()))
                        .collect(),
                );
                let (positive, logits) = self.head_logits(
                    m,
                    h,
                    d,
                    targets.clone(),
                    features,
                    negatives.map(|n| &n[d.index()]),
                );
                (m, positive, logits)
            })
            .collect()
    }

    /// One modality's scaled logits (cosine or dot heads) of the rows `h` (Eq. 5-7): the target's `[P, 1]`, and the softmax's `[P, n_D]` over the full domain
    /// or, with `negatives`, `[P, 1 + K]` (the target, then the shared negatives, log-Q
    /// corrected, accidental hits removed; only those rows of the table are gathered and
    /// normalised).
    ///
    /// # Shapes
    /// - `h`: `[P, width]`, `targets`: `[P]` indices inside the domain
    fn head_logits(
        &self,
        m: Modality,
        h: Tensor<2>,
        d: DomainId,
        targets: Tensor<1, Int>,
        features: &ItemFeatures,
        negatives: Option<&DomainNegatives>,
    ) -> (Tensor<2>, Tensor<2>) {
        let h = self.query(h);
        let [p] = targets.dims();
        match negatives {
            None => {
                let table = self.head(m, d, features);
                let positive = self.scale(
                    m,
                    (h.clone() * table.clone().select(0, targets.clone())).sum_dim(1),
                );
                let logits = self.scale(m, h.matmul(table.transpose()));
                (positive, logits)
            }
            Some(neg) => {
                let [k] = neg.ids.dims();
                // One gather of the target and negative rows (normalised together under
                // cosine heads).
                let rows = self.head_rows(
                    m,
                    d,
                    Tensor::cat(vec![targets.clone(), neg.ids.clone()], 0),
                    features,
                );
                let pos_rows = rows.clone().narrow(0, 0, p);
                let neg_rows = rows.narrow(0, p, k);
                let log_q = neg.log_q.clone();
                let positive = self.scale(m, (h.clone() * pos_rows).sum_dim(1))
                    - log_q.clone().select(0, targets.clone()).reshape([p, 1]);
                let neg_logits = self.scale(m, h.matmul(neg_rows.transpose()))
                    - log_q.select(0, neg.ids.clone()).reshape([1, k]);
                // A sampled negative equal to the target is an accidental hit: drop it.
                let hits = targets
                    .reshape([p, 1])
                    .equal(neg.ids.clone().reshape([1, k]));
                let neg_logits = neg_logits.mask_fill(hits, ACCIDENTAL_HIT);
                let all = Tensor::cat(vec![positive.clone(), neg_logits], 1);
                (positive, all)
            }
        }
    }
}

/// What the mixture score of some transitions stacks: the sub-sequences that
/// take part, the targets repeated once per sub-sequence, and each sub-sequence's packed rows, so
/// that each modality's head runs once over all of them.
struct JointRows {
    subs: Vec<SubSequence>,
    targets: Tensor<1, Int>,
    rows: Vec<(SubSequence, Tensor<1, Int>)>,
}

impl LlmEmf {
    /// The contrastive term of [`crate::train::Contrastive`] between two encodings of the same
    /// training batch ([`Self::encode_train`] twice, other dropout masks): per sub-sequence
    /// and modality with at least two non-empty rows, the L2-normalised outputs at each row's
    /// last position, `a_i` and `b_i`, scored `a_i . b_j / temperature` against each other,
    /// and the symmetric InfoNCE `(CE(a -> b) + CE(b -> a)) / 2` with each row's own view as
    /// the answer, summed over rows; then averaged over the (sub-sequence, modality) pairs.
    /// Returns the sum over rows (the caller divides by the batch's sequences) and `None`
    /// when no pair has two rows. `inputs` are the padded plans the batch was made from.
    ///
    /// # Shapes
    /// - output `[1]`
    pub fn contrastive_loss(
        &self,
        a: &TrainHidden,
        b: &TrainHidden,
        inputs: &[PaddedPlan; 3],
        temperature: f64,
    ) -> Option<Tensor<1>> {
        let mut terms = Vec::new();
        for s in SubSequence::ALL {
            let (ha, hb) = (&a.hidden[s.index()], &b.hidden[s.index()]);
            let Some(first) = ha.first() else { continue };
            let last = last_positions(&inputs[s.index()]);
            let n = last.len();
            if n < 2 {
                continue;
            }
            // One upload of the rows for every modality of this sub-sequence.
            let rows = Tensor::<1, Int>::from_data(
                burn::tensor::TensorData::new(last, [n]),
                &first.device(),
            );
            for (xa, xb) in ha.iter().zip(hb) {
                let za = l2_normalise(xa.clone().select(0, rows.clone()));
                let zb = l2_normalise(xb.clone().select(0, rows.clone()));
                let own = (za.clone() * zb.clone()).sum_dim(1).div_scalar(temperature);
                let logits = za.matmul(zb.transpose()).div_scalar(temperature);
                let a_to_b = log_sum_exp(logits.clone()) - own.clone();
                let b_to_a = log_sum_exp(logits.transpose()) - own;
                terms.push((a_to_b + b_to_a).sum().mul_scalar(0.5));
            }
        }
        let count = terms.len();
        terms
            .into_iter()
            .reduce(|x, y| x + y)
            .map(|t| t.div_scalar(count as f64))
    }
}

/// The packed index (row-major over real positions) of each non-empty row's last position.
fn last_positions(plan: &PaddedPlan) -> Vec<i64> {
    let mut end = 0usize;
    plan.lengths
        .iter()
        .filter_map(|&n| {
            end += n;
            (n > 0).then(|| end as i64 - 1)
        })
        .collect()
}

fn joint_rows(hidden: &[Vec<Tensor<2>>; 3], mt: &MixtureTargets) -> JointRows {
    let subs: Vec<SubSequence> = SubSequence::ALL
        .into_iter()
        .filter(|s| mt.any[s.index()] && !hidden[s.index()].is_empty())
        .collect();
    let targets = cat_1d(vec![mt.local.clone(); subs.len()]);
    let rows = subs
        .iter()
        .map(|s| (*s, mt.rows[s.index()].clone()))
        .collect();
    JointRows {
        subs,
        targets,
        rows,
    }
}

fn cat_1d(mut parts: Vec<Tensor<1, Int>>) -> Tensor<1, Int> {
    if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Tensor::cat(parts, 0)
    }
}

fn cat_2d(mut parts: Vec<Tensor<2>>) -> Tensor<2> {
    if parts.len() == 1 {
        parts.pop().expect("one part")
    } else {
        Tensor::cat(parts, 0)
    }
}
