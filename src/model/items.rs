//! The item tables: the frozen feature tables E_img and E_tex ([`ItemFeatures`]), the learnable
//! ID table E_id with its title rows and their shrinkage ([`ItemTable`], a block of its own), and
//! the catalogue's sizes and training counts that the model is built from ([`Catalogue`]).
//! How the rows of the items never seen in training are drawn afresh after training:
//! [`UnseenRowDraw`].

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::config::Modality;
use super::dropout::{binary_keep_mask, keep_mask};
use crate::data::{Dataset, DomainId};
use crate::error::{Error, Result};
use crate::features::FeatureMatrix;

mod unseen;

pub use unseen::{TRAINED_ROW_DONORS, UnseenRowDraw};

/// What the model needs to know of a catalogue to be built: the items of each domain (X's
/// items are global ids `0..n_x`, Y's `n_x..n_x + n_y`) and each item's interactions in the
/// training sequences (read by the row shrinkage of [`ItemTable`]). No interaction itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    sizes: [usize; 2],
    train_counts: Vec<u32>,
}

impl Catalogue {
    /// A catalogue of `sizes` items (X, Y) with their training interaction counts in global
    /// item order; an error unless there is one count per item.
    pub fn new(sizes: [usize; 2], train_counts: Vec<u32>) -> Result<Self> {
        let n = sizes[0] + sizes[1];
        if train_counts.len() != n {
            return Err(Error::InvalidInput(format!(
                "{} training counts for a catalogue of {n} items ({} X, {} Y)",
                train_counts.len(),
                sizes[0],
                sizes[1]
            )));
        }
        Ok(Self {
            sizes,
            train_counts,
        })
    }

    /// A catalogue of `sizes` items none of which has been seen in training.
    pub fn untrained(sizes: [usize; 2]) -> Self {
        Self {
            sizes,
            train_counts: vec![0; sizes[0] + sizes[1]],
        }
    }

    /// The catalogue of `dataset`: its domains' sizes and training counts.
    pub fn of(dataset: &Dataset) -> Self {
        Self {
            sizes: DomainId::BOTH.map(|d| dataset.domain(d).len as usize),
            train_counts: dataset.train_counts(),
        }
    }

    /// Items of domain `d`.
    pub fn len(&self, d: DomainId) -> usize {
        self.sizes[d.index()]
    }

    /// Items of both domains.
    pub fn num_items(&self) -> usize {
        self.sizes[0] + self.sizes[1]
    }

    /// Whether the catalogue has no item.
    pub fn is_empty(&self) -> bool {
        self.num_items() == 0
    }

    /// Every item's interactions in the training sequences, in global item order.
    pub fn train_counts(&self) -> &[u32] {
        &self.train_counts
    }
}

/// The frozen feature tables E_img and E_tex, rows L2-normalised, on a device. They are not part
/// of the [`super::LlmEmf`] module, so no optimizer ever sees them.
#[derive(Debug, Clone)]
pub struct ItemFeatures {
    image: Option<Tensor<2>>,
    text: Option<Tensor<2>>,
}

impl ItemFeatures {
    /// No frozen features (an ID-only model).
    pub fn none() -> Self {
        Self {
            image: None,
            text: None,
        }
    }

    /// Uploads the feature matrices, checking each has one row per item. Rows are L2-normalised
    /// (an all-zero row, an item without a feature, stays zero and so is neutral in every cosine).
    pub fn new(
        image: Option<&FeatureMatrix>,
        text: Option<&FeatureMatrix>,
        num_items: usize,
        device: &Device,
    ) -> Result<Self> {
        let upload = |m: Option<&FeatureMatrix>, what: &str| -> Result<Option<Tensor<2>>> {
            let Some(m) = m else { return Ok(None) };
            if m.rows() != num_items {
                return Err(Error::InvalidInput(format!(
                    "{what} features have {} rows, but the dataset has {num_items} items",
                    m.rows()
                )));
            }
            let dim = m.dim();
            let mut data = m.data().to_vec();
            for row in data.chunks_mut(dim) {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                if norm > 0.0 {
                    row.iter_mut().for_each(|v| *v /= norm);
                }
            }
            Ok(Some(Tensor::from_data(
                TensorData::new(data, [num_items, dim]),
                device,
            )))
        };
        Ok(Self {
            image: upload(image, "image")?,
            text: upload(text, "text")?,
        })
    }

