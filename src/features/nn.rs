//! Pieces shared by the frozen encoders: multi-head attention without dropout, and loading a
//! module from a Hugging Face safetensors checkpoint with a short key-remapping table.

use std::path::Path;

use burn::module::Module;
use burn::store::{KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};

/// Additive attention bias: 0 where attending is allowed, this where it is not. Finite, so a
/// row with nothing to attend to stays finite.
pub(crate) const MASKED: f32 = -1.0e9;

/// Scaled dot-product attention over `heads` heads.
///
/// # Shapes
/// - `q`, `k`, `v`: `[batch, len, width]`
/// - `bias`: broadcastable to `[batch, heads, len, len]` (e.g. `[batch, 1, 1, len]` for padding,
///   `[1, 1, len, len]` for causality), added to the scores
/// - output: `[batch, len, width]`
pub(crate) fn attention(
    q: Tensor<3>,
    k: Tensor<3>,
    v: Tensor<3>,
    heads: usize,
    bias: Option<Tensor<4>>,
) -> Tensor<3> {
    let [batch, len, width] = q.dims();
    let head = width / heads;
    let split = |t: Tensor<3>| t.reshape([batch, len, heads, head]).swap_dims(1, 2);
    let (q, k, v) = (split(q), split(k), split(v));
    let mut scores = q.matmul(k.swap_dims(2, 3)) / (head as f64).sqrt();
    if let Some(bias) = bias {
        scores = scores + bias;
    }
    softmax(scores, 3)
        .matmul(v)
        .swap_dims(1, 2)
        .reshape([batch, len, width])
}

/// `[1, 1, len, len]` bias that lets position `i` attend to positions `<= i` only.
pub(crate) fn causal_bias(len: usize, device: &Device) -> Tensor<4> {
    let mut data = vec![0.0f32; len * len];
    for i in 0..len {
        for j in i + 1..len {
            data[i * len + j] = MASKED;
        }
    }
    Tensor::from_data(TensorData::new(data, [1, 1, len, len]), device)
}

/// `[batch, len]` token ids as an Int tensor.
pub(crate) fn ids_tensor(ids: &[u32], batch: usize, len: usize, device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    Tensor::from_data(TensorData::new(data, [batch, len]), device)
}

/// `[batch, len]` positions `0..len` on every row.
pub(crate) fn positions(batch: usize, len: usize, device: &Device) -> Tensor<2, Int> {
    Tensor::<1, Int>::arange(0..len as i64, device)
        .reshape([1, len])
        .repeat_dim(0, batch)
}

/// Loads `module`'s tensors from a Hugging Face (PyTorch-layout) safetensors file: linear weights
/// are transposed, layer-norm `weight`/`bias` become `gamma`/`beta`, and checkpoint keys are
/// renamed by `remap` (regex, replacement) pairs first. Every parameter of `module` must be
/// found with its shape; extra checkpoint tensors (buffers, other towers) are ignored and
/// returned.
pub(crate) fn load_hf_safetensors<M: Module + ModuleSnapshot>(
    mut module: M,
    path: &Path,
    remap: &[(&str, &str)],
) -> Result<(M, Vec<String>)> {
    if !path.is_file() {
        return Err(Error::checkpoint(path, "weights file not found"));
    }
    let mut remapper = KeyRemapper::new();
    for (from, to) in remap {
        remapper = remapper
            .add_pattern(*from, *to)
            .map_err(|e| Error::Config(format!("bad key pattern {from:?}: {e}")))?;
    }
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter)
        .remap(remapper)
        .validate(true)
        .allow_partial(true);
    let result = module
        .load_from(&mut store)
        .map_err(|e| Error::checkpoint(path, e))?;
    let mut problems = Vec::new();
    if !result.missing.is_empty() {
        let names: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).collect();
        problems.push(format!(
            "{} tensors missing from the checkpoint: {}",
            names.len(),
            names.join(", ")
        ));
    }
    if !result.errors.is_empty() {
        let errors: Vec<String> = result.errors.iter().map(|e| e.to_string()).collect();
        problems.push(format!(
            "{} tensors do not fit: {}",
            errors.len(),
            errors.join("; ")
        ));
    }
    if !problems.is_empty() {
        return Err(Error::checkpoint(path, problems.join("; ")));
    }
    Ok((module, result.unused))
}

/// A `[rows, width]` tensor's values, row-major.
pub(crate) fn to_vec(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| Error::InvalidInput(format!("reading embeddings: {e:?}")))
}

/// Checks that every token id fits an embedding table of `vocab` rows.
pub(crate) fn check_vocab(ids: &[u32], vocab: usize) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= vocab) {
        Some(bad) => Err(Error::InvalidInput(format!(
            "token id {bad} is outside the model's vocabulary of {vocab}"
        ))),
        None => Ok(()),
    }
}

/// Reads a JSON file into `T`.
pub(crate) fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = crate::io::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| Error::json(path, e))
}
