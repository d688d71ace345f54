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
//! - [`recommend`]: loading a trained run, evaluating it, recommending ([`recommend::Recommender`]
//!   for services);
//! - [`report`]: tables and SVG charts of runs and experiments;
//! - [`features`]: frozen feature matrices and the encoders that make them (CLIP's image and
//!   text towers, all-MiniLM-L6-v2, a hashing encoder), with `embed` running them over a dataset;
//! - [`enrich`]: LLM enrichment of item titles through an OpenAI-compatible endpoint;
//! - [`backend`]: choosing a device by name.
//!
//! # Crate features
//! - `flex` (default): Burn's CPU backend, with SIMD and AVX-512 kernels (the fastest here);
//! - `ndarray`: Burn's older CPU backend;
//! - `wgpu`: GPUs through wgpu;
//! - `cuda`: NVIDIA GPUs (needs network access at build time).
#![deny(missing_docs)]

pub mod backend;
pub mod data;
pub mod enrich;
pub mod error;
pub mod eval;
mod fastmath;
pub mod features;
mod io;
pub mod model;
pub mod model_dir;
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
