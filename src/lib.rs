//! # llm_emf
//!
//! LLM-EMF (LLM-Enhanced Multimodal Fusion for Cross-Domain Sequential Recommendation, Wu et
//! al.), built on [Burn](https://burn.dev): load two-domain interaction data, train the model,
//! evaluate it under the paper's protocol (and ABXI's, and full ranking), recommend items.
//!
//! The recipe reads config, data, model, fit, evaluate:
//!
//! ```no_run
//! use llm_emf::backend;
//! use llm_emf::data::{DomainId, Protocol, Split, SyntheticConfig};
//! use llm_emf::recommend::TrainedRun;
//! use llm_emf::train::{DataSource, ExperimentConfig, TrainOptions, train};
//!
//! # fn main() -> llm_emf::Result<()> {
//! let device = backend::cpu()?;
//! let mut config = ExperimentConfig::default();
//! config.data = DataSource::Synthetic(SyntheticConfig::default());
//! config.train.epochs = 3;
//! let data = config.load_data()?;
//! let report = train(&config, &data, "runs/demo".as_ref(), &device, &TrainOptions::default())?;
//! println!("{}", report.test);
//!
//! let run = TrainedRun::load("runs/demo".as_ref(), &device)?;
//! println!("{}", run.evaluate(Split::Test, Protocol::Full, None)?);
//! let top = run.recommend(&[3, 1500, 7], DomainId::Y, 10)?;
//! # Ok(())
//! # }
//! ```
//!
//! # Modules
//! - [`data`]: the dataset, its two readers (C2DSR, RecBole), the synthetic generator, batching
//!   and evaluation candidates;
//! - [`model`]: the building blocks (attention block, sequence encoder, fusion head, domain
//!   loss) and the LLM-EMF model;
//! - [`train`]: the experiment configuration, presets, the training engine and multi-seed
//!   experiments;
//! - [`eval`]: metrics and the evaluator;
//! - [`recommend`]: loading a trained run or model folder, evaluating it, recommending
//!   ([`recommend::Recommender`] for services);
//! - [`model_dir`]: a trained model as a self-contained, versioned, checksummed folder;
//! - [`report`]: tables (and, with `report`, SVG charts) of runs and experiments;
//! - [`features`]: frozen feature matrices and the encoders that make them (CLIP's image and
//!   text towers and all-MiniLM-L6-v2 with `encoders`, a hashing encoder), with `embed` running
//!   them over a dataset;
//! - `enrich` (with the `enrich` feature): LLM enrichment of item titles through an
//!   OpenAI-compatible endpoint;
//! - [`backend`]: choosing a device by name.
//!
//! # Crate features
#![doc = document_features::document_features!()]
//!
//! A service that trains, evaluates or serves needs none of the last five:
//! `llm_emf = { version = "0.1", default-features = false, features = ["flex"] }` builds the
//! model, training, evaluation, [`recommend::Recommender`] and [`model_dir`]. The library logs
//! through `tracing`; install a subscriber to see its events.
#![deny(missing_docs)]

pub mod backend;
pub mod data;
#[cfg(feature = "enrich")]
pub mod enrich;
pub mod error;
pub mod eval;
mod fastmath;
pub mod features;
mod io;
pub mod model;
pub mod model_dir;
mod progress;
pub mod recommend;
pub mod report;
pub mod train;

pub use error::{Error, Result};

/// The device the unit tests run on: `LLM_EMF_DEVICE`, or the CPU.
#[cfg(test)]
pub(crate) fn test_device() -> burn::tensor::Device {
    backend::from_env().expect("the test device is compiled in")
}

/// A small synthetic two-domain world for the unit tests: 3 topics, 8-wide image and text
/// features, the generator's other defaults.
#[cfg(test)]
pub(crate) fn test_data(users: usize, items_x: usize, items_y: usize) -> data::SyntheticData {
    data::SyntheticConfig {
        users,
        items_x,
        items_y,
        topics: 3,
        feature_dim: 8,
        ..Default::default()
    }
    .generate()
    .expect("the synthetic test world")
}

/// The image and text features of [`test_data`]'s world, on `device`.
#[cfg(test)]
pub(crate) fn test_features(
    data: &data::SyntheticData,
    device: &burn::tensor::Device,
) -> model::ItemFeatures {
    model::ItemFeatures::new(
        Some(&data.image),
        Some(&data.text),
        data.dataset.num_items(),
        device,
    )
    .expect("the synthetic test features")
}
