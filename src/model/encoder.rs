//! The sequence encoder of Eq. 2 (`H = Attention(F)`): learned positional embeddings, then `N`
//! pre-LN blocks of causal multi-head self-attention and feed-forward with residuals and dropout
//! ([`AttentionBlock`]), then a final layer norm.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig,
};
use burn::tensor::{Device, Int, Tensor};

use super::adapter::LowRankAdapter;
use super::attention::{AttentionBias, AttentionBlock, AttentionBlockConfig, FfActivation};
use super::dropout::dropout;

/// Configuration of a [`SequenceEncoder`].
#[derive(Config, Debug)]
pub struct SequenceEncoderConfig {
    /// Width of the item vectors (and of the output).
    pub d_model: usize,
    /// Longest sequence (number of positional embeddings).
    pub max_len: usize,
    /// Number of attention blocks. Default 2.
    #[config(default = 2)]
    pub layers: usize,
    /// Attention heads; must divide `d_model`. Default 2.
    #[config(default = 2)]
    pub heads: usize,
    /// Width of the feed-forward layer as a multiple of `d_model`. Default 1 (as SASRec).
    #[config(default = 1)]
    pub ff_factor: usize,
    /// Dropout on the input, the attention weights and the residual branches. Default 0.3.
    #[config(default = 0.3)]
    pub dropout: f64,
    /// Activation of the feed-forward layers. Default ReLU.
    #[config(default = "FfActivation::Relu")]
    pub activation: FfActivation,
}

/// A causal self-attention encoder over one sub-sequence and one modality.
#[derive(Module, Debug)]
pub struct SequenceEncoder {
    /// Learned positional embeddings `[max_len, d_model]`.
    pub position: Embedding,
    /// Dropout on the input.
    pub dropout: Dropout,
    /// The attention blocks (pre-LN).
    pub blocks: Vec<AttentionBlock>,
    /// Final layer norm (pre-LN blocks leave their output unnormalised).
    pub norm: LayerNorm,
}

impl SequenceEncoderConfig {
    /// Builds the encoder on `device`.
    pub fn init(&self, device: &Device) -> SequenceEncoder {
        let block = AttentionBlockConfig::new(self.d_model)
            .with_heads(self.heads)
            .with_d_ff(Some(self.d_model * self.ff_factor.max(1)))
            .with_dropout(self.dropout)
            .with_activation(self.activation);
        SequenceEncoder {
            position: EmbeddingConfig::new(self.max_len, self.d_model)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 0.5,
                })
                .init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            blocks: (0..self.layers.max(1))
                .map(|_| block.init(device))
                .collect(),
            norm: LayerNormConfig::new(self.d_model).init(device),
        }
    }
}

impl SequenceEncoder {
    /// Encodes a left-padded batch. Position `t` of a row attends to the real items at positions
    /// `<= t` only, so padding never changes the output at real positions.
    ///
    /// # Shapes
    /// - `items`: `[batch, len, d_model]` item vectors
    /// - `positions`: `[batch, len]` positions (0 at the first real item)
    /// - `bias`: `[batch, 1, len, len]`, from the padding mask ([`AttentionBias::causal`])
    /// - output: `[batch, len, d_model]`
    pub fn forward(
        &self,
        items: Tensor<3>,
        positions: Tensor<2, Int>,
        bias: &AttentionBias,
    ) -> Tensor<3> {
        let mut x = dropout(&self.dropout, items + self.position.forward(positions));
        for block in &self.blocks {
            x = block.forward(x, bias);
        }
        self.norm.forward(x)
    }

    /// Encodes the real positions of a left-padded batch, given packed
    /// ([`AttentionBlock::forward_packed`]): equal to [`Self::forward`] at those positions,
    /// without the position-wise work on padding. What training runs.
    ///
    /// # Shapes
    /// - `items`: `[N, d_model]` item vectors of the real positions in row-major order
    /// - `positions`: `[N]` their positions; `flat`: `[N]` their flat indices `b * len + t`
    /// - `bias`: `[batch, 1, len, len]`
    /// - output: `[N, d_model]`
    pub fn forward_packed(
        &self,
        items: Tensor<2>,
        positions: Tensor<1, Int>,
        flat: &Tensor<1, Int>,
        bias: &AttentionBias,
    ) -> Tensor<2> {
        self.forward_packed_with(items, positions, flat, bias, None)
    }

