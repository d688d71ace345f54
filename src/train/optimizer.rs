//! The optimizer of a training configuration: Adam with coupled L2 or AdamW with decoupled
//! decay, over every parameter or, with `train.decay_all` off, decaying the weight matrices and
//! embedding tables only.

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer};
use burn::tensor::Tensor;

use super::config::{Optimizer, TrainConfig};
use crate::model::LlmEmf;

/// A fresh optimizer (no moments yet) for `model`'s parameters as they are now: build it after
/// loading a checkpoint, as the spared parameters are told apart by their ids.
pub(crate) fn new_optimizer(tc: &TrainConfig, model: &LlmEmf) -> ModuleOptimizer {
    with_spared(tc, (!tc.decay_all).then(|| spared_parameters(model)))
}

/// The parameters `decay_all = false` spares: the vectors (biases, norms' gains and shifts,
/// log-scales, the modality weights' logits) and the domain weights' logits.
pub(crate) fn spared_parameters(model: &LlmEmf) -> Vec<ParamId> {
    let mut spared = vector_parameters(model);
    spared.extend(model.domain_loss.logits.as_ref().map(|p| p.id));
    spared
}

/// The configured optimizer, with no decay on the parameters `spared` names.
fn with_spared(tc: &TrainConfig, spared: Option<Vec<ParamId>>) -> ModuleOptimizer {
    let spared = spared.map(ParamGroup::from_ids);
    match tc.optimizer {
        Optimizer::Adam => {
            let adam = |l2: f64| {
                AdamConfig::new()
                    .with_epsilon(tc.adam_epsilon as f32)
                    .with_weight_decay((l2 > 0.0).then(|| WeightDecayConfig::new(l2 as f32)))
            };
            let optim = adam(tc.l2).init();
            match spared {
                Some(group) => optim.with_group(group, adam(0.0).build(), None),
                None => optim,
            }
        }
        Optimizer::AdamW { weight_decay } => {
            let adam_w = |decay: f64| {
                AdamWConfig::new()
                    .with_epsilon(tc.adam_epsilon as f32)
                    .with_weight_decay(decay as f32)
            };
            let optim = adam_w(weight_decay).init();
            match spared {
                Some(group) => optim.with_group(group, adam_w(0.0).build(), None),
                None => optim,
            }
        }
    }
}

/// The ids of `module`'s float parameters of rank one (biases, norms' gains and shifts,
/// log-scales, logits).
pub(crate) fn vector_parameters<M: Module>(module: &M) -> Vec<ParamId> {
    struct Vectors(Vec<ParamId>);
    impl ModuleVisitor for Vectors {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D == 1 {
                self.0.push(param.id);
            }
        }
    }
    let mut vectors = Vectors(Vec::new());
    module.visit(&mut vectors);
    vectors.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_device;
    use burn::module::Module;
    use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
    use burn::optim::GradientsParams;

    #[derive(Module, Debug)]
    struct Tiny {
        linear: Linear,
        norm: LayerNorm,
    }

    /// A parameter's values on the host.
    fn values<const D: usize>(p: &Param<Tensor<D>>) -> Vec<f32> {
        p.val().into_data().try_to_vec::<f32>().unwrap()
    }

    /// One AdamW step with a zero gradient everywhere: only the decay moves a parameter.
    fn decayed_after_one_step(decay_all: bool) -> (Vec<f32>, Vec<f32>, Tiny) {
        let device = test_device().autodiff();
        let tiny = Tiny {
            linear: LinearConfig::new(3, 2).init(&device),
            norm: LayerNormConfig::new(2).init(&device),
        };
        let tc = TrainConfig {
            optimizer: Optimizer::AdamW { weight_decay: 0.5 },
            l2: 0.0,
            decay_all,
            ..TrainConfig::default()
        };
        let spared = (!decay_all).then(|| vector_parameters(&tiny));
        let mut optim = with_spared(&tc, spared);
        let x = Tensor::<2>::ones([1, 3], &device);
        let loss = tiny.norm.forward(tiny.linear.forward(x)).sum() * 0.0;
        let grads = GradientsParams::from_grads(loss.backward(), &tiny);
        let (weight, gamma) = (values(&tiny.linear.weight), values(&tiny.norm.gamma));
        let stepped = optim.step(0.1, tiny, grads);
        (weight, gamma, stepped)
    }

    #[test]
    fn the_model_spares_its_scales_and_logits_and_decays_its_tables() {
        let data = crate::test_data(20, 10, 12);
        let mut config = crate::train::ExperimentConfig::preset(crate::train::Preset::Ids).model;
        config.id_dim = 8;
        let device = test_device();
        let model = LlmEmf::new(
            &config,
            &data.dataset,
            &crate::model::ItemFeatures::none(),
            &device,
        )
        .unwrap();
        let spared = spared_parameters(&model);
        let log_scale = model.log_scale.as_ref().expect("a learned temperature").id;
        let logits = model.domain_loss.logits.as_ref().expect("learned").id;
        assert!(spared.contains(&log_scale) && spared.contains(&logits));
        let rows = model.items.as_ref().unwrap().rows.weight.id;
        assert!(!spared.contains(&rows));
        // Everything else spared is a vector: the matrices are the rest of the model.
        assert_eq!(spared.len(), vector_parameters(&model).len() + 1);
    }

    #[test]
    fn vectors_are_the_rank_one_parameters() {
        let device = test_device();
        let tiny = Tiny {
            linear: LinearConfig::new(3, 2).init(&device),
            norm: LayerNormConfig::new(2).init(&device),
        };
        let mut found = vector_parameters(&tiny);
        found.sort_by_key(|id| id.val());
        let mut expected = vec![
            tiny.linear.bias.as_ref().unwrap().id,
            tiny.norm.gamma.id,
            tiny.norm.beta.as_ref().unwrap().id,
        ];
        expected.sort_by_key(|id| id.val());
        assert_eq!(found, expected);
    }

    #[test]
    fn decay_all_off_spares_the_vectors_and_decays_the_matrices() {
        for decay_all in [true, false] {
            let (weight, gamma, stepped) = decayed_after_one_step(decay_all);
            let now = values(&stepped.linear.weight);
            // AdamW multiplies by 1 - lr * decay = 0.95; a zero gradient adds no step.
            for (a, b) in weight.iter().zip(&now) {
                assert!((a * 0.95 - b).abs() < 1e-6, "{a} -> {b}");
            }
            let gamma_now = values(&stepped.norm.gamma);
            let factor = if decay_all { 0.95 } else { 1.0 };
            for (a, b) in gamma.iter().zip(&gamma_now) {
                assert!(
                    (a * factor - b).abs() < 1e-6,
                    "decay_all {decay_all}: {a} -> {b}"
                );
            }
        }
    }
}
