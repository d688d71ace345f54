//! Training: the typed experiment configuration, the training engine, the validation fits
//! made after training, and multi-seed experiments.

pub mod archive;
pub mod batching;
pub mod checkpoint;
pub mod config;
mod epoch;
pub mod experiment;
pub mod fit;
pub mod log;
mod optimizer;
mod presets;
mod sampler;
pub mod step;
mod stopping;
pub mod trainer;

pub use archive::{Archived, archive_experiment};
pub use batching::Batching;
pub use checkpoint::{RunPaths, TrainState};
pub use config::{
    Contrastive, DataSource, EvalConfig, ExperimentConfig, FeatureSources, HoldOut, LoadedData,
    Objective, Optimizer, Plateau, Preset, Sampler, TargetDomains, TrainConfig,
};
pub use fit::{
    DomainWeightFit, ModalityWeightFit, RowShrinkageFit, RunFits, feature_share, fit_run,
    merged_share, rescore_run,
};
pub use log::EpochLog;
pub use step::StepProfile;
pub use trainer::{TrainOptions, TrainReport, train};