    /// [`Self::forward_packed`] with one low-rank adapter per block
    /// ([`AttentionBlock::forward_with`]), as a shared encoder reads one sub-sequence.
    ///
    /// # Panics
    /// If `adapters` does not hold one adapter per block.
    pub fn forward_packed_with(
        &self,
        items: Tensor<2>,
        positions: Tensor<1, Int>,
        flat: &Tensor<1, Int>,
        bias: &AttentionBias,
        adapters: Option<&[LowRankAdapter]>,
    ) -> Tensor<2> {
        let [n, d] = items.dims();
        let position = self
            .position
            .forward(positions.reshape([1, n]))
            .reshape([n, d]);
        let mut x = dropout(&self.dropout, items + position);
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward_packed_with(x, flat, bias, self.adapter(adapters, i));
        }
        self.norm.forward(x)
    }

    /// The output at the last position only (the last block runs its query, output projection
    /// and feed-forward layer for that position alone): what scoring reads.
    ///
    /// # Shapes
    /// - as [`Self::forward`]; output `[batch, d_model]`
    pub fn forward_last(
        &self,
        items: Tensor<3>,
        positions: Tensor<2, Int>,
        bias: &AttentionBias,
    ) -> Tensor<2> {
        self.forward_last_with(items, positions, bias, None)
    }

    /// [`Self::forward_last`] with one low-rank adapter per block
    /// ([`Self::forward_packed_with`]).
    ///
    /// # Panics
    /// If `adapters` does not hold one adapter per block.
    pub fn forward_last_with(
        &self,
        items: Tensor<3>,
        positions: Tensor<2, Int>,
        bias: &AttentionBias,
        adapters: Option<&[LowRankAdapter]>,
    ) -> Tensor<2> {
        let [batch, _, d] = items.dims();
        let mut x = dropout(&self.dropout, items + self.position.forward(positions));
        let n = self.blocks.len();
        for (i, block) in self.blocks[..n - 1].iter().enumerate() {
            x = block.forward_with(x, bias, self.adapter(adapters, i));
        }
        let last = self.blocks[n - 1].forward_last_with(x, bias, self.adapter(adapters, n - 1));
        self.norm.forward(last).reshape([batch, d])
    }

    /// Block `i`'s adapter of `adapters`, which must hold one per block.
    fn adapter<'a>(
        &self,
        adapters: Option<&'a [LowRankAdapter]>,
        i: usize,
    ) -> Option<&'a LowRankAdapter> {
        adapters.map(|a| {
            assert_eq!(a.len(), self.blocks.len(), "one adapter per block");
            &a[i]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_device;
    use burn::tensor::{Bool, Distribution, TensorData};

    fn bias_of(pad: &Tensor<2, Bool>) -> AttentionBias {
        let [b, l] = pad.dims();
        let v = pad.to_data().try_to_vec::<bool>().unwrap();
        AttentionBias::causal(&v, b, l, &pad.device())
    }

    #[test]
    fn padding_does_not_change_real_positions_and_attention_is_causal() {
        let device = test_device();
        let enc = SequenceEncoderConfig::new(8, 10).init(&device).valid();
        let x = Tensor::<3>::random([1, 3, 8], Distribution::Normal(0.0, 1.0), &device);
        let pos = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 1, 2], [1, 3]), &device);
        let no_pad = Tensor::<2, Bool>::from_data(TensorData::new(vec![false; 3], [1, 3]), &device);
        let plain = enc.forward(x.clone(), pos, &bias_of(&no_pad));

        // The same three items behind two padding slots filled with garbage.
        let garbage = Tensor::<3>::random([1, 2, 8], Distribution::Normal(5.0, 3.0), &device);
        let padded_x = Tensor::cat(vec![garbage, x.clone()], 1);
        let pos =
            Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 0, 0, 1, 2], [1, 5]), &device);
        let pad = Tensor::<2, Bool>::from_data(
            TensorData::new(vec![true, true, false, false, false], [1, 5]),
            &device,
        );
        let padded = enc
            .forward(padded_x, pos, &bias_of(&pad))
            .slice([0..1, 2..5, 0..8]);
        plain
            .to_data()
            .assert_approx_eq::<f32>(&padded.to_data(), burn::tensor::Tolerance::absolute(1e-4));

        // Changing the last item leaves the first two outputs unchanged (causality).
        let mut values = x.to_data().try_to_vec::<f32>().unwrap();
        // Not a constant shift: layer norms would cancel one.
        for (j, v) in values[16..24].iter_mut().enumerate() {
            *v += j as f32 * 0.5;
        }
        let changed = Tensor::<3>::from_data(TensorData::new(values, [1, 3, 8]), &device);
        let pos = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 1, 2], [1, 3]), &device);
        let no_pad = Tensor::<2, Bool>::from_data(TensorData::new(vec![false; 3], [1, 3]), &device);
        let out = enc.forward(changed, pos, &bias_of(&no_pad));
        out.clone()
            .slice([0..1, 0..2, 0..8])
            .to_data()
            .assert_approx_eq::<f32>(
                &plain.clone().slice([0..1, 0..2, 0..8]).to_data(),
                burn::tensor::Tolerance::absolute(1e-5),
            );
        let diff: f32 = (out.slice([0..1, 2..3, 0..8]) - plain.slice([0..1, 2..3, 0..8]))
            .abs()
            .sum()
            .into_scalar();
        assert!(diff > 1e-3);
    }

    #[test]
    fn packed_path_equals_the_padded_path_with_its_gradients() {
        use crate::data::batcher::PaddedPlan;
        use burn::tensor::Tolerance;
        let device = test_device().autodiff();
        // Width 8, two heads, dropout off; rows of 5, 1, 3 and 0 real items, padded to 5.
        let enc = SequenceEncoderConfig::new(8, 10)
            .with_heads(2)
            .with_dropout(0.0)
            .init(&device);
        let rows: [&[u32]; 4] = [&[1, 2, 3, 4, 5], &[6], &[7, 8, 9], &[]];
        let plan = PaddedPlan::new(&rows, 10);
        let batch = plan.to_tensors(&device);
        let real = plan.packed(&device);
        let (b, l, d) = (plan.batch, plan.len, 8);
        let x =
            Tensor::<2>::random([b * l, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let probe = Tensor::<2>::random([plan.real_len(), d], Distribution::Default, &device);

        let padded = enc
            .forward(
                x.clone().reshape([b, l, d]),
                batch.positions.clone(),
                &batch.bias,
            )
            .reshape([b * l, d])
            .select(0, real.flat.clone());
        let packed = enc.forward_packed(
            x.clone().select(0, real.flat.clone()),
            real.positions.clone(),
            &real.flat,
            &batch.bias,
        );
        assert_eq!(packed.dims(), [9, d]);
        packed
            .to_data()
            .assert_approx_eq::<f32>(&padded.to_data(), Tolerance::absolute(1e-5));

        // The gradients of the same function of the real outputs agree for every weight and
        // for the inputs at real positions (padding gets none on either path).
        let grads_padded = (padded * probe.clone()).sum().backward();
        let grads_packed = (packed * probe).sum().backward();
        let host = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
        let grads = |g: &_| -> Vec<f32> {
            let block = &enc.blocks[1];
            [
                x.clone(),
                block.qkv.weight.val(),
                block.ff_inner.weight.val(),
                enc.position.weight.val(),
            ]
            .into_iter()
            .flat_map(|t| host(t.grad(g).expect("a gradient")))
            .collect()
        };
        let (a, p) = (grads(&grads_padded), grads(&grads_packed));
        assert!(a.iter().any(|v| v.abs() > 1e-3));
        for (u, v) in a.iter().zip(&p) {
            assert!((u - v).abs() <= 1e-5 * u.abs().max(1.0), "{u} vs {v}");
        }
    }

    #[test]
    fn all_padding_rows_give_finite_outputs() {
        let device = test_device();
        let enc = SequenceEncoderConfig::new(4, 5).init(&device).valid();
        let x = Tensor::<3>::zeros([2, 3, 4], &device);
        let pos = Tensor::<2, Int>::zeros([2, 3], &device);
        let pad = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; 6], [2, 3]), &device);
        let out = enc
            .forward(x, pos, &bias_of(&pad))
            .to_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(out.iter().all(|v| v.is_finite()));
    }
}
