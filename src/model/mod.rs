//! The LLM-EMF model and its building blocks, each a Burn component (config + module) that
//! another model can reuse: [`AttentionBlock`] (pre-LN causal self-attention with a fused QKV
//! projection), [`SequenceEncoder`] (positions + blocks + final norm, Eq. 2),
//! [`ModalityFusion`] (the alpha/beta tri-modal fusion head, Eq. 8, fixed or learned),
//! [`DomainLoss`] (the lambda-weighted domain loss and cross-domain weights, Eq. 10-11, fixed or
//! learned) and [`ItemTable`] (learned ID rows, optionally with mapped titles and their
//! shrinkage); [`LlmEmf`] composes them.
//!
//! The files follow the jobs: [`config`] (what a model is), [`items`] (the item tables, the
//! rows drawn for items never seen in training, and the catalogue a model is built for),
//! [`llm_emf`] (the model and its encoders), [`score`] (the Eq. 11 score it ranks with, mixed
//! on the host by one implementation that evaluation and serving share), [`loss`] (the
//! training loss) and the blocks.
//!
//! The blocks build other models too. A single-sequence recommender with two modalities (IDs
//! and frozen text), each encoded by its own [`SequenceEncoder`] and fused by a learned
//! [`ModalityFusion`] head:
//!
//! ```
//! use burn::nn::{Embedding, EmbeddingConfig};
//! use burn::tensor::activation::log_softmax;
//! use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
//! use llm_emf::model::{AttentionBias, ModalityFusionConfig, SequenceEncoderConfig};
//!
//! let device = llm_emf::backend::cpu().unwrap();
//! let (items, width, len) = (50, 16, 4);
//! let ids: Embedding = EmbeddingConfig::new(items, width).init(&device);
//! let text = Tensor::<2>::random([items, 8], Distribution::Normal(0.0, 1.0), &device);
//! let id_encoder = SequenceEncoderConfig::new(width, len).init(&device);
//! let text_encoder = SequenceEncoderConfig::new(8, len).init(&device);
//! // Learned weights of (id, image, text); this model has no image modality.
//! let fusion = ModalityFusionConfig::new().with_learnable(true).init([true, false, true], &device);
//!
//! // Two histories of four items (no padding), positions 0..4.
//! let history = Tensor::<2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 5, 6, 7, 8], [2, len]), &device);
//! let positions = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3, 0, 1, 2, 3], [2, len]), &device);
//! let bias = AttentionBias::causal(&[false; 8], 2, len, &device);
//! let h_id = id_encoder.forward_last(ids.forward(history.clone()), positions.clone(), &bias);
//! let h_text = text_encoder.forward_last(
//!     text.clone().select(0, history.reshape([8])).reshape([2, len, 8]),
//!     positions,
//!     &bias,
//! );
//! // Next-item log-probabilities per modality, then fused (Eq. 8 with learned weights).
//! let p_id = log_softmax(h_id.matmul(ids.weight.val().transpose()), 1);
//! let p_text = log_softmax(h_text.matmul(text.transpose()), 1);
//! let fused = fusion.fuse(vec![(0, p_id), (2, p_text)]);
//! assert_eq!(fused.dims(), [2, items]);
//! ```

pub mod adapter;
pub mod attention;
pub mod config;
pub mod domain_loss;
pub mod dropout;
pub mod encoder;
pub mod fusion;
pub(crate) mod host;
pub mod items;
pub mod llm_emf;
pub mod loss;
pub mod score;

#[cfg(test)]
mod tests;

pub use adapter::{LowRankAdapter, LowRankAdapterConfig, SubSequenceAdapters};
pub use attention::{AttentionBias, AttentionBlock, AttentionBlockConfig, FfActivation};
pub use config::{
    DomainObjective, Head, LossAverage, Modality, ModalitySwitches, ModelConfig, TemperatureConfig,
};
pub use domain_loss::{DomainLoss, DomainLossConfig};
pub use encoder::{SequenceEncoder, SequenceEncoderConfig};
pub use fusion::{ModalityFusion, ModalityFusionConfig};
pub use items::{
    Catalogue, ItemFeatures, ItemTable, ItemTableConfig, TRAINED_ROW_DONORS, UnseenRowDraw,
};
pub use llm_emf::{LlmEmf, l2_normalise, readable_history};
pub use loss::{DomainNegatives, TrainHidden};
pub use score::{ScoreQueries, ScoreSettings};
