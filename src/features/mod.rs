//! Frozen item features: `[items, dim]` float32 matrices in global item-id order, read from
//! `.npy` or safetensors files.

mod matrix;

pub use matrix::FeatureMatrix;
