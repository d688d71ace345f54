//! Training: the typed experiment configuration and the training engine.

pub mod archive;
pub mod average;
pub mod batching;
pub mod checkpoint;
pub mod config;
mod epoch;
pub mod experiment;
pub mod log;
mod sampler;
pub mod step;
mod stopping;
pub mod trainer;

pub use archive::{Archived, archive_experiment};
pub use average::WeightAverageConfig;
pub use batching::Batching;
pub use checkpoint::{RunPaths, TrainState};
pub use config::{
    DataSource, EvalConfig, ExperimentConfig, FeatureSources, LoadedData, Objective, Optimizer,
    Plateau, Preset, Sampler, TargetDomains, TrainConfig,
};
pub use log::EpochLog;
pub use step::StepProfile;
pub use trainer::{
    DomainWeightFit, ModalityWeightFit, PopularityFit, RowShrinkageFit, RunFits, TrainOptions,
    TrainReport, feature_share, fit_run, fit_run_domain_weights, merged_share, train,
};
