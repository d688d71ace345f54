//! # llm_emf
//!
//! LLM-EMF (LLM-Enhanced Multimodal Fusion for Cross-Domain Sequential Recommendation), built on
//! [Burn](https://burn.dev).
#![deny(missing_docs)]

pub mod backend;
pub mod data;
pub mod error;
pub mod eval;
pub mod features;
mod io;
pub mod model;
pub mod recommend;
pub mod train;

pub use error::{Error, Result};

/// The CPU device the unit tests run on.
#[cfg(test)]
pub(crate) fn test_device() -> burn::tensor::Device {
    backend::cpu().expect("a CPU backend is compiled in")
}
