//! Frozen item features: `[items, dim]` float32 matrices in global item-id order, read from
//! `.npy` or safetensors files, and the frozen encoders that make them from item text and images:
//! CLIP's towers ([`clip`]), a BERT sentence encoder ([`bert`], all-MiniLM-L6-v2), both with the
//! `encoders` feature, and a weight-free hashing encoder ([`hashing`]); [`embed`] runs them over
//! a dataset, resumably, and [`pipeline`] goes from a dataset to feature files in one call.

#[cfg(feature = "encoders")]
pub mod bert;
#[cfg(feature = "encoders")]
pub mod clip;
pub mod embed;
pub mod hashing;
#[cfg(feature = "encoders")]
pub mod image;
mod matrix;
#[cfg(feature = "encoders")]
pub(crate) mod nn;
pub mod pipeline;
pub mod text;
#[cfg(feature = "encoders")]
pub mod tokenize;

#[cfg(feature = "encoders")]
pub use bert::{BertConfig, SentenceEncoder};
#[cfg(feature = "encoders")]
pub use clip::{ClipConfig, ClipEmbedder};
pub use embed::{EmbedJob, EmbedReport, JobOutcome, TextEmbed, TextSource};
pub use hashing::{EmbedSummary, HashingTextEncoder};
#[cfg(feature = "encoders")]
pub use image::ImagePreprocess;
pub use matrix::FeatureMatrix;
pub use pipeline::{EmbedOutcome, EmbedRequest, TextEncoderKind, embed_dataset};
#[cfg(feature = "encoders")]
pub use tokenize::TextTokenizer;
