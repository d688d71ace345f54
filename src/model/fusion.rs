//! Log-space mixtures: `log(sum_i w_i * exp(t_i))` without underflow.
//!
//! The paper mixes probabilities (Eq. 8: `a P_id + b P_img + (1 - a - b) P_tex`; Eq. 11:
//! `P^D + l1 P^other + l2 P^{X+Y}`). Over tens of thousands of items those probabilities are
//! tiny, so every mixture here works on log-probabilities with the max trick.

use burn::tensor::Tensor;

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
    fn log_sum_exp_is_stable() {
        let device = test_device();
        let x = Tensor::<2>::from_data(TensorData::new(vec![1000.0f32, 1000.0], [1, 2]), &device);
        let v: f32 = log_sum_exp(x).into_scalar();
        assert!((v - (1000.0 + 2f32.ln())).abs() < 1e-3);
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
