//! The training loss of Eq. 9-10: the negative log-likelihood of the fused next-item
//! probability (Eq. 8) at every trained position, per sub-sequence and target domain, combined
//! with the lambda weights.
//!
//! The computation is arranged for few, large tensor operations: for each target domain and
//! modality, the hidden states of every sub-sequence that predicts that domain are gathered into
//! one matrix, normalised once, and scored against the target domain's table (or the target rows
//! and the step's shared negatives) in one matrix product; per-sub-sequence sums are slices of
//! the result.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::fusion::{LOGIT_SCALE, log_mix, log_mix_weighted, log_sum_exp};
use super::llm_emf::{DomainNegatives, ItemFeatures, LlmEmf, Modality, l2_normalise};
use crate::data::DomainId;
use crate::data::batcher::{MixtureTargets, SubSequence, TargetCounts, TrainBatch};

/// Configuration of a [`DomainLoss`].
#[derive(Config, Debug)]
pub struct DomainLossConfig {
    /// lambda1: weight of the other domain's sub-sequence (Eq. 10-11). Default 0.3.
    #[config(default = 0.3)]
    pub lambda1: f64,
    /// lambda2: weight of the merged sequence (Eq. 10-11). Default 0.1.
    #[config(default = 0.1)]
    pub lambda2: f64,
    /// Learn the weights: per target domain, a softmax over (own, other, merged), started
    /// equal (see [`super::fusion::LOGIT_SCALE`]). Needs `mixture`. Default false.
    #[config(default = false)]
    pub learnable: bool,
    /// Train the Eq. 11 mixture `log(w_own P^own + w_other P^other + w_merged P^{X+Y})` of the
    /// target itself (what is trained is what is ranked) instead of Eq. 10's weighted sum of
    /// separate losses. Needs cross-domain targets. Default false (the paper's Eq. 10).
    #[config(default = false)]
    pub mixture: bool,
    /// With `mixture`, combine the sub-sequences as a product of experts (weighted logits,
    /// one softmax) instead of a mixture of probabilities. Default false.
    #[config(default = false)]
    pub product: bool,
    /// Under the mixture objective, the weight of the experts' own losses: the mean over the
    /// (sub-sequence, modality) experts of each one's negative log-likelihood of the target,
    /// added to the mixture's. Default 0.
    #[config(default = 0.0)]
    pub expert_loss: f64,
}

/// The lambda-weighted domain loss (Eq. 10) and cross-domain score (Eq. 11): how the three
/// sub-sequences' predictions of a target domain are weighted, fixed or learned.
///
/// Roles per target domain D: *own* (S^D), *other* (the other domain's sub-sequence) and
/// *merged* (S^{X+Y}), with weights `(1, lambda1, lambda2)` in the paper.
#[derive(Module, Debug)]
pub struct DomainLoss {
    /// Learned log-weights `[2, 3]`: target domain (X, Y) by role (own, other, merged).
    pub logits: Option<Param<Tensor<2>>>,
    /// lambda1.
    pub lambda1: f64,
    /// lambda2.
    pub lambda2: f64,
    /// Whether the training loss is the score that ranks (mixture or product).
    pub mixture: bool,
    /// Whether that score is a product of experts rather than Eq. 11's mixture.
    pub product: bool,
    /// Weight of the experts' own losses under the mixture objective.
    pub expert_loss: f64,
    /// Sub-sequences in use (X, Y, merged).
    pub used: [bool; 3],
}

/// The role of sub-sequence `s` for target domain `d`: 0 own, 1 other, 2 merged.
fn role(d: DomainId, s: SubSequence) -> usize {
    if s == SubSequence::Merged {
        2
    } else if s == SubSequence::of_domain(d) {
        0
    } else {
        1
    }
}

