//! Training: the typed experiment configuration and the training loop.

pub mod config;
pub mod trainer;

pub use config::{
    DataSource, EvalConfig, ExperimentConfig, FeatureSources, LoadedData, Objective, Sampler,
    TargetDomains, TrainConfig,
};
pub use trainer::{EpochLog, RunPaths, TrainOptions, TrainReport, TrainState, train};