    /// Rows of the feature tables (`None` without any).
    pub fn rows(&self) -> Option<usize> {
        self.image
            .as_ref()
            .or(self.text.as_ref())
            .map(|t| t.dims()[0])
    }

    /// Width of each modality's features (`None` for the ID modality and absent features).
    pub fn dims(&self) -> [Option<usize>; 3] {
        [
            None,
            self.image.as_ref().map(|t| t.dims()[1]),
            self.text.as_ref().map(|t| t.dims()[1]),
        ]
    }

    /// The table of modality `m` (`None` for the ID modality and absent features).
    pub fn table(&self, m: Modality) -> Option<&Tensor<2>> {
        match m {
            Modality::Id => None,
            Modality::Image => self.image.as_ref(),
            Modality::Text => self.text.as_ref(),
        }
    }

    /// The same tables wrapped for an autodiff device (no gradient is tracked for them).
    pub fn for_autodiff(&self) -> Self {
        Self {
            image: self.image.clone().map(|t| t.autodiff()),
            text: self.text.clone().map(|t| t.autodiff()),
        }
    }

    /// The tables' values, for tests and checks.
    pub fn values(&self, m: Modality) -> Option<Vec<f32>> {
        self.table(m).map(|t| {
            t.to_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default()
        })
    }
}

/// Configuration of an [`ItemTable`].
#[derive(Config, Debug)]
pub struct ItemTableConfig {
    /// Items of each domain (X, Y); rows are in global item order, X's first.
    pub sizes: [usize; 2],
    /// Width q of the rows.
    pub dim: usize,
    /// Standard deviation of the learned rows at initialisation, as a multiple of
    /// `1 / sqrt(dim)`.
    #[config(default = 1.0)]
    pub init_scale: f64,
    /// Width of the frozen text rows mapped into every row (title rows); `None`: learned
    /// rows only.
    #[config(default = "None")]
    pub text_dim: Option<usize>,
    /// With title rows, the probability of leaving a learned row out at a training step; with
    /// the unseen-item rows, of replacing a row by its domain's unseen row.
    #[config(default = 0.0)]
    pub row_dropout: f64,
    /// Without title rows: a learned unseen-item row per domain that stands in for the items
    /// never seen in training at inference, trained by `row_dropout`.
    #[config(default = false)]
    pub unseen_row: bool,
    /// Whether the shrinkage applies to the input rows ([`ItemTable::forward`]) as well as to
    /// the output rows ([`ItemTable::pick`]); see [`ItemTable::shrink_inputs`].
    #[config(default = true)]
    pub shrink_inputs: bool,
}

/// The ID table E_id as a block: one learned row per item, plus, with title rows, a learned
/// linear map (no bias) of the item's frozen text row, `e_i + W t_i`; at inference each learned
/// row may be shrunk towards the title by its training count ([`ItemTable::set_shrinkage`]).
///
/// Rows are small (std `init_scale / sqrt(dim)`) so that Adam's steps move their directions,
/// which is all a cosine head sees.
#[derive(Module, Debug)]
pub struct ItemTable {
    /// The learned rows `[items, dim]`.
    pub rows: Embedding,
    /// The map of the frozen text rows into the table (title rows).
    pub text_map: Option<Linear>,
    /// The probability of leaving a learned row out in training (title rows), or of replacing
    /// it by its domain's unseen-item row (`unseen`).
    pub row_dropout: f64,
    /// Without title rows, the learned unseen-item rows `[2, dim]` (X's, Y's).
    pub unseen: Option<Param<Tensor<2>>>,
    /// Items of X (the first rows) and of Y.
    pub sizes: [usize; 2],
    /// `ln(1 + c_i)` for every item, `c_i` its training interactions (not a parameter).
    pub train_log_counts: Tensor<1>,
    /// Per item domain (X, Y), the prior count `k` of the shrinkage; negative when off.
    shrinkage: [f64; 2],
    /// Whether the shrinkage applies to the input rows too (`ModelConfig::shrink_inputs`):
    /// when not, [`Self::forward`] reads the rows training gave, except that with title rows
    /// an item never seen in training is read by its title alone in a domain that shrinks.
    pub shrink_inputs: bool,
    /// Per item domain (X, Y), how the rows of the items never seen in training were drawn
    /// after training ([`Self::redraw_domain_unseen_rows`]); `None` where training left them.
    /// Not a parameter: the score settings hold it.
    #[module(skip)]
    unseen_draws: [Option<UnseenRowDraw>; 2],
}

