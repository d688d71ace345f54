//! The LLM-EMF model (Section 3 of the paper): the item tables, nine causal attention encoders
//! over {S^X, S^Y, S^{X+Y}} x {id, image, text}, cosine-similarity heads with a temperature, the
//! tri-modal fusion (Eq. 8) and the lambda-weighted domain weights (Eq. 10-11). The score it
//! ranks with is in [`super::score`], the training loss in [`super::loss`].
//!
//! `docs/model.md` maps every equation to the code and lists the choices the paper leaves open.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::adapter::{LowRankAdapter, SubSequenceAdapters};
use super::config::{Head, LossAverage, Modality, ModelConfig};
use super::domain_loss::{DomainLoss, DomainLossConfig};
use super::dropout::binary_keep_mask;
use super::encoder::{SequenceEncoder, SequenceEncoderConfig};
use super::fusion::{ModalityFusion, ModalityFusionConfig};
use super::items::{Catalogue, ItemFeatures, ItemTable, ItemTableConfig, UnseenRowDraw};
use crate::data::batcher::{Packed, SubSequence, SubSequenceBatch};
use crate::data::{Dataset, DomainId, ItemId};
use crate::error::{Error, Result};

/// The LLM-EMF model. Build it with [`ModelConfig::init`] (or [`LlmEmf::new`] for a dataset).
#[derive(Module, Debug)]
pub struct LlmEmf {
    /// E_id: the learned ID rows (with the mapped titles under `ModelConfig::id_text`),
    /// `None` when the ID modality is off.
    pub items: Option<ItemTable>,
    /// ID encoder of S^X.
    pub x_id: Option<SequenceEncoder>,
    /// Image encoder of S^X.
    pub x_image: Option<SequenceEncoder>,
    /// Text encoder of S^X.
    pub x_text: Option<SequenceEncoder>,
    /// ID encoder of S^Y.
    pub y_id: Option<SequenceEncoder>,
    /// Image encoder of S^Y.
    pub y_image: Option<SequenceEncoder>,
    /// Text encoder of S^Y.
    pub y_text: Option<SequenceEncoder>,
    /// ID encoder of S^{X+Y}.
    pub merged_id: Option<SequenceEncoder>,
    /// Image encoder of S^{X+Y}.
    pub merged_image: Option<SequenceEncoder>,
    /// Text encoder of S^{X+Y}.
    pub merged_text: Option<SequenceEncoder>,
    /// Learned map of the frozen image features to `id_dim` (`ModelConfig::project_features`).
    pub image_projection: Option<Linear>,
    /// Learned map of the frozen text features to `id_dim`.
    pub text_projection: Option<Linear>,
    /// Learnable log logit scales (`log(1 / tau)`) of the id, image and text heads, `[3]`.
    pub log_scale: Option<Param<Tensor<1>>>,
    /// Fixed logit scale `1 / tau` when the temperature is not learned.
    pub fixed_scale: f64,
    /// Items of domain X.
    pub n_x: usize,
    /// Items of domain Y.
    pub n_y: usize,
    /// The modality fusion head (Eq. 8).
    pub fusion: ModalityFusion,
    /// The sub-sequence weights of the loss and score (Eq. 10-11).
    pub domain_loss: DomainLoss,
    /// Whether S^X and S^Y are trained on both domains' items (`ModelConfig::cross_domain_targets`).
    pub cross_domain_targets: bool,
    /// Whether S^X and S^Y are read by the merged sequence's encoders
    /// (`ModelConfig::shared_encoders`, with both kinds of sub-sequence on).
    pub shared_encoders: bool,
    /// The low-rank adapters of the shared encoders, per sub-sequence in
    /// [`SubSequence::ALL`]'s order (`ModelConfig::adapter_rank`); empty without them.
    pub adapters: Vec<SubSequenceAdapters>,
    /// Whether the heads are inner products (`ModelConfig::head = "dot"`) instead of cosines.
    pub dot_heads: bool,
    /// Whether the histories read at inference leave out the items never seen in training
    /// (`ModelConfig::skip_untrained_inputs`).
    pub skip_untrained_inputs: bool,
    /// Whether the sub-sequences' queries are fused before one softmax
    /// (`ModelConfig::query_fusion`) instead of their probabilities mixed.
    pub query_fusion: bool,
    /// The probability that a history's item is masked out of an encoder's input in training
    /// (`ModelConfig::item_mask`).
    pub item_mask: f64,
}

