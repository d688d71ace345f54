//! Per target domain maps of the encoders' queries as a block ([`DomainQueryMaps`]).
//!
//! With cross-domain targets every encoder's last state is the query for both domains' items:
//! one vector, normalised as a whole, ranks X's table and Y's. A map per (sub-sequence,
//! modality, target domain) lets the query a domain's items are ranked by differ from the
//! other domain's: `q_{s,m,D} = h + W_{s,m,D} h`, the residual `W` learned and zero at the
//! start, so that a model built with the maps starts as the one without them.

use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use super::config::Modality;
use crate::data::DomainId;
use crate::data::batcher::SubSequence;

/// Residual linear maps of the queries, one per (sub-sequence, modality, target domain) whose
/// encoder exists: `h + W h`, `W` square, without bias, zero at initialisation.
#[derive(Module, Debug)]
pub struct DomainQueryMaps {
    /// The maps, indexed by [`Self::index`]; `None` where the sub-sequence has no encoder of
    /// that modality.
    pub maps: Vec<Option<Linear>>,
}

impl DomainQueryMaps {
    /// Maps for the encoders of width `widths[s][m]` (sub-sequence X, Y, merged by modality
    /// id, image, text; `None` where there is no encoder), both target domains each.
    pub fn new(widths: [[Option<usize>; 3]; 3], device: &Device) -> Self {
        let mut maps = Vec::with_capacity(18);
        for s in SubSequence::ALL {
            for m in Modality::ALL {
                for _ in DomainId::BOTH {
                    maps.push(widths[s.index()][m.index()].map(|w| {
                        LinearConfig::new(w, w)
                            .with_bias(false)
                            .with_initializer(Initializer::Zeros)
                            .init(device)
                    }));
                }
            }
        }
        DomainQueryMaps { maps }
    }

    /// The position of the map of (`s`, `m`, `d`) in [`Self::maps`].
    pub fn index(s: SubSequence, m: Modality, d: DomainId) -> usize {
        (s.index() * Modality::ALL.len() + m.index()) * DomainId::BOTH.len() + d.index()
    }

    /// The query of sub-sequence `s`'s encoder of modality `m` for the items of `d`: `h + W h`,
    /// or `h` where there is no map.
    ///
    /// # Shapes
    /// - `h`: `[rows, width]`; output `[rows, width]`
    pub fn forward(&self, s: SubSequence, m: Modality, d: DomainId, h: Tensor<2>) -> Tensor<2> {
        match self.maps.get(Self::index(s, m, d)).and_then(Option::as_ref) {
            Some(map) => h.clone() + map.forward(h),
            None => h,
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::TensorData;

    use super::*;

    #[test]
    fn maps_start_as_the_identity_and_differ_per_target_domain() {
        let device = crate::test_device();
        let widths = [[Some(2), None, None], [None; 3], [Some(2), None, Some(3)]];
        let mut maps = DomainQueryMaps::new(widths, &device);
        assert_eq!(maps.maps.len(), 18);
        let h = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]),
            &device,
        );
        let read = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
        // Zero at the start: every query is the encoder's state.
        for d in DomainId::BOTH {
            assert_eq!(
                read(maps.forward(SubSequence::X, Modality::Id, d, h.clone())),
                vec![1.0, 2.0, 3.0, 4.0]
            );
        }
        // Without an encoder there is no map.
        let at = |s, m, d| maps.maps[DomainQueryMaps::index(s, m, d)].is_some();
        assert!(at(SubSequence::Merged, Modality::Text, DomainId::Y));
        assert!(!at(SubSequence::Y, Modality::Id, DomainId::X));
        assert!(!at(SubSequence::X, Modality::Image, DomainId::X));
        // A map set for Y's items moves Y's queries only: W = [[0, 1], [0, 0]] (burn's
        // Linear computes x W, W stored [in, out]) adds x_0 to the second coordinate.
        let k = DomainQueryMaps::index(SubSequence::X, Modality::Id, DomainId::Y);
        let map = maps.maps[k].as_mut().unwrap();
        map.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![0.0f32, 1.0, 0.0, 0.0], [2, 2]),
            &device,
        ));
        assert_eq!(
            read(maps.forward(SubSequence::X, Modality::Id, DomainId::Y, h.clone())),
            vec![1.0, 3.0, 3.0, 7.0]
        );
        assert_eq!(
            read(maps.forward(SubSequence::X, Modality::Id, DomainId::X, h)),
            vec![1.0, 2.0, 3.0, 4.0]
        );
    }
}
