//! The presets: named starting points of a configuration ([`Preset`]), each the best
//! measured setting for its use (README, "The models"; docs/results.md), and the
//! configuration each stands for ([`ExperimentConfig::preset`]).

use super::config::{
    DataSource, EvalConfig, ExperimentConfig, FeatureSources, Optimizer, TrainConfig,
};
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use serde::{Deserialize, Serialize};

/// A named starting point for a configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The paper's model and recipe, implemented faithfully (Eq. 10 loss, fixed alpha/beta and
    /// lambdas, Adam with L2, full softmax).
    Paper,
    /// The library's general setting (docs/model.md, "Beyond the paper"): the paper's model
    /// trained on the score it ranks with, with learned weights and a stronger recipe, at
    /// q = 64: fast, for any data (and the quickstart's synthetic world).
    #[default]
    Recommended,
    /// The best measured setting for data without item titles: `recommended` widened to
    /// q = 256 with IDs only, AdamW's decoupled weight decay at 0.5 (twice ABXI's per-step
    /// decay: its 5 at learning rate 1e-4), dropout 0.4 (ABXI's is 0.5), patience 8 and one
    /// shard per batch, fresh rows for
    /// the items never seen in training, drawn the way validation prefers
    /// (`train.fit_unseen_rows`), and the
    /// learned rows of the items seen in training leaning towards their domain's mean trained
    /// row by a prior count chosen on validation (`train.fit_row_shrinkage`).
    Ids,
    /// The best measured setting for data with item titles: `ids` (at weight decay 0.01 and
    /// dropout 0.5, the values its title rows were measured with) with each item's title
    /// vector mapped into its ID row (`model.id_text`, rows started at the title,
    /// `id_row_init` 0.1) and the learned rows shrunk towards their titles instead, by a prior
    /// count chosen on validation (`train.fit_row_shrinkage`, per domain where the two domains
    /// disagree); in a domain kept whole, the never-seen items' learned parts drawn afresh as
    /// validation allows (`train.fit_unseen_rows`). Needs `features.text` (title vectors from
    /// `llm-emf embed --text-encoder minilm`).
    Titles,
}

impl Preset {
    /// Every preset, in the order the documentation lists them.
    pub const ALL: [Preset; 4] = [
        Preset::Paper,
        Preset::Recommended,
        Preset::Ids,
        Preset::Titles,
    ];
}

impl std::str::FromStr for Preset {
    type Err = Error;

    /// A preset by its name (`paper`, `recommended`, `ids`, `titles`).
    fn from_str(s: &str) -> Result<Self> {
        Preset::ALL
            .into_iter()
            .find(|p| p.to_string() == s)
            .ok_or_else(|| {
                let names: Vec<String> = Preset::ALL.iter().map(Preset::to_string).collect();
                Error::Config(format!(
                    "unknown preset {s:?}: expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Preset::Paper => "paper",
            Preset::Recommended => "recommended",
            Preset::Ids => "ids",
            Preset::Titles => "titles",
        })
    }
}

impl ExperimentConfig {
    /// The configuration of a preset (on the synthetic data).
    pub fn preset(preset: Preset) -> Self {
        match preset {
            Preset::Paper => Self {
                preset,
                data: DataSource::default(),
                features: FeatureSources::default(),
                model: ModelConfig::default(),
                train: TrainConfig::default(),
                eval: EvalConfig::default(),
                hold_out: None,
            },
            Preset::Recommended => Self {
                preset,
                data: DataSource::default(),
                features: FeatureSources::default(),
                model: ModelConfig::recommended(),
                train: TrainConfig::recommended(),
                eval: EvalConfig::default(),
                hold_out: None,
            },
            Preset::Ids => {
                let mut c = Self::preset(Preset::Recommended);
                c.preset = preset;
                c.model.id_dim = 256;
                c.train.optimizer = Optimizer::AdamW { weight_decay: 0.5 };
                c.model.modalities.image = false;
                c.model.modalities.text = false;
                c.train.patience = 8;
                c.train.parallel_shards = 1;
                c.train.fit_unseen_rows = true;
                c.train.fit_row_shrinkage = true;
                c.model.skip_untrained_inputs = true;
                c.model.dropout = 0.4;
                c
            }
            Preset::Titles => {
                let mut c = Self::preset(Preset::Ids);
                c.preset = preset;
                c.model.id_text = true;
                c.model.id_row_init = 0.1;
                c.train.optimizer = Optimizer::AdamW { weight_decay: 0.01 };
                c.model.dropout = 0.5;
                c.train.fit_row_shrinkage = true;
                // The title rows place the items never seen in training as inputs; as
                // candidates too where the shrinkage is chosen, and where validation keeps a
                // domain's rows whole, their learned parts are drawn afresh (after the
                // shrinkage fit; kept only as validation allows).
                c.train.fit_unseen_rows = true;
                c.model.skip_untrained_inputs = false;
                c
            }
        }
    }
}
