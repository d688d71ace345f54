//! A pre-LN causal self-attention block with one fused query/key/value projection. The
//! attention bias it reads ([`AttentionBias`]) is made by the batcher, in [`crate::data::mask`].
//!
//! The block computes, for `x` of width `d`:
//!
//! ```text
//! x = x + Dropout(Out(Attention(QKV(LN1(x)), bias)))
//! x = x + Dropout(FF2(Dropout(Act(FF1(LN2(x))))))      (Act: ReLU or GELU)
//! ```
//!
//! which is `burn::nn::transformer::TransformerEncoderLayer` with `norm_first`, with four
//! differences that make it cheaper to run: the three projections share one `[d, 3d]` weight
//! (one product, whose heads are read as views); the causal and padding masks are one additive
//! bias built once per batch on the host and shared by every layer and every encoder that reads
//! the same sub-sequence; [`AttentionBlock::forward_packed`] runs everything but attention on
//! the real positions only (what training runs); and [`AttentionBlock::forward_last`] computes
//! the last position only (what scoring reads).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::activation::{gelu, relu, silu, softmax};
use burn::tensor::module::linear;

use super::adapter::LowRankAdapter;
use super::dropout::dropout;
use burn::tensor::{Device, IndexingUpdateOp, Int, Tensor};

pub use crate::data::mask::{AttentionBias, MASKED_SCORE};

/// Configuration of an [`AttentionBlock`].
#[derive(Config, Debug)]
pub struct AttentionBlockConfig {
    /// Width of the input and output vectors.
    pub d_model: usize,
    /// Attention heads; must divide `d_model`. Default 2.
    #[config(default = 2)]
    pub heads: usize,
    /// Feed-forward width (of each half of a gated layer). Default: `d_model` (as SASRec).
    pub d_ff: Option<usize>,
    /// Dropout on the attention weights, inside the feed-forward layer and on both residual
    /// branches. Default 0.3.
    #[config(default = 0.3)]
    pub dropout: f64,
    /// Activation of the feed-forward layer. Default ReLU (SASRec's).
    #[config(default = "FfActivation::Relu")]
    pub activation: FfActivation,
}

/// Activation of the feed-forward layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FfActivation {
    /// `max(0, x)`, as SASRec (and cheap).
    #[default]
    Relu,
    /// The exact (erf) GELU, as Burn's transformer layers.
    Gelu,
    /// The gated SiLU unit (SwiGLU, `silu(x W_g) * (x W_v)`, as ABXI's and LLaMA's feed-forward
    /// layers): the inner layer holds the gate's and the value's columns side by side, so it
    /// has `2 d_ff` outputs and the block half as many parameters again as ReLU's at the same
    /// `d_ff`.
    #[serde(rename = "swiglu")]
    SwiGlu,
}

/// One pre-LN block of causal multi-head self-attention and feed-forward.
#[derive(Module, Debug)]
pub struct AttentionBlock {
    /// Layer norm before attention.
    pub norm_attention: LayerNorm,
    /// Fused query, key and value projection `d -> 3d`.
    pub qkv: Linear,
    /// Output projection `d -> d`.
    pub output: Linear,
    /// Layer norm before the feed-forward layer.
    pub norm_ff: LayerNorm,
    /// Feed-forward `d -> d_ff` (`d -> 2 d_ff` for SwiGLU: the gate's columns, then the
    /// value's).
    pub ff_inner: Linear,
    /// Feed-forward `d_ff -> d`.
    pub ff_outer: Linear,
    /// Activation of the feed-forward layer (set by the configuration, not saved).
    #[module(skip)]
    pub activation: FfActivation,
    /// Dropout.
    pub dropout: Dropout,
    /// Heads.
    pub heads: usize,
}

