//! The tri-modal fusion head (Eq. 8) and log-space mixtures: `log(sum_i w_i * exp(t_i))`
//! without underflow.
//!
//! The paper mixes probabilities (Eq. 8: `a P_id + b P_img + (1 - a - b) P_tex`; Eq. 11:
//! `P^D + l1 P^other + l2 P^{X+Y}`). Over tens of thousands of items those probabilities are
//! tiny, so every mixture here works on log-probabilities with the max trick.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Tensor, TensorData};

/// Learned mixture weights are `softmax(LOGIT_SCALE * theta)`: the scale lets an optimizer that
/// moves each parameter by about its learning rate per step (Adam) move a weight across its
/// range in tens of steps, not thousands.
pub const LOGIT_SCALE: f64 = 20.0;

/// A learned mixture weight below this share is read as 0: `set_weights` stores a zero weight
/// as the logit of 1e-9, and a share below 1e-6 moves no score by more than that, so the
/// evaluation neither encodes nor scores what it weights.
pub const NEGLIGIBLE_WEIGHT: f64 = 1e-6;

/// Normalises learned shares to sum to 1 and reads every share below [`NEGLIGIBLE_WEIGHT`] as
/// exactly 0 (renormalising the rest). Shares that are all zero are left as they are.
pub(crate) fn read_back_shares(w: &mut [f64; 3]) {
    let total: f64 = w.iter().sum();
    if total <= 0.0 {
        return;
    }
    w.iter_mut().for_each(|x| *x /= total);
    if w.iter().any(|&x| x > 0.0 && x < NEGLIGIBLE_WEIGHT) {
        w.iter_mut()
            .filter(|x| **x < NEGLIGIBLE_WEIGHT)
            .for_each(|x| *x = 0.0);
        let total: f64 = w.iter().sum();
        w.iter_mut().for_each(|x| *x /= total);
    }
}

/// Configuration of a [`ModalityFusion`] head.
#[derive(Config, Debug)]
pub struct ModalityFusionConfig {
    /// alpha: weight of the ID modality. Default 0.5.
    #[config(default = 0.5)]
    pub alpha: f64,
    /// beta: weight of the image modality; text gets `1 - alpha - beta`. Default 0.25.
    #[config(default = 0.25)]
    pub beta: f64,
    /// Learn the weights (a softmax over the modalities in use, started at alpha/beta; see
    /// [`LOGIT_SCALE`]). Default false (the paper's fixed weights).
    #[config(default = false)]
    pub learnable: bool,
}

/// The fusion head of Eq. 8: mixes the per-modality next-item distributions `P_id`, `P_img`,
/// `P_tex` with weights alpha, beta and `1 - alpha - beta`, renormalised over the modalities in
/// use, fixed or learned.
#[derive(Module, Debug)]
pub struct ModalityFusion {
    /// Learned log-weights (id, image, text), `[3]`; `None` for fixed weights.
    pub logits: Option<Param<Tensor<1>>>,
    /// The fixed (or initial) weights, renormalised over `used`.
    pub fixed: [f64; 3],
    /// Which modalities are in use (id, image, text).
    pub used: [bool; 3],
}

impl ModalityFusionConfig {
    /// Builds the head for the modalities in `used` (id, image, text).
    pub fn init(&self, used: [bool; 3], device: &Device) -> ModalityFusion {
        let fixed = renormalise(
            [
                self.alpha,
                self.beta,
                (1.0 - self.alpha - self.beta).max(0.0),
            ],
            used,
        );
        let logits = self.learnable.then(|| {
            // A modality with weight 0 starts at a small weight, so that it can be learned.
            let v: Vec<f32> = fixed
                .iter()
                .map(|&w| (w.max(1e-3).ln() / LOGIT_SCALE) as f32)
                .collect();
            Param::from_tensor(Tensor::from_data(TensorData::new(v, [3]), device))
        });
        ModalityFusion {
            logits,
            fixed,
            used,
        }
    }
}

impl ModalityFusion {
    /// The current weights (id, image, text); 0 for unused modalities, and for a learned weight
    /// below [`NEGLIGIBLE_WEIGHT`] (such as one the validation fit set to zero).
    pub fn weights(&self) -> [f64; 3] {
        match &self.logits {
            None => self.fixed,
            Some(p) => {
                let v = p
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap_or_default();
                let logit = |i: usize| v.get(i).copied().unwrap_or(0.0) as f64 * LOGIT_SCALE;
                // Shifted by the largest logit in use, so that no share overflows.
                let top = (0..3)
                    .filter(|&i| self.used[i])
                    .map(logit)
                    .fold(f64::NEG_INFINITY, f64::max);
                let mut w = std::array::from_fn(|i| {
                    if self.used[i] {
                        (logit(i) - top).exp()
                    } else {
                        0.0
                    }
                });
                read_back_shares(&mut w);
                w
            }
        }
    }