/// Bounds of the learned logit scale: tau in [0.01, 1].
pub(super) const LOG_SCALE_MIN: f64 = 0.0;
pub(super) const LOG_SCALE_MAX: f64 = 4.605_170_185_988_091; // ln(100)

impl ModelConfig {
    /// Builds the model for a catalogue (its two domains' sizes and training counts) with the
    /// given frozen features, which decide, with `self.modalities`, the modalities used.
    pub fn init(
        &self,
        catalogue: &Catalogue,
        features: &ItemFeatures,
        device: &Device,
    ) -> Result<LlmEmf> {
        let config = self;
        config.validate()?;
        let (n_x, n_y) = (catalogue.len(DomainId::X), catalogue.len(DomainId::Y));
        let [_, image_dim, text_dim] = features.dims();
        if let Some(rows) = features.rows()
            && rows != catalogue.num_items()
        {
            return Err(Error::InvalidInput(format!(
                "the features have {rows} rows, but the catalogue has {} items",
                catalogue.num_items()
            )));
        }
        let feature_dims = [
            None,
            image_dim.filter(|_| config.modalities.image),
            text_dim.filter(|_| config.modalities.text),
        ];
        // The encoders' widths: the features' own, or id_dim when they are projected.
        let width = |d: usize| {
            if config.project_features {
                config.id_dim
            } else {
                d
            }
        };
        let dims = [
            config.modalities.id.then_some(config.id_dim),
            feature_dims[1].map(width),
            feature_dims[2].map(width),
        ];
        let projection = |input: Option<usize>| -> Option<Linear> {
            let input = input.filter(|_| config.project_features)?;
            // Inputs are unit rows scaled to unit variance per coordinate; N(0, 1/input)
            // weights keep that variance at the output.
            Some(
                LinearConfig::new(input, config.id_dim)
                    .with_bias(false)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: 1.0 / (input as f64).sqrt(),
                    })
                    .init(device),
            )
        };
        for (m, d) in Modality::ALL.iter().zip(dims) {
            if let Some(d) = d
                && d % config.heads != 0
            {
                return Err(Error::Config(format!(
                    "model: {} heads do not divide the {m:?} width {d}",
                    config.heads
                )));
            }
        }
        if dims.iter().all(Option::is_none) {
            return Err(Error::Config(
                "model: no modality left: switch the ID modality on or give image/text features"
                    .into(),
            ));
        }
        if config.skip_untrained_inputs
            && (dims[0].is_none()
                || dims[1].is_some()
                || dims[2].is_some()
                || (config.id_text && text_dim.is_some()))
        {
            return Err(Error::Config(
                "model: skip_untrained_inputs is for models that read items by their learned ID rows alone (an item's title or features say something about it even when training never saw it): switch it off, or the image and text modalities and id_text"
                    .into(),
            ));
        }
        // The item table comes first: the order of the random draws.
        let items = match dims[0] {
            Some(q) => Some(
                ItemTableConfig::new([n_x, n_y], q)
                    .with_init_scale(config.id_row_init)
                    .with_text_dim(text_dim.filter(|_| config.id_text))
                    .with_row_dropout(config.id_row_dropout)
                    .with_unseen_row(config.unseen_row && !config.id_text)
                    .with_shrink_inputs(config.shrink_inputs)
                    .init(catalogue.train_counts(), device)?,
            ),
            None => None,
        };
        let shared_encoders = config.shares_encoders();
        let encoder = |s: SubSequence, m: Modality| -> Option<SequenceEncoder> {
            let on = match s {
                SubSequence::Merged => config.merged_sequence,
                // S^X and S^Y borrow the merged sequence's encoders (`LlmEmf::encoder`).
                _ => config.single_domain_sequences && !shared_encoders,
            };
            let d = dims[m.index()]?;
            on.then(|| {
                SequenceEncoderConfig::new(d, config.max_len)
                    .with_layers(config.layers)
                    .with_heads(config.heads)
                    .with_ff_factor(config.ff_factor)
                    .with_activation(config.ff_activation)
                    .with_dropout(config.dropout)
                    .init(device)
            })
        };
        let scale = 1.0 / config.temperature.init;
        let log_scale = config.temperature.learnable.then(|| {
            let v = scale.ln().clamp(LOG_SCALE_MIN, LOG_SCALE_MAX) as f32;
            Param::from_tensor(Tensor::from_data(TensorData::new(vec![v; 3], [3]), device))
        });
        let used = [
            config.single_domain_sequences,
            config.single_domain_sequences,
            config.merged_sequence,
        ];
        Ok(LlmEmf {
            items,
            x_id: encoder(SubSequence::X, Modality::Id),
            x_image: encoder(SubSequence::X, Modality::Image),
            x_text: encoder(SubSequence::X, Modality::Text),
            y_id: encoder(SubSequence::Y, Modality::Id),
            y_image: encoder(SubSequence::Y, Modality::Image),
            y_text: encoder(SubSequence::Y, Modality::Text),
            merged_id: encoder(SubSequence::Merged, Modality::Id),
            merged_image: encoder(SubSequence::Merged, Modality::Image),
            merged_text: encoder(SubSequence::Merged, Modality::Text),
            image_projection: projection(feature_dims[1]),
            text_projection: projection(feature_dims[2]),
            log_scale,
            fixed_scale: scale,
            n_x,
            n_y,
            fusion: ModalityFusionConfig::new()
                .with_alpha(config.alpha)
                .with_beta(config.beta)
                .with_learnable(config.learned_modality_weights)
                .init(dims.map(|d| d.is_some()), device),
            domain_loss: DomainLossConfig::new()
                .with_lambda1(config.lambda1)
                .with_lambda2(config.lambda2)
                .with_learnable(config.learned_domain_weights)
                .with_mixture(config.objective.is_joint())
                .with_expert_loss(config.expert_loss)
                .with_per_sequence(config.loss_average == LossAverage::Sequence)
                .init(used, device),
            cross_domain_targets: config.cross_domain_targets,
            adapters: if shared_encoders && config.adapter_rank > 0 {
                SubSequence::ALL
                    .iter()
                    .map(|_| {
                        SubSequenceAdapters::new(dims, config.layers, config.adapter_rank, device)
                    })
                    .collect()
            } else {
                Vec::new()
            },
            shared_encoders,
            dot_heads: config.head == Head::Dot,
            skip_untrained_inputs: config.skip_untrained_inputs,
            query_fusion: config.query_fusion,
            item_mask: config.item_mask,
        })
    }
}