impl DomainLossConfig {
    /// Builds the loss for the sub-sequences in `used` (X, Y, merged).
    pub fn init(&self, used: [bool; 3], device: &Device) -> DomainLoss {
        // Learned weights start equal: the paper's lambdas are fixed-weight values, and under
        // the mixture objective a sub-sequence learns in proportion to its weight, so a small
        // start (0.1 / 1.4 for the merged sequence) would keep it small.
        let logits = self
            .learnable
            .then(|| Param::from_tensor(Tensor::zeros([2, 3], device)));
        DomainLoss {
            logits,
            lambda1: self.lambda1,
            lambda2: self.lambda2,
            mixture: self.mixture,
            product: self.mixture && self.product,
            expert_loss: self.expert_loss,
            used,
        }
    }
}

impl DomainLoss {
    /// The weights of the sub-sequences (X, Y, merged) for target domain `d`: the paper's
    /// `(1, lambda1, lambda2)` by role (a zero weight drops its sub-sequence unless every weight
    /// in use is zero), or the learned softmax. 0 for unused sub-sequences.
    pub fn weights(&self, d: DomainId) -> [f64; 3] {
        let fixed = [1.0, self.lambda1, self.lambda2];
        let by_role: [f64; 3] = match &self.logits {
            None => fixed,
            Some(p) => {
                let v = p
                    .val()
                    .narrow(0, d.index(), 1)
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap_or_default();
                std::array::from_fn(|r| {
                    (v.get(r).copied().unwrap_or(0.0) as f64 * LOGIT_SCALE).exp()
                })
            }
        };
        let mut w: [f64; 3] = std::array::from_fn(|s| {
            if self.used[s] {
                by_role[role(d, SubSequence::ALL[s])]
            } else {
                0.0
            }
        });
        if w.iter().all(|&x| x <= 0.0) {
            w = std::array::from_fn(|s| if self.used[s] { 1.0 } else { 0.0 });
        }
        let total: f64 = w.iter().sum();
        if self.logits.is_some() {
            w.iter_mut().for_each(|x| *x /= total);
        }
        w
    }

    /// Sets the weights of the sub-sequences (X, Y, merged) for target domain `d`, e.g. to
    /// re-weight a trained model on held-out data without retraining: learned weights are
    /// set through their logits (a zero weight becomes a tiny one), fixed ones through the
    /// lambdas, which both target domains share (relative to the own sub-sequence's weight,
    /// which must then be positive).
    ///
    /// # Errors
    /// A negative or non-finite weight, all weights zero, or fixed weights with a zero own
    /// weight.
    pub fn set_weights(&mut self, d: DomainId, by_sub: [f64; 3]) -> crate::error::Result<()> {
        let bad = |m: String| Err(crate::error::Error::Config(format!("domain weights: {m}")));
        if by_sub.iter().any(|w| !w.is_finite() || *w < 0.0) || by_sub.iter().all(|&w| w == 0.0) {
            return bad(format!(
                "{by_sub:?} must be finite, non-negative and not all zero"
            ));
        }
        let by_role: [f64; 3] = std::array::from_fn(|r| {
            SubSequence::ALL
                .into_iter()
                .find(|&s| role(d, s) == r)
                .map_or(0.0, |s| by_sub[s.index()])
        });
        match &mut self.logits {
            Some(p) => {
                let device = p.val().device();
                let mut values = p
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap_or_else(|_| vec![0.0; 6]);
                for (r, w) in by_role.iter().enumerate() {
                    values[d.index() * 3 + r] = (w.max(1e-9).ln() / LOGIT_SCALE) as f32;
                }
                *p =
                    Param::from_tensor(Tensor::from_data(TensorData::new(values, [2, 3]), &device));
            }
            None => {
                if by_role[0] <= 0.0 {
                    return bad(
                        "fixed weights need a positive weight for the own sub-sequence".into(),
                    );
                }
                self.lambda1 = by_role[1] / by_role[0];
                self.lambda2 = by_role[2] / by_role[0];
            }
        }
        Ok(())
    }

