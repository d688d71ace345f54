//! The typed experiment configuration, saved as `config.json` beside every checkpoint so that any
//! result can be reproduced from its run folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::recbole::DEFAULT_MAX_HISTORY;
use crate::data::{
    C2dsrOptions, Dataset, DomainId, Format, Protocol, RecboleOptions, SyntheticConfig,
    detect_format, load_c2dsr, load_recbole,
};
use crate::error::{Error, Result};
use crate::features::FeatureMatrix;
use crate::model::ModelConfig;

/// Where the interactions come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSource {
    /// A dataset directory in C2DSR or RecBole format.
    Directory {
        /// The directory.
        path: PathBuf,
        /// Longest valid/test history of the RecBole leave-one-out split.
        #[serde(default = "default_max_history")]
        max_history: usize,
    },
    /// The built-in synthetic generator (its image and text vectors are used as features unless
    /// feature files are given).
    Synthetic(SyntheticConfig),
}

fn default_max_history() -> usize {
    DEFAULT_MAX_HISTORY
}

impl Default for DataSource {
    fn default() -> Self {
        DataSource::Synthetic(SyntheticConfig::default())
    }
}

/// Paths of the frozen feature files (`[items, dim]` float32, `.npy` or `.safetensors`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureSources {
    /// Image features (E_img).
    pub image: Option<PathBuf>,
    /// Text features (E_tex); LLM-enriched text is a different file.
    pub text: Option<PathBuf>,
}

/// How negatives of the sampled softmax are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sampler {
    /// Uniform over the target domain.
    Uniform,
    /// Proportional to `(training count + 1) ^ power` (0.75 is word2vec's choice).
    Popularity {
        /// Exponent of the counts.
        power: f64,
    },
}

/// The training objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Objective {
    /// Softmax over every item of the target domain (the paper's).
    Full,
    /// Softmax over the target and `negatives` shared negatives per domain and step, with
    /// log-Q correction and accidental hits removed.
    Sampled {
        /// Negatives per domain and step.
        negatives: usize,
        /// How they are drawn.
        sampler: Sampler,
    },
}

/// Which domains the loss targets (Eq. 10 is written for target X; with both, the two losses
/// are summed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetDomains {
    /// Both domains (the default).
    Both,
    /// Domain X only.
    X,
    /// Domain Y only.
    Y,
}

impl TargetDomains {
    /// The domains as a list.
    pub fn domains(self) -> Vec<DomainId> {
        match self {
            TargetDomains::Both => DomainId::BOTH.to_vec(),
            TargetDomains::X => vec![DomainId::X],
            TargetDomains::Y => vec![DomainId::Y],
        }
    }
}

/// Optimisation and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Adam learning rate. Default 0.001.
    pub learning_rate: f64,
    /// L2 regularisation coefficient (added to the gradient, as PyTorch's Adam weight_decay).
    /// Default 0.00001.
    pub l2: f64,
    /// Adam epsilon. Default 1e-8 (PyTorch's; Burn's default is 1e-5).
    pub adam_epsilon: f64,
    /// Sequences per batch. Default 256.
    pub batch_size: usize,
    /// Maximum number of epochs. Default 100.
    pub epochs: usize,
    /// Stop after this many epochs without a better validation MRR. Default 10.
    pub patience: usize,
    /// Seed of initialisation, shuffling, dropout and sampling. Default 42.
    pub seed: u64,
    /// The objective. Default: full softmax.
    pub objective: Objective,
    /// Target domains of the loss. Default: both.
    pub target_domains: TargetDomains,
    /// Evaluate on the validation split every this many epochs. Default 1.
    pub eval_every: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            l2: 1e-5,
            adam_epsilon: 1e-8,
            batch_size: 256,
            epochs: 100,
            patience: 10,
            seed: 42,
            objective: Objective::Full,
            target_domains: TargetDomains::Both,
            eval_every: 1,
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Protocol of validation (early stopping) and of the final test. Default: C2DSR's.
    pub protocol: Protocol,
    /// Seed of the sampled negatives. Default 2024.
    pub seed: u64,
    /// Negatives per example of the sampled protocols. Default 999.
    pub negatives: usize,
    /// Examples per evaluation batch. Default 256.
    pub batch_size: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            protocol: Protocol::C2dsr,
            seed: 2024,
            negatives: crate::data::sampling::DEFAULT_NEGATIVES,
            batch_size: 256,
        }
    }
}

/// Everything that defines a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The data.
    pub data: DataSource,
    /// Frozen feature files.
    pub features: FeatureSources,
    /// The model.
    pub model: ModelConfig,
    /// Optimisation.
    pub train: TrainConfig,
    /// Evaluation.
    pub eval: EvalConfig,
}

