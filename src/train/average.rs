//! An exponential moving average of the weights over the training steps (Polyak averaging with
//! a horizon): `avg <- d avg + (1 - d) w` after every step, with `d` set by a half-life in
//! epochs. With [`crate::train::TrainConfig::weight_average`] on, validation, model selection
//! and the saved model use the average; the optimizer keeps stepping the raw weights.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::LlmEmf;

/// The moving average of the weights (`train.weight_average`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightAverageConfig {
    /// Epochs after which a step's weights count half as much in the average as the latest
    /// step's: the per-step decay is `0.5^(1 / (half_life_epochs * steps per epoch))`, so the
    /// horizon does not change with the batch size.
    pub half_life_epochs: f64,
}

impl WeightAverageConfig {
    /// Checks the half-life is positive and finite.
    pub fn validate(&self) -> Result<()> {
        if !(self.half_life_epochs.is_finite() && self.half_life_epochs > 0.0) {
            return Err(Error::Config(format!(
                "train.weight_average.half_life_epochs must be positive, got {}",
                self.half_life_epochs
            )));
        }
        Ok(())
    }

    /// The per-step decay for epochs of `steps_per_epoch` steps.
    pub fn decay(&self, steps_per_epoch: usize) -> f64 {
        0.5f64.powf(1.0 / (self.half_life_epochs * steps_per_epoch.max(1) as f64))
    }
}

/// The averaged model, kept without autodiff on the evaluation device.
#[derive(Debug, Clone)]
pub(super) struct WeightAverage {
    model: Option<LlmEmf>,
    decay: f64,
}

impl WeightAverage {
    /// An average that starts at the weights of the first step it is given. (Not at the
    /// initial weights: reading a model's weights before its first step would fix the order in
    /// which its lazily initialised parameters draw from the random generator, and change the
    /// run.)
    pub fn new(decay: f64) -> Self {
        Self { model: None, decay }
    }

    /// Resumes from a saved average (a model of the same structure, without autodiff).
    pub fn resume(model: LlmEmf, decay: f64) -> Self {
        Self {
            model: Some(model),
            decay,
        }
    }

    /// Starts the average again at `model`'s weights (used when training goes back to the
    /// best weights, see [`crate::train::Plateau::restore_best`]). Not empty, so that the
    /// checkpoint of that epoch holds an average to resume from.
    pub fn restart_at(&mut self, model: &LlmEmf) {
        self.model = Some(model.valid());
    }

    /// Folds `model`'s current weights into the average. Parameters are matched by id, so
    /// the average must come from `model` (or from a saved average of it).
    pub fn update(&mut self, model: &LlmEmf) {
        let latest = model.valid();
        self.model = Some(match self.model.take() {
            None => latest,
            Some(avg) => {
                let mut collect = Collect(HashMap::new());
                latest.visit(&mut collect);
                avg.map(&mut Blend {
                    latest: collect.0,
                    decay: self.decay,
                })
            }
        });
    }

    /// The averaged model (`None` before the first step).
    pub fn model(&self) -> Option<&LlmEmf> {
        self.model.as_ref()
    }
}

/// Every float parameter, flattened, by id.
struct Collect(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let n = value.shape().num_elements();
        self.0.insert(param.id, value.reshape([n]));
    }
}

/// `avg <- d avg + (1 - d) latest`, parameter by parameter.
struct Blend {
    latest: HashMap<ParamId, Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(latest) = self.latest.remove(&param.id) else {
            return param;
        };
        let d = self.decay;
        param.map(|avg| {
            let dims = avg.dims();
            avg.mul_scalar(d) + latest.reshape(dims).mul_scalar(1.0 - d)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::test_device;

    #[test]
    fn decay_halves_a_step_after_the_half_life() {
        let c = WeightAverageConfig {
            half_life_epochs: 2.0,
        };
        let d = c.decay(50);
        assert!((d.powi(100) - 0.5).abs() < 1e-12);
        assert!(
            WeightAverageConfig {
                half_life_epochs: 0.0
            }
            .validate()
            .is_err()
        );
        assert!(
            WeightAverageConfig {
                half_life_epochs: f64::NAN
            }
            .validate()
            .is_err()
        );
    }

    /// Every float parameter, flattened, by id.
    fn params(model: &LlmEmf) -> HashMap<ParamId, Vec<f32>> {
        let mut c = Collect(HashMap::new());
        model.visit(&mut c);
        c.0.into_iter()
            .map(|(id, t)| (id, t.to_data().try_to_vec::<f32>().expect("f32 data")))
            .collect()
    }

    /// Checks every parameter of `avg` is `start`'s plus `shift`.
    fn assert_shifted(start: &HashMap<ParamId, Vec<f32>>, avg: &LlmEmf, shift: f32) {
        let got = params(avg);
        assert_eq!(got.len(), start.len());
        for (id, before) in start {
            for (b, a) in before.iter().zip(&got[id]) {
                assert!((a - (b + shift)).abs() < 1e-5, "{a} vs {b} + {shift}");
            }
        }
    }

    #[test]
    fn update_blends_every_parameter_by_the_decay() {
        let device = test_device();
        let data = crate::test_data(20, 15, 15);
        let features = crate::test_features(&data, &device);
        let config = ModelConfig {
            id_dim: 8,
            max_len: 8,
            ..ModelConfig::default()
        };
        let model = LlmEmf::new(&config, &data.dataset, &features, &device).expect("model");
        let mut avg = WeightAverage::new(0.75);
        avg.update(&model);
        let start = params(&model);
        assert!(start.len() > 10, "{} parameters", start.len());
        assert_shifted(&start, avg.model().expect("started"), 0.0);
        // Every weight moved by +1: the average moves by a quarter.
        struct AddOne;
        impl ModuleMapper for AddOne {
            fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
                p.map(|t| t.add_scalar(1.0))
            }
        }
        let moved = model.clone().map(&mut AddOne);
        avg.update(&moved);
        assert_shifted(&start, avg.model().expect("started"), 0.25);
        // Folding the same weights in again moves it a quarter of the remaining gap.
        avg.update(&moved);
        assert_shifted(&start, avg.model().expect("started"), 0.4375);
    }
}