    /// Sets the weights (id, image, text), renormalised over the modalities in use (a weight
    /// given to a modality not in use is ignored): the fixed weights, or the learned logits
    /// whose softmax gives them (a zero weight becomes 1e-9 there).
    pub fn set_weights(&mut self, weights: [f64; 3]) -> crate::error::Result<()> {
        let used: f64 = (0..3).filter(|&i| self.used[i]).map(|i| weights[i]).sum();
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || used <= 0.0 {
            return Err(crate::error::Error::Config(format!(
                "modality weights: {weights:?} must be finite, non-negative and not all zero over the modalities in use {:?}",
                self.used
            )));
        }
        let w = renormalise(weights, self.used);
        match &mut self.logits {
            Some(p) => {
                let device = p.val().device();
                let v: Vec<f32> = w
                    .iter()
                    .map(|&w| (w.max(1e-9).ln() / LOGIT_SCALE) as f32)
                    .collect();
                *p = Param::from_tensor(Tensor::from_data(TensorData::new(v, [3]), &device));
            }
            None => self.fixed = w,
        }
        Ok(())
    }

    /// Fuses per-modality log-probabilities: `log sum_m w_m exp(log_p_m)`.
    ///
    /// # Shapes
    /// - `terms`: `(modality index, [n, m])` for the modalities in use; output `[n, m]`
    pub fn fuse(&self, terms: Vec<(usize, Tensor<2>)>) -> Tensor<2> {
        match &self.logits {
            None => log_mix(terms.into_iter().map(|(i, t)| (self.fixed[i], t)).collect()),
            Some(p) => {
                if terms.len() == 1 {
                    return terms.into_iter().next().expect("one term").1;
                }
                let idx: Vec<usize> = terms.iter().map(|(i, _)| *i).collect();
                let device = terms[0].1.device();
                let picked = p.val().mul_scalar(LOGIT_SCALE).select(
                    0,
                    Tensor::from_data(
                        TensorData::new(idx.iter().map(|&i| i as i64).collect(), [idx.len()]),
                        &device,
                    ),
                );
                let log_w = log_softmax(picked, 0);
                log_mix_weighted(
                    terms
                        .into_iter()
                        .enumerate()
                        .map(|(k, (_, t))| (log_w.clone().narrow(0, k, 1).reshape([1, 1]), t))
                        .collect(),
                )
            }
        }
    }
}

/// `log(sum_i exp(log_w_i + t_i))` with log-weights given as `[1, 1]` tensors (learned).
///
/// # Shapes
/// - each log-weight `[1, 1]`, each term `[n, m]`; output `[n, m]`
pub fn log_mix_weighted(terms: Vec<(Tensor<2>, Tensor<2>)>) -> Tensor<2> {
    assert!(
        !terms.is_empty(),
        "log_mix_weighted needs at least one term"
    );
    let weighted: Vec<Tensor<2>> = terms.into_iter().map(|(w, t)| t + w).collect();
    if weighted.len() == 1 {
        return weighted.into_iter().next().expect("one term");
    }
    let stacked: Tensor<3> = Tensor::stack(weighted, 0);
    let max = stacked.clone().max_dim(0).detach();
    let summed = (stacked - max.clone()).exp().sum_dim(0).log();
    (summed + max).squeeze_dim(0)
}

/// `log(sum_i w_i * exp(t_i))` for same-shaped `terms`, with positive weights.
///
/// # Shapes
/// - each term: `[n, m]`; output `[n, m]`
///
/// Panics if `terms` is empty (callers always pass at least one modality or sub-sequence).
pub fn log_mix(terms: Vec<(f64, Tensor<2>)>) -> Tensor<2> {
    assert!(!terms.is_empty(), "log_mix needs at least one term");
    if terms.len() == 1 {
        let (w, t) = terms.into_iter().next().expect("one term");
        return t.add_scalar(w.ln());
    }
    let weighted: Vec<Tensor<2>> = terms
        .into_iter()
        .map(|(w, t)| t.add_scalar(w.ln()))
        .collect();
    let stacked: Tensor<3> = Tensor::stack(weighted, 0);
    let max = stacked.clone().max_dim(0).detach();
    let summed = (stacked - max.clone()).exp().sum_dim(0).log();
    (summed + max).squeeze_dim(0)
}

/// Row-wise `log(sum_j exp(x_ij))`.
///
/// # Shapes
/// - `x`: `[n, m]`; output `[n, 1]`
pub fn log_sum_exp(x: Tensor<2>) -> Tensor<2> {
    let max = x.clone().max_dim(1).detach();
    (x - max.clone()).exp().sum_dim(1).log() + max
}