impl AttentionBlockConfig {
    /// Builds the block on `device` (Kaiming-uniform weights with gain `1 / sqrt(3)`, as Burn's
    /// transformer layers).
    pub fn init(&self, device: &Device) -> AttentionBlock {
        assert!(
            self.heads > 0 && self.d_model.is_multiple_of(self.heads),
            "{} heads do not divide the width {}",
            self.heads,
            self.d_model
        );
        let init = Initializer::KaimingUniform {
            gain: 1.0 / 3f64.sqrt(),
            fan_out_only: false,
        };
        let linear = |i: usize, o: usize| {
            LinearConfig::new(i, o)
                .with_initializer(init.clone())
                .init(device)
        };
        let d = self.d_model;
        let d_ff = self.d_ff.unwrap_or(d).max(1);
        AttentionBlock {
            norm_attention: LayerNormConfig::new(d).init(device),
            qkv: linear(d, 3 * d),
            output: linear(d, d),
            norm_ff: LayerNormConfig::new(d).init(device),
            ff_inner: match self.activation {
                FfActivation::SwiGlu => linear(d, 2 * d_ff),
                FfActivation::Relu | FfActivation::Gelu => linear(d, d_ff),
            },
            ff_outer: linear(d_ff, d),
            activation: self.activation,
            dropout: DropoutConfig::new(self.dropout).init(),
            heads: self.heads,
        }
    }
}

impl AttentionBlock {
    /// Applies the block at every position.
    ///
    /// # Shapes
    /// - `x`: `[batch, len, d_model]`
    /// - `bias`: `[batch, 1, len, len]` (see [`AttentionBias::causal`])
    /// - output: `[batch, len, d_model]`
    pub fn forward(&self, x: Tensor<3>, bias: &AttentionBias) -> Tensor<3> {
        self.forward_with(x, bias, None)
    }

    /// [`Self::forward`] with a low-rank `adapter` beside the feed-forward layer (its term
    /// added to the block's output, as the feed-forward layer's is).
    pub fn forward_with(
        &self,
        x: Tensor<3>,
        bias: &AttentionBias,
        adapter: Option<&LowRankAdapter>,
    ) -> Tensor<3> {
        let [batch, len, d] = x.dims();
        let (q, k, v) = self.project(x.clone());
        let context = self.attend(q, k, v, bias);
        let x = x + dropout(&self.dropout, self.output.forward(context));
        self.feed_forward(x, adapter).reshape([batch, len, d])
    }

    /// Applies the block at the last position only: keys and values come from every position,
    /// the query, the output projection and the feed-forward layer run for one position. Equal
    /// to the last position of [`Self::forward`].
    ///
    /// # Shapes
    /// - `x`: `[batch, len, d_model]`
    /// - `bias`: `[batch, 1, len, len]`
    /// - output: `[batch, 1, d_model]`
    pub fn forward_last(&self, x: Tensor<3>, bias: &AttentionBias) -> Tensor<3> {
        self.forward_last_with(x, bias, None)
    }

    /// [`Self::forward_last`] with a low-rank `adapter` ([`Self::forward_with`]).
    pub fn forward_last_with(
        &self,
        x: Tensor<3>,
        bias: &AttentionBias,
        adapter: Option<&LowRankAdapter>,
    ) -> Tensor<3> {
        let [batch, len, d] = x.dims();
        let h = self.heads;
        // Keys and values at every position, the query at the last one only: the columns of
        // the fused projection, read in place.
        let normed = self.norm_attention.forward(x.clone());
        let weight = self.qkv.weight.val();
        let kv = linear(
            normed.clone(),
            weight.clone().narrow(1, d, 2 * d),
            self.qkv_bias(d, 2 * d),
        )
        .reshape([batch, len, 2 * h, d / h]);
        let [k, v] = Self::split_heads(kv);
        let q = linear(
            normed.narrow(1, len - 1, 1),
            weight.narrow(1, 0, d),
            self.qkv_bias(0, d),
        )
        .reshape([batch, 1, h, d / h])
        .swap_dims(1, 2);
        let context = self.attend(q, k, v, &bias.last_query());
        let last = x.narrow(1, len - 1, 1);
        let x = last + dropout(&self.dropout, self.output.forward(context));
        self.feed_forward(x, adapter)
    }

