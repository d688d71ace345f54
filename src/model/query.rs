//! Per-target-domain queries: a residual linear map of an encoder's output for each target
//! domain, so that one sequence representation can ask a different question of each domain's
//! item table.
//!
//! In the paper every encoder's last hidden state is compared, as it is, with the target
//! domain's items (Eq. 5-7). Once a sub-sequence predicts the next item of both domains
//! (`cross_domain_targets`) and the merged sequence S^{X+Y} serves both, the same vector has to
//! rank Food items and Kitchen items; a per-domain map lets it do both.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::data::DomainId;

/// Configuration of a [`DomainQuery`].
#[derive(Config, Debug)]
pub struct DomainQueryConfig {
    /// Width of the encoder output (and of the query).
    pub width: usize,
}

/// `query_D(h) = h + h W_D + b_D` for target domain D (X or Y), with W and b started at zero,
/// so that an untrained map is the identity (the paper's query).
///
/// # Shapes
/// - input `[n, width]`; output `[n, width]`
#[derive(Module, Debug)]
pub struct DomainQuery {
    /// The map of target domain X.
    pub x: Linear,
    /// The map of target domain Y.
    pub y: Linear,
}

impl DomainQueryConfig {
    /// Builds the two maps, each started at the identity.
    pub fn init(&self, device: &Device) -> DomainQuery {
        let linear = || {
            LinearConfig::new(self.width, self.width)
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
        DomainQuery {
            x: linear(),
            y: linear(),
        }
    }
}

impl DomainQuery {
    /// The query of the hidden states `h` for target domain `d`.
    ///
    /// # Shapes
    /// - `h`: `[n, width]`; output `[n, width]`
    pub fn forward(&self, d: DomainId, h: Tensor<2>) -> Tensor<2> {
        let map = match d {
            DomainId::X => &self.x,
            DomainId::Y => &self.y,
        };
        h.clone() + map.forward(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_device;
    use burn::tensor::Distribution;

    #[test]
    fn starts_at_the_identity_and_maps_each_domain_on_its_own() {
        let device = test_device();
        let mut query = DomainQueryConfig::new(4).init(&device);
        let h = Tensor::<2>::random([3, 4], Distribution::Normal(0.0, 1.0), &device);
        for d in DomainId::BOTH {
            query
                .forward(d, h.clone())
                .into_data()
                .assert_approx_eq::<f32>(&h.clone().into_data(), Default::default());
        }
        // A non-zero map of Y leaves X's query unchanged.
        query.y.weight = query.y.weight.map(|w| w.ones_like());
        query
            .forward(DomainId::X, h.clone())
            .into_data()
            .assert_approx_eq::<f32>(&h.clone().into_data(), Default::default());
        let y = query.forward(DomainId::Y, h.clone());
        let expected = h.clone() + h.sum_dim(1).repeat_dim(1, 4);
        y.into_data()
            .assert_approx_eq::<f32>(&expected.into_data(), Default::default());
    }
}
