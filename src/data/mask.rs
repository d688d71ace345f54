//! The causal attention bias of a left-padded batch: built once per batch on the host by the
//! batcher, and read by every attention block ([`crate::model::AttentionBlock`]) of every
//! encoder that reads the same sub-sequence.

use burn::tensor::{Device, Tensor, TensorData};

/// Added to the attention score of a masked key: `exp` of it is exactly 0 in `f32` after the
/// softmax's max shift, and a row whose keys are all masked stays finite.
pub const MASKED_SCORE: f32 = -1.0e4;

/// The additive attention bias of one padded batch: 0 where a query may attend to a key,
/// [`MASKED_SCORE`] where it may not (a later position, or padding).
///
/// # Shapes
/// - `bias`: `[batch, 1, len, len]` (broadcast over heads)
#[derive(Debug, Clone)]
pub struct AttentionBias {
    /// The bias.
    pub bias: Tensor<4>,
}

impl AttentionBias {
    /// The causal bias of a left-padded batch: query `t` of row `b` attends to keys `s <= t` that
    /// are not padding. `pad[b * len + s]` is `true` at padding.
    pub fn causal(pad: &[bool], batch: usize, len: usize, device: &Device) -> Self {
        assert_eq!(pad.len(), batch * len, "padding mask of the wrong size");
        let mut bias = vec![MASKED_SCORE; batch * len * len];
        for b in 0..batch {
            let row_pad = &pad[b * len..(b + 1) * len];
            for t in 0..len {
                let out = &mut bias[(b * len + t) * len..(b * len + t + 1) * len];
                for (s, v) in out.iter_mut().enumerate().take(t + 1) {
                    if !row_pad[s] {
                        *v = 0.0;
                    }
                }
            }
        }
        Self {
            bias: Tensor::from_data(TensorData::new(bias, [batch, 1, len, len]), device),
        }
    }

    /// The rows of the last query position only.
    ///
    /// # Shapes
    /// - output bias: `[batch, 1, 1, len]`
    pub fn last_query(&self) -> Self {
        let [_, _, len, _] = self.bias.dims();
        Self {
            bias: self.bias.clone().narrow(2, len - 1, 1),
        }
    }

    /// The same bias on an autodiff device (no gradient is tracked for it).
    pub fn autodiff(&self) -> Self {
        Self {
            bias: self.bias.clone().autodiff(),
        }
    }
}