    /// Applies the block at the real positions of a padded batch, given packed: the layer
    /// norms, the projections and the feed-forward layer run on the `N` real rows only, and
    /// only attention sees the padded `[batch, len]` layout (the projected queries, keys and
    /// values are scattered into it, padding left at zero and masked by `bias`, and the context
    /// is gathered back). Equal to [`Self::forward`] at the real positions; on a batch of
    /// uneven lengths it does a fraction of the work.
    ///
    /// # Shapes
    /// - `x`: `[N, d_model]`, the real positions in row-major order
    /// - `flat`: `[N]`, the flat index `b * len + t` of each
    /// - `bias`: `[batch, 1, len, len]`
    /// - output: `[N, d_model]`
    pub fn forward_packed(
        &self,
        x: Tensor<2>,
        flat: &Tensor<1, Int>,
        bias: &AttentionBias,
    ) -> Tensor<2> {
        self.forward_packed_with(x, flat, bias, None)
    }

    /// [`Self::forward_packed`] with a low-rank `adapter` ([`Self::forward_with`]).
    pub fn forward_packed_with(
        &self,
        x: Tensor<2>,
        flat: &Tensor<1, Int>,
        bias: &AttentionBias,
        adapter: Option<&LowRankAdapter>,
    ) -> Tensor<2> {
        let [n, d] = x.dims();
        let [batch, _, len, _] = bias.bias.dims();
        let h = self.heads;
        let normed = self.norm_attention.forward(x.clone());
        // Three products with column blocks of the fused weight (not one product split
        // afterwards: the backward of a split writes each gradient into a third of a zeroed
        // `[rows, 3d]` buffer, a strided copy).
        let padded = |i: usize| {
            let projected = linear(
                normed.clone(),
                self.qkv.weight.val().narrow(1, i * d, d),
                self.qkv_bias(i * d, d),
            );
            Tensor::<2>::zeros([batch * len, d], &x.device())
                .select_assign(0, flat.clone(), projected, IndexingUpdateOp::Add)
                .reshape([batch, len, h, d / h])
                .swap_dims(1, 2)
        };
        let context = self
            .attend(padded(0), padded(1), padded(2), bias)
            .reshape([batch * len, d])
            .select(0, flat.clone());
        debug_assert_eq!(context.dims(), [n, d]);
        let x = x + dropout(&self.dropout, self.output.forward(context));
        self.feed_forward(x, adapter)
    }

    /// Queries, keys and values, split into heads.
    ///
    /// # Shapes
    /// - output: three `[batch, heads, len, d_model / heads]`
    fn project(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let [batch, len, d] = x.dims();
        let h = self.heads;
        let qkv =
            self.qkv
                .forward(self.norm_attention.forward(x))
                .reshape([batch, len, 3 * h, d / h]);
        let [q, k, v] = Self::split_heads(qkv);
        (q, k, v)
    }

    /// Entries `start..start + n` of the fused projection's bias.
    fn qkv_bias(&self, start: usize, n: usize) -> Option<Tensor<1>> {
        self.qkv.bias.as_ref().map(|b| b.val().narrow(0, start, n))
    }

    /// `N` projections of `[batch, len, N * heads, d_model / heads]` (queries, keys and values,
    /// or keys and values), each split into heads as a view (the backend's strided matrix
    /// products read them in place; reshaping a permuted copy would copy every projection once
    /// more).
    ///
    /// # Shapes
    /// - output: `N` tensors `[batch, heads, len, d_model / heads]`
    fn split_heads<const N: usize>(projected: Tensor<4>) -> [Tensor<4>; N] {
        let h = projected.dims()[2] / N;
        std::array::from_fn(|i| projected.clone().narrow(2, i * h, h).swap_dims(1, 2))
    }