impl ItemTableConfig {
    /// Builds the table for a catalogue whose training counts are `train_counts` (global item
    /// order); an error if the counts do not cover the table.
    pub fn init(&self, train_counts: &[u32], device: &Device) -> Result<ItemTable> {
        let n = self.sizes[0] + self.sizes[1];
        if train_counts.len() != n {
            return Err(Error::InvalidInput(format!(
                "item table: {} training counts for {n} rows",
                train_counts.len()
            )));
        }
        if self.dim == 0 || !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return Err(Error::Config(format!(
                "item table: width {} and init scale {} must be positive",
                self.dim, self.init_scale
            )));
        }
        if !(0.0..1.0).contains(&self.row_dropout) {
            return Err(Error::Config(format!(
                "item table: row dropout {} is not in [0, 1)",
                self.row_dropout
            )));
        }
        let q = self.dim;
        // Unit text rows; N(0, 1/q) weights give the map's output the scale of a row
        // (coordinates of std 1/sqrt(q)). Made before the rows: the order of the draws.
        let text_map = self.text_dim.map(|t| {
            LinearConfig::new(t, q)
                .with_bias(false)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: 1.0 / (q as f64).sqrt(),
                })
                .init(device)
        });
        let rows = EmbeddingConfig::new(n, q)
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: self.init_scale / (q as f64).sqrt(),
            })
            .init(device);
        let log_counts: Vec<f32> = train_counts.iter().map(|&c| (c as f32).ln_1p()).collect();
        let unseen = (self.unseen_row && self.text_dim.is_none()).then(|| {
            Initializer::Normal {
                mean: 0.0,
                std: self.init_scale / (q as f64).sqrt(),
            }
            .init([2, q], device)
        });
        Ok(ItemTable {
            rows,
            text_map,
            unseen,
            row_dropout: self.row_dropout,
            sizes: self.sizes,
            train_log_counts: Tensor::from_data(TensorData::new(log_counts, [n]), device),
            shrinkage: [-1.0; 2],
            unseen_draws: [None; 2],
            shrink_inputs: self.shrink_inputs,
        })
    }
}

impl ItemTable {
    /// Width of the rows.
    pub fn dim(&self) -> usize {
        self.rows.weight.dims()[1]
    }

    /// Whether the rows include the mapped titles.
    pub fn has_text(&self) -> bool {
        self.text_map.is_some()
    }

    /// The first row and the number of rows of domain `d`'s items.
    pub fn domain_rows(&self, d: DomainId) -> (usize, usize) {
        match d {
            DomainId::X => (0, self.sizes[0]),
            DomainId::Y => (self.sizes[0], self.sizes[1]),
        }
    }

    /// The rows of `items` (global ids), unnormalised.
    ///
    /// # Shapes
    /// - `items`: `[n]`; output `[n, dim]`
    pub fn forward(&self, items: Tensor<1, Int>, text: Option<&Tensor<2>>) -> Tensor<2> {
        let pick = |t: Tensor<2>| t.select(0, items.clone());
        if self.shrink_inputs {
            return self.pick(text, pick);
        }
        self.pick_scaled(text, pick, self.input_row_scale())
    }

    /// Rows picked by `pick` from the whole table (all items), unnormalised: the learned rows
    /// (left out with probability `row_dropout` under autodiff, scaled by the shrinkage
    /// outside it), plus the mapped `text` rows with title rows.
    ///
    /// # Panics
    /// With title rows, if `text` is `None` (the model's text features are its input).
    ///
    /// # Shapes
    /// - `text`: `[items, text_dim]`; output `[picked, dim]`
    pub fn pick(
        &self,
        text: Option<&Tensor<2>>,
        pick: impl Fn(Tensor<2>) -> Tensor<2>,
    ) -> Tensor<2> {
        self.pick_scaled(text, pick, self.row_scale())
    }

