//! The lambda-weighted domain loss and cross-domain weights (Eq. 10-11) as a block: how the
//! three sub-sequences' predictions of a target domain are weighted, fixed (the paper's
//! `(1, lambda1, lambda2)` by role) or learned. [`DomainLoss::forward`] combines per-sub-sequence
//! losses (Eq. 10); [`DomainLoss::mix`] mixes per-sub-sequence log-probabilities (Eq. 11).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};

use super::fusion::{LOGIT_SCALE, log_mix, log_mix_weighted, read_back_shares};
use crate::data::DomainId;
use crate::data::batcher::SubSequence;

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
    /// Under the mixture objective, the weight of the experts' own losses: the mean over the
    /// (sub-sequence, modality) experts of each one's negative log-likelihood of the target,
    /// added to the mixture's. Default 0.
    #[config(default = 0.0)]
    pub expert_loss: f64,
    /// Under the mixture objective, average each sequence's transitions into a domain first
    /// and then over the (sequence, domain) pairs, instead of over every transition
    /// ([`super::LossAverage::Sequence`]). Default false.
    #[config(default = false)]
    pub per_sequence: bool,
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
    /// Whether the training loss is the score that ranks (Eq. 11's mixture).
    pub mixture: bool,
    /// Weight of the experts' own losses under the mixture objective.
    pub expert_loss: f64,
    /// Whether the mixture loss is a mean over (sequence, domain) pairs of per-sequence means.
    pub per_sequence: bool,
    /// Sub-sequences in use (X, Y, merged).
    pub used: [bool; 3],
}

pub use super::fusion::NEGLIGIBLE_WEIGHT;

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
            expert_loss: self.expert_loss,
            per_sequence: self.per_sequence,
            used,
        }
    }
}

impl DomainLoss {
    /// The weights of the sub-sequences (X, Y, merged) for target domain `d`: the paper's
    /// `(1, lambda1, lambda2)` by role (a zero weight drops its sub-sequence unless every weight
    /// in use is zero), or the learned softmax (a share below [`NEGLIGIBLE_WEIGHT`], such as a
    /// weight the validation fit set to zero, read as 0). 0 for unused sub-sequences.
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
        if self.logits.is_some() {
            // A weight set to zero is stored as the logit of 1e-9 (`set_weights`): read back
            // as exactly 0, so that its sub-sequence is neither encoded nor scored.
            read_back_shares(&mut w);
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

    /// Eq. 10 for target domain `d`: `L^D + lambda1 L^other + lambda2 L^{X+Y}` from the mean
    /// losses of the sub-sequences (X, Y, merged; `None` where a sub-sequence has no target in
    /// the batch, which then adds nothing); `None` when none has. Which targets each mean
    /// covers is the caller's choice (the paper's: S^D on D's items, the other sub-sequence on
    /// its own domain's, the merged sequence on all).
    ///
    /// # Shapes
    /// - each loss `[1]`; output `[1]`
    pub fn forward(&self, d: DomainId, losses: [Option<Tensor<1>>; 3]) -> Option<Tensor<1>> {
        let weights = [1.0, self.lambda1, self.lambda2];
        let mut by_role: [Option<Tensor<1>>; 3] = Default::default();
        for (s, loss) in SubSequence::ALL.into_iter().zip(losses) {
            by_role[role(d, s)] = loss;
        }
        by_role
            .into_iter()
            .zip(weights)
            .filter_map(|(l, w)| l.map(|l| l.mul_scalar(w)))
            .reduce(|a, b| a + b)
    }

    /// The weights of `subs` for target domain `d` as a tensor `[len(subs)]`, differentiable
    /// with learned weights (the softmax over the roles in use, as [`Self::mix`] reads it),
    /// else the fixed weights of [`Self::weights`]: what a fused query weighs its
    /// sub-sequences' queries by.
    pub fn shares(&self, d: DomainId, subs: &[SubSequence], device: &Device) -> Tensor<1> {
        match &self.logits {
            None => {
                let w = self.weights(d);
                let values: Vec<f32> = subs.iter().map(|s| w[s.index()] as f32).collect();
                Tensor::from_data(TensorData::new(values, [subs.len()]), device)
            }
            Some(p) => {
                let (log_w, roles) = self.learned_log_weights(p, d, device);
                let picked: Vec<i64> = subs
                    .iter()
                    .map(|&s| role_position(&roles, d, s) as i64)
                    .collect();
                log_w.exp().select(
                    0,
                    Tensor::from_data(TensorData::new(picked, [subs.len()]), device),
                )
            }
        }
    }

    /// With learned weights `p`, the log-weights of the sub-sequences in use for target
    /// domain `d` (a log-softmax over their roles), with those roles in the same order.
    fn learned_log_weights(
        &self,
        p: &Param<Tensor<2>>,
        d: DomainId,
        device: &Device,
    ) -> (Tensor<1>, Vec<i64>) {
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
        let log_w = log_softmax(
            row.select(
                0,
                Tensor::from_data(TensorData::new(roles.clone(), [n]), device),
            ),
            0,
        );
        (log_w, roles)
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
                let device = terms[0].1.device();
                let (log_w, roles) = self.learned_log_weights(p, d, &device);
                log_mix_weighted(
                    terms
                        .into_iter()
                        .map(|(s, t)| {
                            let k = role_position(&roles, d, s);
                            (log_w.clone().narrow(0, k, 1).reshape([1, 1]), t)
                        })
                        .collect(),
                )
            }
        }
    }
}

/// The position of sub-sequence `s`'s role for target domain `d` among `roles` (those in use,
/// as [`DomainLoss::learned_log_weights`] orders them).
fn role_position(roles: &[i64], d: DomainId, s: SubSequence) -> usize {
    roles
        .iter()
        .position(|&r| r == role(d, s) as i64)
        .expect("a sub-sequence in use")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar()
    }

    #[test]
    fn forward_weighs_each_sub_sequence_by_its_role() {
        let device = crate::test_device();
        let loss = DomainLossConfig::new()
            .with_lambda1(0.3)
            .with_lambda2(0.1)
            .init([true; 3], &device);
        let l = |v: f32| {
            Some(Tensor::<1>::from_data(
                TensorData::new(vec![v], [1]),
                &device,
            ))
        };
        // Target X: S^X is its own sub-sequence, S^Y the other one.
        let x = scalar(loss.forward(DomainId::X, [l(2.0), l(4.0), l(8.0)]).unwrap());
        assert!((x - (2.0 + 0.3 * 4.0 + 0.1 * 8.0)).abs() < 1e-6, "{x}");
        // Target Y: the roles swap.
        let y = scalar(loss.forward(DomainId::Y, [l(2.0), l(4.0), l(8.0)]).unwrap());
        assert!((y - (4.0 + 0.3 * 2.0 + 0.1 * 8.0)).abs() < 1e-6, "{y}");
        // A sub-sequence without targets adds nothing; none at all gives none.
        let merged_only = scalar(loss.forward(DomainId::X, [None, None, l(8.0)]).unwrap());
        assert!((merged_only - 0.8).abs() < 1e-6, "{merged_only}");
        assert!(loss.forward(DomainId::X, [None, None, None]).is_none());
    }
}