impl LlmEmf {
    /// Builds the model for `dataset`'s catalogue ([`ModelConfig::init`] with
    /// [`Catalogue::of`]).
    pub fn new(
        config: &ModelConfig,
        dataset: &Dataset,
        features: &ItemFeatures,
        device: &Device,
    ) -> Result<Self> {
        config.init(&Catalogue::of(dataset), features, device)
    }

    /// The encoder that reads sub-sequence `s` in modality `m`: its own, or the merged
    /// sequence's when the encoders are shared.
    pub fn encoder(&self, s: SubSequence, m: Modality) -> Option<&SequenceEncoder> {
        use {Modality as M, SubSequence as S};
        let s = if self.shared_encoders { S::Merged } else { s };
        match (s, m) {
            (S::X, M::Id) => self.x_id.as_ref(),
            (S::X, M::Image) => self.x_image.as_ref(),
            (S::X, M::Text) => self.x_text.as_ref(),
            (S::Y, M::Id) => self.y_id.as_ref(),
            (S::Y, M::Image) => self.y_image.as_ref(),
            (S::Y, M::Text) => self.y_text.as_ref(),
            (S::Merged, M::Id) => self.merged_id.as_ref(),
            (S::Merged, M::Image) => self.merged_image.as_ref(),
            (S::Merged, M::Text) => self.merged_text.as_ref(),
        }
    }