/// A loaded dataset with its optional feature matrices.
#[derive(Debug, Clone)]
pub struct LoadedData {
    /// The dataset.
    pub dataset: Dataset,
    /// Image features, if any.
    pub image: Option<FeatureMatrix>,
    /// Text features, if any.
    pub text: Option<FeatureMatrix>,
}

impl ExperimentConfig {
    /// Reads a config file (JSON; unknown keys are errors).
    pub fn load(path: &Path) -> Result<Self> {
        crate::io::read_json(path)
    }

    /// Writes the config as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::write_json(path, self)
    }

    /// Checks the values no type can.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let t = &self.train;
        if t.batch_size == 0 || t.eval_every == 0 || t.epochs == 0 {
            return Err(Error::Config(
                "train: batch_size, epochs and eval_every must be positive".into(),
            ));
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let l2_ok = t.l2.is_finite() && t.l2 >= 0.0;
        if !(positive(t.learning_rate) && positive(t.adam_epsilon) && l2_ok) {
            return Err(Error::Config(
                "train: learning_rate and adam_epsilon must be positive, l2 non-negative".into(),
            ));
        }
        if let Objective::Sampled { negatives, sampler } = &t.objective {
            if *negatives == 0 {
                return Err(Error::Config(
                    "train: a sampled objective needs negatives > 0".into(),
                ));
            }
            if let Sampler::Popularity { power } = sampler
                && !power.is_finite()
            {
                return Err(Error::Config(
                    "train: the popularity power must be finite".into(),
                ));
            }
        }
        if self.eval.batch_size == 0 || self.eval.negatives == 0 {
            return Err(Error::Config(
                "eval: batch_size and negatives must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Loads the dataset and the feature matrices the config names (checking each has one row
    /// per item).
    pub fn load_data(&self) -> Result<LoadedData> {
        let (dataset, mut image, mut text) = match &self.data {
            DataSource::Directory { path, max_history } => {
                let dataset = match detect_format(path)? {
                    Format::C2dsr => load_c2dsr(path, &C2dsrOptions::default())?,
                    Format::Recbole => load_recbole(
                        path,
                        &RecboleOptions {
                            max_history: *max_history,
                            ..Default::default()
                        },
                    )?,
                };
                (dataset, None, None)
            }
            DataSource::Synthetic(cfg) => {
                let data = cfg.generate()?;
                (data.dataset, Some(data.image), Some(data.text))
            }
        };
        let n = dataset.num_items();
        if let Some(p) = &self.features.image {
            image = Some(FeatureMatrix::load(p, Some(n))?);
        }
        if let Some(p) = &self.features.text {
            text = Some(FeatureMatrix::load(p, Some(n))?);
        }
        Ok(LoadedData {
            dataset,
            image,
            text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut cfg = ExperimentConfig::default();
        cfg.train.objective = Objective::Sampled {
            negatives: 100,
            sampler: Sampler::Popularity { power: 0.75 },
        };
        cfg.data = DataSource::Directory {
            path: "data/x".into(),
            max_history: 20,
        };
        cfg.save(&path).unwrap();
        assert_eq!(ExperimentConfig::load(&path).unwrap(), cfg);

        std::fs::write(&path, r#"{"train": {"learning_rat": 0.1}}"#).unwrap();
        let err = ExperimentConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("learning_rat"),
            "{err}"
        );
    }

    #[test]
    fn partial_files_fill_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(
            &path,
            r#"{"train": {"epochs": 3}, "model": {"id_dim": 64}}"#,
        )
        .unwrap();
        let cfg = ExperimentConfig::load(&path).unwrap();
        assert_eq!(cfg.train.epochs, 3);
        assert_eq!(cfg.train.batch_size, 256);
        assert_eq!(cfg.model.id_dim, 64);
        assert_eq!(cfg.model.lambda1, 0.3);
    }

    #[test]
    fn validation_catches_bad_values() {
        let mut cfg = ExperimentConfig::default();
        cfg.model.alpha = 0.8;
        cfg.model.beta = 0.5;
        assert!(cfg.validate().unwrap_err().to_string().contains("alpha"));
        let mut cfg = ExperimentConfig::default();
        cfg.train.batch_size = 0;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn missing_feature_file_is_named() {
        let cfg = ExperimentConfig {
            data: DataSource::Synthetic(SyntheticConfig {
                users: 20,
                items_x: 10,
                items_y: 10,
                topics: 2,
                ..Default::default()
            }),
            features: FeatureSources {
                image: Some("/nonexistent/img.npy".into()),
                text: None,
            },
            ..Default::default()
        };
        let err = cfg.load_data().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/img.npy"), "{err}");
    }
}
