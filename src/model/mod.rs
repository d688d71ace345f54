//! The LLM-EMF model: sequence encoders, fusion and the model itself.

pub mod encoder;
pub mod fusion;
pub mod llm_emf;

pub use encoder::{SequenceEncoder, SequenceEncoderConfig};
pub use llm_emf::{
    DomainNegatives, ItemFeatures, LlmEmf, Modality, ModalitySwitches, ModelConfig,
    TemperatureConfig,
};