    /// The low-rank adapters (one per block) with which sub-sequence `s` reads modality
    /// `m`'s shared encoder; `None` without adapters.
    pub fn adapters(&self, s: SubSequence, m: Modality) -> Option<&[LowRankAdapter]> {
        self.adapters.get(s.index())?.get(m)
    }

    /// The sub-sequences the model reads.
    pub fn sub_sequences(&self) -> Vec<SubSequence> {
        SubSequence::ALL
            .into_iter()
            .filter(|&s| Modality::ALL.iter().any(|&m| self.encoder(s, m).is_some()))
            .collect()
    }

    /// The modalities the model uses.
    pub fn modalities(&self) -> Vec<Modality> {
        Modality::ALL
            .into_iter()
            .filter(|&m| {
                SubSequence::ALL
                    .iter()
                    .any(|&s| self.encoder(s, m).is_some())
            })
            .collect()
    }

    /// Fusion weights (alpha, beta, 1 - alpha - beta), renormalised over the modalities used
    /// (their current values when learned).
    pub fn modality_weights(&self) -> [f64; 3] {
        self.fusion.weights()
    }

    /// The sub-sequence weights (X, Y, merged) of the score of target domain `d` (Eq. 11):
    /// `(1, lambda1, lambda2)` by role, or their learned values.
    pub fn domain_weights(&self, d: DomainId) -> [f64; 3] {
        self.domain_loss.weights(d)
    }

    /// With title rows, the prior count of domain `d`'s learned rows at inference
    /// ([`ItemTable::shrinkage`]); `None` without it or without title rows.
    pub fn row_shrinkage(&self, d: DomainId) -> Option<f64> {
        self.items.as_ref().and_then(|t| t.shrinkage(d))
    }

    /// Sets [`Self::row_shrinkage`] of domain `d`'s rows ([`ItemTable::set_shrinkage`]); an
    /// error unless the model has ID rows and `k` is finite and not negative.
    pub fn set_row_shrinkage(&mut self, d: DomainId, k: Option<f64>) -> Result<()> {
        match (&mut self.items, k) {
            (Some(t), k) => t.set_shrinkage(d, k),
            (None, None) => Ok(()),
            (None, Some(k)) => Err(Error::Config(format!(
                "row shrinkage {k} needs ID rows: this model has none (the id modality is off)"
            ))),
        }
    }

    /// Draws fresh learned rows for the items never seen in training as `draw` says
    /// ([`ItemTable::redraw_unseen_rows`]); how many. An error without ID rows or with learned unseen-item rows.
    pub fn redraw_unseen_rows(&mut self, draw: UnseenRowDraw, seed: u64) -> Result<usize> {
        self.id_table_to_redraw()?.redraw_unseen_rows(draw, seed)
    }

    /// [`Self::redraw_unseen_rows`] for the items of domain `d` alone
    /// ([`ItemTable::redraw_domain_unseen_rows`]).
    pub fn redraw_domain_unseen_rows(
        &mut self,
        d: DomainId,
        draw: UnseenRowDraw,
        seed: u64,
    ) -> Result<usize> {
        self.id_table_to_redraw()?
            .redraw_domain_unseen_rows(d, draw, seed)
    }