    /// The weights of sub-sequences `subs` for target domain `d` as `[1, 1]` tensors (learned:
    /// the softmax over the roles in use, differentiable; fixed: the lambdas by role).
    pub fn weight_tensors(
        &self,
        d: DomainId,
        subs: &[SubSequence],
        device: &Device,
    ) -> Vec<Tensor<2>> {
        match &self.logits {
            None => {
                let w = self.weights(d);
                subs.iter()
                    .map(|s| {
                        Tensor::from_data(
                            TensorData::new(vec![w[s.index()] as f32], [1, 1]),
                            device,
                        )
                    })
                    .collect()
            }
            Some(p) => {
                let roles: Vec<i64> = SubSequence::ALL
                    .into_iter()
                    .filter(|s| self.used[s.index()])
                    .map(|s| role(d, s) as i64)
                    .collect();
                let n = roles.len();
                let row = p
                    .val()
                    .narrow(0, d.index(), 1)
                    .reshape([3])
                    .mul_scalar(LOGIT_SCALE);
                let w = softmax(
                    row.select(
                        0,
                        Tensor::from_data(TensorData::new(roles.clone(), [n]), device),
                    ),
                    0,
                );
                subs.iter()
                    .map(|&s| {
                        let k = roles
                            .iter()
                            .position(|&r| r == role(d, s) as i64)
                            .expect("a sub-sequence in use");
                        w.clone().narrow(0, k, 1).reshape([1, 1])
                    })
                    .collect()
            }
        }
    }

    /// The mixture of Eq. 11 for target domain `d`: `log sum_s w_s exp(log_p_s)` over the
    /// given sub-sequences (fixed weights of zero are left out).
    ///
    /// # Shapes
    /// - `terms`: `(sub-sequence, [n, m] log-probabilities)`; output `[n, m]`
    pub fn mix(&self, d: DomainId, terms: Vec<(SubSequence, Tensor<2>)>) -> Tensor<2> {
        match &self.logits {
            None => {
                let w = self.weights(d);
                let kept: Vec<(f64, Tensor<2>)> =
                    terms.into_iter().map(|(s, t)| (w[s.index()], t)).collect();
                if kept.iter().any(|(w, _)| *w > 0.0) {
                    log_mix(kept.into_iter().filter(|(w, _)| *w > 0.0).collect())
                } else {
                    // Only zero-weight sub-sequences were given: they share equally.
                    log_mix(kept.into_iter().map(|(_, t)| (1.0, t)).collect())
                }
            }
            Some(p) => {
                // Softmax over the roles of the sub-sequences in use.
                let roles: Vec<i64> = SubSequence::ALL
                    .into_iter()
                    .filter(|s| self.used[s.index()])
                    .map(|s| role(d, s) as i64)
                    .collect();
                let device = terms[0].1.device();
                let n = roles.len();
                let row = p
                    .val()
                    .narrow(0, d.index(), 1)
                    .reshape([3])
                    .mul_scalar(LOGIT_SCALE);
                let log_w = log_softmax(
                    row.select(
                        0,
                        Tensor::from_data(TensorData::new(roles.clone(), [n]), &device),
                    ),
                    0,
                );
                log_mix_weighted(
                    terms
                        .into_iter()
                        .map(|(s, t)| {
                            let k = roles
                                .iter()
                                .position(|&r| r == role(d, s) as i64)
                                .expect("a sub-sequence in use");
                            (log_w.clone().narrow(0, k, 1).reshape([1, 1]), t)
                        })
                        .collect(),
                )
            }
        }
    }
}

/// Value given to the logit of a sampled negative equal to the target (an accidental hit).
const ACCIDENTAL_HIT: f32 = -1.0e9;

