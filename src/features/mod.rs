//! Frozen item features: `[items, dim]` float32 matrices in global item-id order, read from
//! `.npy` or safetensors files, and the frozen encoders that make them from item text and images:
//! CLIP's towers ([`clip`]), a BERT sentence encoder ([`bert`], all-MiniLM-L6-v2), and a
//! weight-free hashing encoder ([`hashing`]); [`embed`] runs them over a dataset, resumably.

pub mod bert;
pub mod clip;
pub mod embed;
pub mod hashing;
pub mod image;
mod matrix;
pub(crate) mod nn;
pub mod pipeline;
pub mod tokenize;

pub use bert::{BertConfig, SentenceEncoder};
pub use clip::{ClipConfig, ClipEmbedder};
pub use embed::{EmbedJob, EmbedReport, JobOutcome, TextEmbed, TextSource};
pub use hashing::{EmbedSummary, HashingTextEncoder};
pub use image::ImagePreprocess;
pub use matrix::FeatureMatrix;
pub use pipeline::{EmbedOutcome, EmbedRequest, TextEncoderKind, embed_dataset};
pub use tokenize::TextTokenizer;