    /// The ID table whose unseen rows are to be redrawn; an error without one.
    fn id_table_to_redraw(&mut self) -> Result<&mut ItemTable> {
        self.items.as_mut().ok_or_else(|| {
            Error::Config(
                "redrawing unseen rows needs ID rows: this model has none (the id modality is off)"
                    .into(),
            )
        })
    }

    /// Which items a history read at inference keeps (global item order): `None` when it
    /// keeps every item, else whether each item had an interaction in the training sequences
    /// (`ModelConfig::skip_untrained_inputs`). Read once per evaluation or server; apply it
    /// with [`readable_history`].
    pub fn readable_items(&self) -> Result<Option<Vec<bool>>> {
        if !self.skip_untrained_inputs {
            return Ok(None);
        }
        let table = self.items.as_ref().ok_or_else(|| {
            Error::Config("model: skip_untrained_inputs needs the ID table".into())
        })?;
        let counts = table.host_log_counts()?;
        Ok(Some(counts.iter().map(|&c| c > 0.0).collect()))
    }

    /// Whether the ID rows include the mapped titles (`ModelConfig::id_text` with text
    /// features).
    pub fn has_title_rows(&self) -> bool {
        self.items.as_ref().is_some_and(ItemTable::has_text)
    }

    /// Item vectors fed to the encoders.
    ///
    /// # Shapes
    /// - `items`: `[batch, len]`; output `[batch, len, width]`
    pub(super) fn embed(
        &self,
        m: Modality,
        items: Tensor<2, Int>,
        features: &ItemFeatures,
    ) -> Tensor<3> {
        let [batch, len] = items.dims();
        let rows = self.embed_rows(m, items.reshape([batch * len]), features);
        let width = rows.dims()[1];
        rows.reshape([batch, len, width])
    }

    /// The input vectors of modality `m` for a list of items.
    ///
    /// # Shapes
    /// - `items`: `[n]` global ids; output `[n, width]`
    pub(super) fn embed_rows(
        &self,
        m: Modality,
        flat: Tensor<1, Int>,
        features: &ItemFeatures,
    ) -> Tensor<2> {
        let rows = self.modality_rows(m, flat, features);
        if self.item_mask > 0.0 && rows.device().is_autodiff() {
            // A masked item leaves its position's vector alone; the others are not rescaled.
            let [n, _] = rows.dims();
            let keep = binary_keep_mask([n, 1], self.item_mask, &rows.device());
            return rows * keep;
        }
        rows
    }

    /// [`Self::embed_rows`] before the training-time item mask.
    fn modality_rows(
        &self,
        m: Modality,
        flat: Tensor<1, Int>,
        features: &ItemFeatures,
    ) -> Tensor<2> {
        match m {
            Modality::Id => {
                let table = self
                    .items
                    .as_ref()
                    .expect("an ID encoder implies the ID table");
                let q = table.dim();
                let rows = table.forward(flat, features.table(Modality::Text));
                // Rows of std 1/sqrt(q), rescaled to unit variance per coordinate as inputs.
                rows.mul_scalar((q as f64).sqrt())
            }
            _ => {
                let table = features
                    .table(m)
                    .expect("a feature encoder implies its feature table");
                let dim = table.dims()[1];
                // Unit rows scaled to unit variance per coordinate, like the ID inputs.
                let rows = table
                    .clone()
                    .select(0, flat)
                    .mul_scalar((dim as f64).sqrt());
                match self.projection(m) {
                    Some(p) => p.forward(rows),
                    None => rows,
                }
            }
        }
    }