/// The encoders' outputs for a training batch ([`LlmEmf::encode_train`]).
#[derive(Debug, Clone)]
pub struct TrainHidden {
    /// `[B * L, width]` per sub-sequence (X, Y, merged) and used modality (id, image, text
    /// order); empty for a sub-sequence without targets or encoders.
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
            let input = &batch.inputs[s.index()];
            let [b, l] = input.items.dims();
            hidden[s.index()] = modalities
                .iter()
                .filter_map(|&m| {
                    let h = self.encode(s, m, input, features)?;
                    let width = h.dims()[2];
                    Some(h.reshape([b * l, width]))
                })
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
        let mut parts: Vec<Tensor<1>> = Vec::new();
        for &d in target_domains {
            let own = SubSequence::of_domain(d);
            let other = SubSequence::of_domain(d.other());
            let (l1, l2) = (self.domain_loss.lambda1, self.domain_loss.lambda2);
            let terms = if self.cross_domain_targets {
                [
                    (1.0, mean(&[(own, d)])),
                    (l1, mean(&[(other, d)])),
                    (l2, mean(&[(SubSequence::Merged, d)])),
                ]
            } else {
                [
                    (1.0, mean(&[(own, d)])),
                    (l1, mean(&[(other, d.other())])),
                    (
                        l2,
                        mean(&[
                            (SubSequence::Merged, DomainId::X),
                            (SubSequence::Merged, DomainId::Y),
                        ]),
                    ),
                ]
            };
            parts.extend(
                terms
                    .into_iter()
                    .filter_map(|(w, l)| l.map(|l| l.mul_scalar(w))),
            );
        }
        parts
            .into_iter()
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
    /// (Eq. 8) probability of each sub-sequence that has seen an item so far.
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
        let (mut total, mut count) = (None::<Tensor<1>>, 0usize);
        for &d in target_domains {
            let Some(mt) = &mixture[d.index()] else {
                continue;
            };
            let nll = if self.domain_loss.product {
                self.product_nll(hidden, mt, d, &modalities, features, negatives)
            } else {
                self.mixture_nll(hidden, mt, d, &modalities, features, negatives)
            };
            total = Some(match total {
                Some(t) => t + nll,
                None => nll,
            });
            count += mt.len;
        }
        if let Some(c) = counts {
            count = target_domains.iter().map(|d| c.mixture[d.index()]).sum();
        }
        match total {
            Some(t) => t.div_scalar(count as f64),
            None => Tensor::zeros([1], &device),
        }
    }

    /// Sum of `-log` of the mixture over the transitions of target domain `d`.
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
        let JointRows {
            subs,
            targets,
            rows,
        } = joint_rows(hidden, mt);
        let per_modality =
            self.stacked_log_probs(hidden, &rows, modalities, d, &targets, features, negatives);
        let experts = self.expert_losses(per_modality.iter().map(|(_, lp)| lp.clone()), mt, &subs);
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
        let mixture = (self.domain_loss.mix(d, terms) - norm)
            .neg()
            .sum()
            .reshape([1]);
        match experts {
            Some(e) => mixture + e,
            None => mixture,
        }
    }

    /// Sum of `-log softmax(sum_{s,m} c_{s,m} logits_{s,m})[target]` over the transitions of
    /// target domain `d`, with `c_{s,m} = w_s a_m / sum_{s present} w_s` for the sub-sequences
    /// present in the row: the product of experts, plus the experts' own losses.
    fn product_nll(
        &self,
        hidden: &[Vec<Tensor<2>>; 3],
        mt: &MixtureTargets,
        d: DomainId,
        modalities: &[Modality],
        features: &ItemFeatures,
        negatives: Option<&[DomainNegatives; 2]>,
    ) -> Tensor<1> {
        let p = mt.len;
        let device = mt.local.device();
        let JointRows {
            subs,
            targets,
            rows,
        } = joint_rows(hidden, mt);
        let sub_w = self.domain_loss.weight_tensors(d, &subs, &device);
        let mod_w = self.fusion.weight_tensors(
            &modalities.iter().map(|m| m.index()).collect::<Vec<_>>(),
            &device,
        );
        // Per row, the weight of the sub-sequences present (the merged one always is).
        let norm = subs
            .iter()
            .zip(&sub_w)
            .map(|(s, w)| mt.present[s.index()].clone() * w.clone())
            .reduce(|a, b| a + b)
            .expect("a sub-sequence")
            .clamp_min(1e-12);
        let per_modality =
            self.stacked_head_logits(hidden, &rows, modalities, d, &targets, features, negatives);
        let experts = self.expert_losses(
            per_modality
                .iter()
                .map(|(_, pos, logits)| pos.clone() - log_sum_exp(logits.clone())),
            mt,
            &subs,
        );
        // The product's logits: every expert's, weighted, summed.
        let mut positive = Vec::new();
        let mut all = Vec::new();
        for (j, (_, pos, logits)) in per_modality.into_iter().enumerate() {
            for (k, s) in subs.iter().enumerate() {
                let c = mt.present[s.index()].clone() * sub_w[k].clone() * mod_w[j].clone()
                    / norm.clone();
                positive.push(pos.clone().narrow(0, k * p, p) * c.clone());
                all.push(logits.clone().narrow(0, k * p, p) * c);
            }
        }
        let sum =
            |terms: Vec<Tensor<2>>| terms.into_iter().reduce(|a, b| a + b).expect("an expert");
        let product = (sum(positive) - log_sum_exp(sum(all)))
            .neg()
            .sum()
            .reshape([1]);
        match experts {
            Some(e) => product + e,
            None => product,
        }
    }

    /// Every expert (sub-sequence x modality) also learns from its own prediction, whatever its
    /// weight in the joint score: otherwise an expert that starts with a small share gets small
    /// gradients and stays behind. The mean over experts of the summed NLL of the rows where
    /// the sub-sequence is present, times `expert_loss`; `None` when that weight is 0.
    ///
    /// # Shapes
    /// - each `log_probs`: `[subs * P, 1]`, sub-sequence-major as [`JointRows`] stacks them
    fn expert_losses(
        &self,
        log_probs: impl ExactSizeIterator<Item = Tensor<2>>,
        mt: &MixtureTargets,
        subs: &[SubSequence],
    ) -> Option<Tensor<1>> {
        if self.domain_loss.expert_loss <= 0.0 {
            return None;
        }
        let present = cat_2d(subs.iter().map(|s| mt.present[s.index()].clone()).collect());
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
    /// - each `rows` entry: `[P_s]` flat rows; `targets`: `[sum P_s]`; output `[sum P_s, 1]` each
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
    /// - each `rows` entry: `[P_s]` flat rows; `targets`: `[sum P_s]`; outputs `[sum P_s, 1]`
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

    /// One modality's scaled cosine logits of the rows `h` (Eq. 5-7, through the domain's
    /// query map): the target's `[P, 1]`, and the softmax's `[P, n_D]` over the full domain
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
        let h = l2_normalise(self.query(m, d, h));
        let [p] = targets.dims();
        let bias = self.domain_bias(d);
        match negatives {
            None => {
                let table = self.head(m, d, features);
                let positive = self.scale(
                    m,
                    (h.clone() * table.clone().select(0, targets.clone())).sum_dim(1),
                );
                let logits = self.scale(m, h.matmul(table.transpose()));
                match bias {
                    Some(bias) => {
                        let [n] = bias.dims();
                        (
                            positive + bias.clone().select(0, targets).reshape([p, 1]),
                            logits + bias.reshape([1, n]),
                        )
                    }
                    None => (positive, logits),
                }
            }
            Some(neg) => {
                let [k] = neg.ids.dims();
                // One gather of the target and negative rows, normalised together.
                let rows = self.head_rows(
                    m,
                    d,
                    Tensor::cat(vec![targets.clone(), neg.ids.clone()], 0),
                    features,
                );
                let pos_rows = rows.clone().narrow(0, 0, p);
                let neg_rows = rows.narrow(0, p, k);
                let log_q = neg.log_q.clone();
                let mut positive = self.scale(m, (h.clone() * pos_rows).sum_dim(1))
                    - log_q.clone().select(0, targets.clone()).reshape([p, 1]);
                let mut neg_logits = self.scale(m, h.matmul(neg_rows.transpose()))
                    - log_q.select(0, neg.ids.clone()).reshape([1, k]);
                if let Some(bias) = bias {
                    positive = positive + bias.clone().select(0, targets.clone()).reshape([p, 1]);
                    neg_logits = neg_logits + bias.select(0, neg.ids.clone()).reshape([1, k]);
                }
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

/// What the joint (mixture or product) score of some transitions stacks: the sub-sequences that
/// take part, the targets repeated once per sub-sequence, and each sub-sequence's flat rows, so
/// that each modality's head runs once over all of them.
struct JointRows {
    subs: Vec<SubSequence>,
    targets: Tensor<1, Int>,
    rows: Vec<(SubSequence, Tensor<1, Int>)>,
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
