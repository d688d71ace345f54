//! Low-rank adapters (LoRA) on a shared encoder (`ModelConfig::adapter_rank`): when S^X, S^Y
//! and S^{X+Y} are read by one encoder per modality (`ModelConfig::shared_encoders`), each
//! sub-sequence adds its own low-rank term `x A B` beside the feed-forward layer of every
//! block, as ABXI's domain adapters do on its one shared encoder. `B` starts at zero, so a
//! model starts as the shared encoder itself.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use super::Modality;

/// Configuration of a [`LowRankAdapter`].
#[derive(Config, Debug)]
pub struct LowRankAdapterConfig {
    /// Width of the encoder it adapts.
    pub d_model: usize,
    /// Rank of the correction (columns of `A`, rows of `B`).
    pub rank: usize,
}

/// `x -> x A B`, `A` `[d_model, rank]`, `B` `[rank, d_model]` (no biases).
#[derive(Module, Debug)]
pub struct LowRankAdapter {
    /// `A`: drawn as a linear layer's weights, `N(0, 1 / d_model)`.
    pub down: Linear,
    /// `B`: zero at the start.
    pub up: Linear,
}

impl LowRankAdapterConfig {
    /// Builds the adapter on `device`.
    pub fn init(&self, device: &Device) -> LowRankAdapter {
        LowRankAdapter {
            down: LinearConfig::new(self.d_model, self.rank)
                .with_bias(false)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 1.0 / (self.d_model as f64).sqrt(),
                })
                .init(device),
            up: LinearConfig::new(self.rank, self.d_model)
                .with_bias(false)
                .with_initializer(Initializer::Zeros)
                .init(device),
        }
    }
}

impl LowRankAdapter {
    /// The correction `x A B`.
    ///
    /// # Shapes
    /// - `x`: `[..., d_model]`; output the same
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.up.forward(self.down.forward(x))
    }
}

/// The adapters of one sub-sequence: per modality whose encoder is shared, one adapter per
/// block of that encoder.
#[derive(Module, Debug)]
pub struct SubSequenceAdapters {
    /// Adapters of the ID encoder's blocks.
    pub id: Option<Vec<LowRankAdapter>>,
    /// Adapters of the image encoder's blocks.
    pub image: Option<Vec<LowRankAdapter>>,
    /// Adapters of the text encoder's blocks.
    pub text: Option<Vec<LowRankAdapter>>,
}

impl SubSequenceAdapters {
    /// For the encoders of widths `dims` (id, image, text; `None` where a modality has no
    /// encoder), `layers` adapters of rank `rank` each.
    pub fn new(dims: [Option<usize>; 3], layers: usize, rank: usize, device: &Device) -> Self {
        let blocks = |d: Option<usize>| {
            d.map(|d| {
                (0..layers)
                    .map(|_| LowRankAdapterConfig::new(d, rank).init(device))
                    .collect()
            })
        };
        Self {
            id: blocks(dims[0]),
            image: blocks(dims[1]),
            text: blocks(dims[2]),
        }
    }

    /// The adapters of modality `m`'s encoder, one per block.
    pub fn get(&self, m: Modality) -> Option<&[LowRankAdapter]> {
        match m {
            Modality::Id => self.id.as_deref(),
            Modality::Image => self.image.as_deref(),
            Modality::Text => self.text.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_device;
    use burn::tensor::{Distribution, Tolerance};

    #[test]
    fn starts_at_zero_and_is_a_rank_limited_map() {
        let device = test_device();
        let adapter = LowRankAdapterConfig::new(6, 2).init(&device);
        let x = Tensor::<2>::random([5, 6], Distribution::Normal(0.0, 1.0), &device);
        let zero: f32 = adapter.forward(x.clone()).abs().max().into_scalar();
        assert_eq!(zero, 0.0, "B starts at zero");

        // With B set, the output is x A B, computed here by hand.
        let b = Tensor::<2>::random([2, 6], Distribution::Normal(0.0, 1.0), &device);
        let mut adapter = adapter;
        adapter.up.weight = adapter.up.weight.map(|_| b.clone());
        let a = adapter.down.weight.val();
        let expected = x.clone().matmul(a).matmul(b);
        adapter
            .forward(x)
            .to_data()
            .assert_approx_eq::<f32>(&expected.to_data(), Tolerance::absolute(1e-5));
    }
}