/// Normalises the weights of the modalities present: `weights[i]` is kept where `present[i]`,
/// and the kept weights are rescaled to sum to 1. If all kept weights are zero, the present
/// modalities share equally.
pub fn renormalise(weights: [f64; 3], present: [bool; 3]) -> [f64; 3] {
    let total: f64 = (0..3).filter(|&i| present[i]).map(|i| weights[i]).sum();
    let count = present.iter().filter(|&&p| p).count();
    std::array::from_fn(|i| match (present[i], total > 0.0) {
        (false, _) => 0.0,
        (true, true) => weights[i] / total,
        (true, false) => 1.0 / count as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_device;
    use burn::tensor::{TensorData, Tolerance};

    #[test]
    fn log_mix_matches_direct_computation_and_survives_underflow() {
        let device = test_device();
        let a = Tensor::<2>::from_data(TensorData::new(vec![-1.0f32, -2.0], [1, 2]), &device);
        let b = Tensor::<2>::from_data(TensorData::new(vec![-3.0f32, -0.5], [1, 2]), &device);
        let out = log_mix(vec![(0.25, a), (0.75, b)]);
        let expect = |x: f64, y: f64| (0.25 * x.exp() + 0.75 * y.exp()).ln() as f32;
        out.to_data().assert_approx_eq::<f32>(
            &TensorData::new(vec![expect(-1.0, -3.0), expect(-2.0, -0.5)], [1, 2]),
            Tolerance::absolute(1e-5),
        );
        // exp(-1000) underflows in f32; the log-space mixture does not.
        let a = Tensor::<2>::from_data(TensorData::new(vec![-1000.0f32], [1, 1]), &device);
        let b = Tensor::<2>::from_data(TensorData::new(vec![-1001.0f32], [1, 1]), &device);
        let v: f32 = log_mix(vec![(0.5, a), (0.5, b)]).into_scalar();
        let expected = -1000.0 + ((0.5 + 0.5 * (-1.0f64).exp()).ln()) as f32;
        assert!((v - expected).abs() < 1e-3, "{v} vs {expected}");
    }

    #[test]
    fn set_weights_renormalises_and_round_trips_fixed_and_learned() {
        let device = test_device();
        let used = [true, false, true];
        for learnable in [false, true] {
            let mut f = ModalityFusionConfig::new()
                .with_learnable(learnable)
                .init(used, &device);
            f.set_weights([3.0, 5.0, 1.0]).unwrap();
            let w = f.weights();
            assert!(
                (w[0] - 0.75).abs() < 1e-6 && w[1] == 0.0 && (w[2] - 0.25).abs() < 1e-6,
                "{w:?}"
            );
            // A zero weight reads back as exactly zero, fixed or learned.
            f.set_weights([0.0, 0.0, 1.0]).unwrap();
            assert_eq!(f.weights(), [0.0, 0.0, 1.0]);
            let err = f.set_weights([0.0, 1.0, 0.0]).unwrap_err().to_string();
            assert!(err.contains("not all zero"), "{err}");
            assert!(f.set_weights([f64::NAN, 0.0, 1.0]).is_err());
            assert!(f.set_weights([-1.0, 0.0, 1.0]).is_err());
        }
    }

    #[test]
    fn log_sum_exp_is_stable() {
        let device = test_device();
        let x = Tensor::<2>::from_data(TensorData::new(vec![1000.0f32, 1000.0], [1, 2]), &device);
        let v: f32 = log_sum_exp(x).into_scalar();
        assert!((v - (1000.0 + 2f32.ln())).abs() < 1e-3);
    }

    #[test]
    fn fusion_head_fixed_and_learned_agree_at_start() {
        let device = test_device();
        let a = Tensor::<2>::from_data(TensorData::new(vec![-1.0f32, -2.0], [1, 2]), &device);
        let b = Tensor::<2>::from_data(TensorData::new(vec![-3.0f32, -0.5], [1, 2]), &device);
        let used = [true, false, true];
        let fixed = ModalityFusionConfig::new().init(used, &device);
        let learned = ModalityFusionConfig::new()
            .with_learnable(true)
            .init(used, &device);
        assert_eq!(fixed.weights(), [2.0 / 3.0, 0.0, 1.0 / 3.0]);
        let w = learned.weights();
        assert!((w[0] - 2.0 / 3.0).abs() < 1e-6 && w[1] == 0.0, "{w:?}");
        let f = fixed.fuse(vec![(0, a.clone()), (2, b.clone())]);
        let l = learned.fuse(vec![(0, a), (2, b)]);
        f.into_data()
            .assert_approx_eq::<f32>(&l.into_data(), Tolerance::absolute(1e-5));
    }

    #[test]
    fn renormalise_over_present_modalities() {
        assert_eq!(
            renormalise([0.5, 0.25, 0.25], [true, true, true]),
            [0.5, 0.25, 0.25]
        );
        assert_eq!(
            renormalise([0.5, 0.25, 0.25], [true, false, true]),
            [2.0 / 3.0, 0.0, 1.0 / 3.0]
        );
        assert_eq!(
            renormalise([0.5, 0.25, 0.25], [true, false, false]),
            [1.0, 0.0, 0.0]
        );
        assert_eq!(
            renormalise([0.0, 0.0, 1.0], [true, true, false]),
            [0.5, 0.5, 0.0]
        );
    }
}