    /// Scaled dot-product attention, heads merged back.
    ///
    /// # Shapes
    /// - `q`: `[batch, heads, lq, dh]`, `k`, `v`: `[batch, heads, lk, dh]`
    /// - output: `[batch, lq, heads * dh]`
    fn attend(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: &AttentionBias) -> Tensor<3> {
        let [batch, heads, lq, dh] = q.dims();
        let scores =
            q.matmul(k.transpose()).mul_scalar(1.0 / (dh as f64).sqrt()) + bias.bias.clone();
        let weights = dropout(&self.dropout, softmax(scores, 3));
        weights
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, lq, heads * dh])
    }

    /// `x + ff(norm(x))`, plus `adapter(norm(x))` where one is given (each term through
    /// dropout).
    fn feed_forward<const D: usize>(
        &self,
        x: Tensor<D>,
        adapter: Option<&LowRankAdapter>,
    ) -> Tensor<D> {
        let normed = self.norm_ff.forward(x.clone());
        let x = match adapter {
            Some(a) => x + dropout(&self.dropout, a.forward(normed.clone())),
            None => x,
        };
        let inner = match self.activation {
            FfActivation::Relu => relu(self.ff_inner.forward(normed)),
            FfActivation::Gelu => gelu(self.ff_inner.forward(normed)),
            FfActivation::SwiGlu => {
                // Two products with column blocks of the fused weight, as the attention's
                // projections (a split output's backward would copy into a zeroed buffer).
                let weight = self.ff_inner.weight.val();
                let f = weight.dims()[1] / 2;
                let half = |i: usize| {
                    linear(
                        normed.clone(),
                        weight.clone().narrow(1, i * f, f),
                        self.ff_inner
                            .bias
                            .as_ref()
                            .map(|b| b.val().narrow(0, i * f, f)),
                    )
                };
                silu(half(0)) * half(1)
            }
        };
        x + dropout(
            &self.dropout,
            self.ff_outer.forward(dropout(&self.dropout, inner)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_device;
    use burn::tensor::TensorData;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn bias_masks_future_and_padding() {
        let device = test_device();
        // Row 0: one pad then two items; row 1: no padding.
        let pad = [true, false, false, false, false, false];
        let bias = AttentionBias::causal(&pad, 2, 3, &device);
        let v = bias.bias.into_data().try_to_vec::<f32>().unwrap();
        let m = MASKED_SCORE;
        #[rustfmt::skip]
        let expected = vec![
            m, m, m,    m, 0.0, m,    m, 0.0, 0.0,
            0.0, m, m,  0.0, 0.0, m,  0.0, 0.0, 0.0,
        ];
        assert_eq!(v, expected);
    }

    #[test]
    fn last_position_path_equals_the_full_path() {
        let device = test_device();
        for activation in [FfActivation::Relu, FfActivation::SwiGlu] {
            let block = AttentionBlockConfig::new(8)
                .with_heads(2)
                .with_activation(activation)
                .init(&device)
                .valid();
            let x = Tensor::<3>::random([3, 5, 8], Distribution::Normal(0.0, 1.0), &device);
            let pad: Vec<bool> = (0..15).map(|i| i == 0 || i == 1 || i == 5).collect();
            let bias = AttentionBias::causal(&pad, 3, 5, &device);
            let full = block.forward(x.clone(), &bias).narrow(1, 4, 1);
            let last = block.forward_last(x, &bias);
            last.into_data()
                .assert_approx_eq::<f32>(&full.into_data(), Tolerance::absolute(1e-5));
        }
    }

    #[test]
    fn matches_a_reference_attention_computed_by_hand() {
        matches_the_reference(FfActivation::Gelu);
    }

    #[test]
    fn swiglu_matches_a_reference_computed_by_hand() {
        matches_the_reference(FfActivation::SwiGlu);
    }

    /// One head, width 2, one row of two items, the block's own (random) weights read back
    /// and the block recomputed with explicit loops.
    fn matches_the_reference(activation: FfActivation) {
        let device = test_device();
        let block = AttentionBlockConfig::new(2)
            .with_heads(1)
            .with_d_ff(Some(3))
            .with_dropout(0.0)
            .with_activation(activation)
            .init(&device);
        let x = Tensor::<3>::from_data(
            TensorData::new(vec![1.0f32, -1.0, 0.5, 2.0], [1, 2, 2]),
            &device,
        );
        let bias = AttentionBias::causal(&[false, false], 1, 2, &device);
        let out = block.forward(x.clone(), &bias);
        // Reference: the same computation written out with explicit loops over the weights.
        let w = |l: &Linear| {
            (
                l.weight.val().into_data().try_to_vec::<f32>().unwrap(),
                l.bias
                    .as_ref()
                    .unwrap()
                    .val()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap(),
            )
        };
        let lin = |(wt, b): &(Vec<f32>, Vec<f32>), input: &[f32]| -> Vec<f32> {
            let o = b.len();
            (0..o)
                .map(|j| {
                    b[j] + (0..input.len())
                        .map(|i| input[i] * wt[i * o + j])
                        .sum::<f32>()
                })
                .collect()
        };
        let ln = |v: &[f32]| -> Vec<f32> {
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / v.len() as f32;
            v.iter().map(|a| (a - mean) / (var + 1e-5).sqrt()).collect()
        };
        let gelu = |a: f32| 0.5 * a * (1.0 + libm_erf(a / 2f32.sqrt()));
        let rows = [[1.0f32, -1.0], [0.5, 2.0]];
        let qkv: Vec<Vec<f32>> = rows.iter().map(|r| lin(&w(&block.qkv), &ln(r))).collect();
        let mut expected = Vec::new();
        for t in 0..2 {
            let q = &qkv[t][0..2];
            let scores: Vec<f32> = (0..=t)
                .map(|s| (q[0] * qkv[s][2] + q[1] * qkv[s][3]) / 2f32.sqrt())
                .collect();
            let max = scores.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
            let z: f32 = e.iter().sum();
            let ctx: Vec<f32> = (0..2)
                .map(|c| (0..=t).map(|s| e[s] / z * qkv[s][4 + c]).sum())
                .collect();
            let a = lin(&w(&block.output), &ctx);
            let x1: Vec<f32> = (0..2).map(|c| rows[t][c] + a[c]).collect();
            let pre = lin(&w(&block.ff_inner), &ln(&x1));
            let inner: Vec<f32> = match activation {
                FfActivation::Gelu => pre.into_iter().map(gelu).collect(),
                FfActivation::SwiGlu => {
                    assert_eq!(pre.len(), 6, "the gate's three columns, then the value's");
                    (0..3)
                        .map(|j| pre[j] / (1.0 + (-pre[j]).exp()) * pre[3 + j])
                        .collect()
                }
                FfActivation::Relu => pre.into_iter().map(|a| a.max(0.0)).collect(),
            };
            let f = lin(&w(&block.ff_outer), &inner);
            expected.extend((0..2).map(|c| x1[c] + f[c]));
        }
        out.into_data().assert_approx_eq::<f32>(
            &TensorData::new(expected, [1, 2, 2]),
            Tolerance::absolute(1e-4),
        );
    }

    /// erf by Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7), enough for a 1e-4 comparison.
    fn libm_erf(x: f32) -> f32 {
        let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() as f64);
        let poly = t
            * (0.254_829_592
                + t * (-0.284_496_736
                    + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
        let y = 1.0 - poly * (-(x as f64) * (x as f64)).exp();
        (if x >= 0.0 { y } else { -y }) as f32
    }
}