    /// [`Self::pick`] with the learned rows scaled by `scale` outside autodiff (`None`: whole):
    /// with title rows, the rest of the weight on the title; without them, on the domain's
    /// prior.
    fn pick_scaled(
        &self,
        text: Option<&Tensor<2>>,
        pick: impl Fn(Tensor<2>) -> Tensor<2>,
        scale: Option<Tensor<2>>,
    ) -> Tensor<2> {
        let rows = pick(self.rows.weight.val());
        let Some(map) = &self.text_map else {
            return self.pick_untitled(rows, &pick, scale);
        };
        let rows = if self.row_dropout > 0.0 && rows.device().is_autodiff() {
            let [picked, _] = rows.dims();
            let mask = keep_mask([picked, 1], self.row_dropout, &rows.device());
            rows * mask
        } else {
            rows
        };
        let rows = match scale {
            Some(scale) if !rows.device().is_autodiff() => rows * pick(scale),
            _ => rows,
        };
        let text = pick(text.expect("title rows without text features").clone());
        rows + map.forward(text)
    }

    /// The prior count `k` of domain `d`'s learned rows at inference: item i's learned row is
    /// scaled by `c_i / (c_i + k)`, `c_i` its training interactions, and the rest of its
    /// weight goes to a prior: with title rows its mapped title (added whole, as in training),
    /// without them the domain's learned unseen-item row or, without that, the mean learned
    /// row of the domain's items seen in training, weighted `k / (c_i + k)` (an item never
    /// seen in training then keeps its own row: see [`Self::redraw_unseen_rows`]). `None`
    /// (the default) uses every row whole. A learned row is an estimate from the item's own
    /// interactions: an item never seen in training has only ever been a sampled negative (or
    /// kept its random start), so its row holds nothing but "not this one". Shrinking it
    /// towards the prior (`k = 0`: only the unseen items' rows are replaced) places the items
    /// training did not reach where the prior puts them: by their title, or by the learned
    /// unseen-item row; untitled without it, a rare item leans towards an average trained item
    /// of its domain. Training is unchanged (the scale applies outside autodiff).
    pub fn shrinkage(&self, d: DomainId) -> Option<f64> {
        let k = self.shrinkage[d.index()];
        (k >= 0.0).then_some(k)
    }

    /// Sets [`Self::shrinkage`] of domain `d`'s rows; an error unless `k` is finite and not
    /// negative.
    pub fn set_shrinkage(&mut self, d: DomainId, k: Option<f64>) -> Result<()> {
        match k {
            None => self.shrinkage[d.index()] = -1.0,
            Some(k) => {
                if !(k.is_finite() && k >= 0.0) {
                    return Err(Error::Config(format!(
                        "row shrinkage {k} must be a finite count, 0 or more"
                    )));
                }
                self.shrinkage[d.index()] = k;
            }
        }
        Ok(())
    }