    /// Encodes the real positions of one sub-sequence with one modality's encoder
    /// ([`SequenceEncoder::forward_packed`]): the encoder's output at those positions.
    ///
    /// # Shapes
    /// - output `[N, width]`, N the real positions in row-major order
    pub(super) fn encode_packed(
        &self,
        s: SubSequence,
        m: Modality,
        input: &SubSequenceBatch,
        packed: &Packed,
        features: &ItemFeatures,
    ) -> Option<Tensor<2>> {
        let encoder = self.encoder(s, m)?;
        let x = self.embed_rows(m, packed.items.clone(), features);
        Some(encoder.forward_packed_with(
            x,
            packed.positions.clone(),
            &packed.flat,
            &input.bias,
            self.adapters(s, m),
        ))
    }

    /// The first row and the number of rows of domain `d`'s items in the global item tables.
    pub(super) fn domain_rows(&self, d: DomainId) -> (usize, usize) {
        match d {
            DomainId::X => (0, self.n_x),
            DomainId::Y => (self.n_x, self.n_y),
        }
    }

    /// The L2-normalised output table of a modality restricted to one domain.
    ///
    /// # Shapes
    /// - output `[n_D, width]`
    pub(super) fn head(&self, m: Modality, d: DomainId, features: &ItemFeatures) -> Tensor<2> {
        let (start, len) = self.domain_rows(d);
        self.output_rows(m, features, |table| table.narrow(0, start, len))
    }

    /// The output rows of modality `m` for items of domain `d` outside the catalogue, scored
    /// by their text alone (`text`: `[items, text_dim]`, L2-normalised as
    /// [`ItemFeatures::new`] uploads rows): the ID modality's row is the mapped title plus the
    /// learned part the domain's items never seen in training share
    /// ([`ItemTable::new_item_learned_part`]; none in a domain that shrinks, which places
    /// those items by their titles alone), a zero row without title rows;
    /// the text modality's row is the text row (projected when the model projects features);
    /// the image modality's row is zero (no image: neutral in every cosine). Rows as
    /// [`Self::heads`] holds them.
    ///
    /// # Shapes
    /// - `text`: `[items, text_dim]`; output `[items, width of m's table]`
    pub fn text_only_rows(
        &self,
        m: Modality,
        d: DomainId,
        text: Tensor<2>,
        features: &ItemFeatures,
    ) -> Result<Tensor<2>> {
        let [n, _] = text.dims();
        let device = text.device();
        Ok(match m {
            Modality::Id => {
                let table = self.items.as_ref().expect("ID modality without ID table");
                match &table.text_map {
                    Some(map) => {
                        let titles = map.forward(text);
                        let rows = match table.new_item_learned_part(d)? {
                            Some(part) => {
                                let q = part.len();
                                let part =
                                    Tensor::<2>::from_data(TensorData::new(part, [1, q]), &device);
                                titles + part.expand([n, q])
                            }
                            None => titles,
                        };
                        self.id_output(rows)
                    }
                    None => Tensor::zeros([n, table.dim()], &device),
                }
            }
            _ => {
                let rows = match m {
                    Modality::Text => text,
                    _ => {
                        let width = features.dims()[m.index()].unwrap_or(1);
                        Tensor::zeros([n, width], &device)
                    }
                };
                match self.projection(m) {
                    Some(p) => l2_normalise(p.forward(rows)),
                    None => rows,
                }
            }
        })
    }

    /// Rows of a modality's output table: `pick` takes them from the whole table (all items),
    /// then ID rows are L2-normalised (cosine heads; dot heads keep their norms) and feature
    /// rows projected (feature rows are normalised when uploaded, and again after a
    /// projection).
    fn output_rows(
        &self,
        m: Modality,
        features: &ItemFeatures,
        pick: impl Fn(Tensor<2>) -> Tensor<2>,
    ) -> Tensor<2> {
        match m {
            Modality::Id => self.id_output(
                self.items
                    .as_ref()
                    .expect("ID modality without ID table")
                    .pick(features.table(Modality::Text), pick),
            ),
            _ => {
                let rows = pick(
                    features
                        .table(m)
                        .expect("feature modality without features")
                        .clone(),
                );
                match self.projection(m) {
                    Some(p) => l2_normalise(p.forward(rows)),
                    None => rows,
                }
            }
        }
    }

