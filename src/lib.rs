//! # llm_emf
//!
//! LLM-EMF (LLM-Enhanced Multimodal Fusion for Cross-Domain Sequential Recommendation), built on
//! [Burn](https://burn.dev).
#![deny(missing_docs)]

pub mod data;
pub mod error;
pub mod eval;
pub mod features;
mod io;

pub use error::{Error, Result};