    /// The learned rows `[items, dim]`, read back to the host (row-major).
    fn host_rows(&self) -> Result<Vec<f32>> {
        self.rows
            .weight
            .val()
            .to_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::InvalidInput(format!("learned rows: {e:?}")))
    }

    /// `ln(1 + c_i)` of every item's training count `c_i`, read back to the host (global item
    /// order; 0 for an item never seen in training).
    pub fn host_log_counts(&self) -> Result<Vec<f32>> {
        self.train_log_counts
            .to_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::InvalidInput(format!("training counts: {e:?}")))
    }

    /// The picked rows of a table without titles: in training, each replaced by its domain's
    /// unseen-item row with probability `row_dropout` (with `unseen`); at inference, the rows
    /// of items never seen in training replaced by it, and, under the shrinkage (`scale`, the
    /// rows' `c / (c + k)`), every row leaning towards its prior by `k / (c + k)`: the unseen
    /// row, or without one the domain's mean trained row for the items seen in training (an
    /// item never seen keeps its own row).
    fn pick_untitled(
        &self,
        rows: Tensor<2>,
        pick: &impl Fn(Tensor<2>) -> Tensor<2>,
        scale: Option<Tensor<2>>,
    ) -> Tensor<2> {
        let device = rows.device();
        let Some(unseen) = &self.unseen else {
            return match scale {
                Some(scale) if !device.is_autodiff() => {
                    // An item never seen in training keeps its own row (scale 0 -> 1): the
                    // mean trained row is no prior for it (most trained rows are rare items'
                    // rows, pushed away from every history as negatives, so their mean ranks
                    // an item below a random order), while its own row is either the one
                    // `redraw_unseen_rows` drew afresh or the one training left.
                    let scale = scale.clone() + scale.equal_elem(0.0).float();
                    let rest = scale.clone().neg().add_scalar(1.0);
                    rows * pick(scale) + pick(self.domain_mean_rows()) * pick(rest)
                }
                _ => rows,
            };
        };
        let [picked, _] = rows.dims();
        // The unseen row of each picked item's domain: X's for flag 0, Y's for flag 1.
        let n = self.sizes[0] + self.sizes[1];
        let flags: Vec<f32> = (0..n)
            .map(|i| f32::from(u8::from(i >= self.sizes[0])))
            .collect();
        let y = pick(Tensor::from_data(TensorData::new(flags, [n, 1]), &device));
        let u = unseen.val();
        let prior =
            u.clone().narrow(0, 0, 1) * y.clone().neg().add_scalar(1.0) + u.narrow(0, 1, 1) * y;
        if device.is_autodiff() {
            if self.row_dropout <= 0.0 {
                return rows;
            }
            // A 0/1 mask: kept rows are not rescaled (the replacement is a row, not a zero).
            let keep = binary_keep_mask([picked, 1], self.row_dropout, &device);
            return rows * keep.clone() + prior * keep.neg().add_scalar(1.0);
        }
        let own = match scale {
            Some(scale) => pick(scale),
            // Whole rows for the items seen in training, the unseen row for the others.
            None => pick(
                self.train_log_counts
                    .clone()
                    .greater_elem(0.0)
                    .float()
                    .reshape([n, 1]),
            ),
        };
        rows * own.clone() + prior * own.neg().add_scalar(1.0)
    }

    /// Per item, the mean learned row of its domain's items seen in training (a zero row in a
    /// domain without any).
    ///
    /// # Shapes
    /// - output `[items, dim]`
    fn domain_mean_rows(&self) -> Tensor<2> {
        let weight = self.rows.weight.val();
        let q = self.dim();
        let parts = DomainId::BOTH.map(|d| {
            let (start, len) = self.domain_rows(d);
            let seen = self
                .train_log_counts
                .clone()
                .narrow(0, start, len)
                .greater_elem(0.0)
                .float()
                .reshape([len, 1]);
            let rows = weight.clone().narrow(0, start, len);
            let count = seen.clone().sum().clamp_min(1.0).reshape([1, 1]);
            let mean = (rows * seen).sum_dim(0) / count;
            mean.expand([len, q])
        });
        Tensor::cat(parts.to_vec(), 0)
    }

    /// The scale of every item's learned row as an input when the shrinkage leaves the inputs
    /// alone ([`Self::shrink_inputs`] off): with title rows, 0 for the items never seen in
    /// training in a domain that shrinks (read by their titles), 1 for the others, which is
    /// [`Self::row_scale`] with every shrinking domain's count at 0; `None` (whole rows) when
    /// neither domain shrinks or without title rows.
    ///
    /// # Shapes
    /// - output `[items, 1]`
    fn input_row_scale(&self) -> Option<Tensor<2>> {
        // Without title rows, inputs are whole.
        self.text_map.as_ref()?;
        let counts = DomainId::BOTH.map(|d| self.shrinkage(d).map(|_| 0.0));
        self.scale_for(counts)
    }

    /// The scale of every item's learned row under the shrinkage, `c_i / (c_i + k_D)` (0 for
    /// unseen items, also when `k_D = 0`; 1 in a domain without shrinkage); `None` when
    /// neither domain shrinks.
    ///
    /// # Shapes
    /// - output `[items, 1]`
    fn row_scale(&self) -> Option<Tensor<2>> {
        self.scale_for(DomainId::BOTH.map(|d| self.shrinkage(d)))
    }

    /// `c_i / (c_i + k_D)` for every item, with `k` the prior count per item domain (X, Y; 1 in
    /// a domain whose count is `None`); `None` when both are.
    ///
    /// # Shapes
    /// - output `[items, 1]`
    fn scale_for(&self, k: [Option<f64>; 2]) -> Option<Tensor<2>> {
        if k.iter().all(Option::is_none) {
            return None;
        }
        let parts = DomainId::BOTH.map(|d| {
            let (start, len) = self.domain_rows(d);
            // c from ln(1 + c): exactly 0 for unseen items.
            let counts = self
                .train_log_counts
                .clone()
                .narrow(0, start, len)
                .exp()
                .sub_scalar(1.0);
            match k[d.index()] {
                Some(k) => counts.clone() / counts.add_scalar(k).clamp_min(1e-12),
                None => counts.ones_like(),
            }
        });
        let n = self.sizes[0] + self.sizes[1];
        Some(Tensor::cat(parts.to_vec(), 0).reshape([n, 1]))
    }
}