    /// ID rows as the output table holds them: unit rows for cosine heads, as they are for dot
    /// heads.
    fn id_output(&self, rows: Tensor<2>) -> Tensor<2> {
        if self.dot_heads {
            rows
        } else {
            l2_normalise(rows)
        }
    }

    /// A query `[rows, width]` as the heads read it: L2-normalised for cosine heads, scaled by
    /// `1 / sqrt(width)` for dot heads (an encoder's output leaves its final layer norm with a
    /// norm near `sqrt(width)`, so the dot logits start where the cosine ones do).
    pub(super) fn query(&self, h: Tensor<2>) -> Tensor<2> {
        if self.dot_heads {
            let [_, width] = h.dims();
            h.div_scalar((width as f64).sqrt())
        } else {
            l2_normalise(h)
        }
    }

    /// The learned map of a feature modality's frozen rows (`ModelConfig::project_features`).
    fn projection(&self, m: Modality) -> Option<&Linear> {
        match m {
            Modality::Id => None,
            Modality::Image => self.image_projection.as_ref(),
            Modality::Text => self.text_projection.as_ref(),
        }
    }

    /// Rows `ids` (indices inside domain `d`) of a modality's output table, L2-normalised.
    ///
    /// # Shapes
    /// - `ids`: `[n]`; output `[n, width]`
    pub(super) fn head_rows(
        &self,
        m: Modality,
        d: DomainId,
        ids: Tensor<1, Int>,
        features: &ItemFeatures,
    ) -> Tensor<2> {
        let (start, _) = self.domain_rows(d);
        let ids = if start == 0 {
            ids
        } else {
            ids.add_scalar(start as i64)
        };
        self.output_rows(m, features, |table| table.select(0, ids.clone()))
    }

    /// Multiplies cosines by the modality's logit scale `1 / tau`.
    pub(super) fn scale(&self, m: Modality, cosines: Tensor<2>) -> Tensor<2> {
        match &self.log_scale {
            Some(p) => {
                let s = p
                    .val()
                    .narrow(0, m.index(), 1)
                    .clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
                    .exp()
                    .reshape([1, 1]);
                cosines * s
            }
            None => cosines.mul_scalar(self.fixed_scale),
        }
    }

    /// The current temperatures tau of the id, image and text heads.
    pub fn temperatures(&self) -> [f64; 3] {
        match &self.log_scale {
            Some(p) => {
                let v = p
                    .val()
                    .to_data()
                    .convert::<f32>()
                    .try_to_vec::<f32>()
                    .unwrap_or_default();
                std::array::from_fn(|i| {
                    1.0 / (v.get(i).copied().unwrap_or(0.0) as f64)
                        .clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
                        .exp()
                })
            }
            None => [1.0 / self.fixed_scale; 3],
        }
    }
}

/// Row-wise L2 normalisation with a floor, so a zero row stays zero without a NaN gradient.
///
/// # Shapes
/// - `x`: `[n, d]`; output `[n, d]`
pub fn l2_normalise(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).add_scalar(1e-12).sqrt();
    x / norm
}

/// A history as the encoders read it: the items `readable` keeps ([`LlmEmf::readable_items`]),
/// in their order; borrowed unchanged when every item is kept. An item outside `readable` is
/// kept (the caller checks ids against its catalogue).
pub fn readable_history<'a>(
    history: &'a [ItemId],
    readable: Option<&[bool]>,
) -> std::borrow::Cow<'a, [ItemId]> {
    match readable {
        Some(keep)
            if history
                .iter()
                .any(|&i| keep.get(i as usize) == Some(&false)) =>
        {
            history
                .iter()
                .copied()
                .filter(|&i| keep.get(i as usize) != Some(&false))
                .collect::<Vec<_>>()
                .into()
        }
        _ => history.into(),
    }
}
