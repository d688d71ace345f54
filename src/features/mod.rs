//! Frozen item features: `[items, dim]` float32 matrices in global item-id order, read from
//! `.npy` or safetensors files, and a weight-free text encoder that makes them from item text.

pub mod hashing;
mod matrix;

pub use hashing::{EmbedSummary, HashingTextEncoder};
pub use matrix::FeatureMatrix;
