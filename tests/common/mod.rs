//! Helpers shared by the integration tests: a tiny synthetic experiment and silent training.

use llm_emf::data::SyntheticConfig;
use llm_emf::train::{DataSource, ExperimentConfig, Preset, TrainOptions};

/// A tiny synthetic experiment on top of `preset`: trains in a fraction of a second.
pub fn tiny_config(preset: Preset, epochs: usize) -> ExperimentConfig {
    let mut cfg = ExperimentConfig::preset(preset);
    cfg.data = DataSource::Synthetic(SyntheticConfig {
        users: 120,
        items_x: 40,
        items_y: 50,
        topics: 4,
        feature_dim: 8,
        ..Default::default()
    });
    cfg.model.id_dim = 16;
    cfg.model.max_len = 10;
    cfg.model.layers = 1;
    cfg.train.epochs = epochs;
    cfg.train.batch_size = 32;
    cfg.eval.negatives = 20;
    cfg
}

/// Training options that print nothing.
pub fn quiet() -> TrainOptions {
    TrainOptions {
        progress: false,
        verbose: false,
        profile: false,
    }
}
