//! The LLM-EMF model and its building blocks, each a Burn component (config + module) that
//! another model can reuse: [`AttentionBlock`] (pre-LN causal self-attention with a fused QKV
//! projection), [`SequenceEncoder`] (positions + blocks + final norm, Eq. 2),
//! [`ModalityFusion`] (the alpha/beta tri-modal fusion head, Eq. 8, fixed or learned) and
//! [`DomainLoss`] (the lambda-weighted domain loss and cross-domain score, Eq. 10-11, fixed or
//! learned); [`LlmEmf`] composes them.

pub mod attention;
pub mod dropout;
pub mod encoder;
pub mod fusion;
pub mod llm_emf;
pub mod loss;

pub use attention::{AttentionBias, AttentionBlock, AttentionBlockConfig, FfActivation};
pub use encoder::{SequenceEncoder, SequenceEncoderConfig};
pub use fusion::{ModalityFusion, ModalityFusionConfig};
pub use llm_emf::{
    DomainNegatives, DomainObjective, ItemFeatures, LlmEmf, Modality, ModalitySwitches,
    ModelConfig, TemperatureConfig,
};
pub use loss::{DomainLoss, DomainLossConfig, TrainHidden};
