//! The LLM-EMF model (Section 3 of the paper): a learnable ID table, frozen image and text
//! tables, nine causal attention encoders over {S^X, S^Y, S^{X+Y}} x {id, image, text},
//! cosine-similarity heads with a temperature, tri-modal fusion in log space, the
//! lambda-weighted domain loss (Eq. 9-10) and the cross-domain score (Eq. 11-12).
//!
//! `docs/model.md` maps every equation to the code below and lists the choices the paper leaves
//! open.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::attention::FfActivation;
use super::dropout::keep_mask;
use super::encoder::{SequenceEncoder, SequenceEncoderConfig};
use super::fusion::{ModalityFusion, ModalityFusionConfig, log_sum_exp};
use super::loss::{DomainLoss, DomainLossConfig};
use super::query::{DomainQuery, DomainQueryConfig};
use crate::data::batcher::{EvalPlan, SequenceBatcher, SubSequence, SubSequenceBatch};
use crate::data::{Dataset, DomainId};
use crate::error::{Error, Result};
use crate::features::FeatureMatrix;

/// An item modality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// The learnable ID embedding E_id.
    Id,
    /// Frozen image features E_img.
    Image,
    /// Frozen text features E_tex.
    Text,
}

impl Modality {
    /// All three, in the order of the fusion weights (alpha, beta, 1 - alpha - beta).
    pub const ALL: [Modality; 3] = [Modality::Id, Modality::Image, Modality::Text];

    /// 0, 1, 2 for id, image, text.
    pub fn index(self) -> usize {
        match self {
            Modality::Id => 0,
            Modality::Image => 1,
            Modality::Text => 2,
        }
    }
}

/// Temperature of the cosine heads: logits are `cos(h, e) / tau`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemperatureConfig {
    /// Initial (or fixed) temperature tau. Default 0.1 (logit scale 10).
    pub init: f64,
    /// Learn one temperature per modality (clamped to tau in [0.01, 1]). Default true.
    pub learnable: bool,
}

impl Default for TemperatureConfig {
    fn default() -> Self {
        Self {
            init: 0.1,
            learnable: true,
        }
    }
}

/// Which modalities the model may use. A modality is used when it is switched on here *and* its
/// features are given; a modality without features is switched off, never faked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModalitySwitches {
    /// Use the learnable ID table. Default true.
    pub id: bool,
    /// Use image features when given. Default true.
    pub image: bool,
    /// Use text features when given. Default true.
    pub text: bool,
}

impl Default for ModalitySwitches {
    fn default() -> Self {
        Self {
            id: true,
            image: true,
            text: true,
        }
    }
}

/// Configuration of [`LlmEmf`]. Defaults follow the paper's implementation details where it gives
/// them (q = 256, dropout 0.3, lambda1 = 0.3, lambda2 = 0.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Width q of the learnable ID embeddings. Default 256.
    pub id_dim: usize,
    /// Attention blocks per encoder. Default 2.
    pub layers: usize,
    /// Attention heads (must divide every modality's width). Default 2.
    pub heads: usize,
    /// Feed-forward width as a multiple of the model width. Default 1.
    pub ff_factor: usize,
    /// Activation of the feed-forward layers: `relu` (SASRec's, the default) or `gelu`.
    pub ff_activation: FfActivation,
    /// Dropout. Default 0.3.
    pub dropout: f64,
    /// Longest sub-sequence fed to an encoder (older items are dropped). Default 50.
    pub max_len: usize,
    /// Fusion weight alpha of the ID modality (Eq. 8). Default 0.5.
    pub alpha: f64,
    /// Fusion weight beta of the image modality (Eq. 8); text gets `1 - alpha - beta`.
    /// Default 0.25.
    pub beta: f64,
    /// lambda1: weight of the other domain's sub-sequence (Eq. 10-11). Default 0.3.
    pub lambda1: f64,
    /// lambda2: weight of the merged sequence (Eq. 10-11). Default 0.1.
    pub lambda2: f64,
    /// Temperature of the cosine heads.
    pub temperature: TemperatureConfig,
    /// Modalities to use.
    pub modalities: ModalitySwitches,
    /// Use the single-domain sub-sequences S^X and S^Y. Default true. With `false` (and
    /// `merged_sequence`), the model reads only S^{X+Y}: a SASRec-like single-sequence baseline.
    pub single_domain_sequences: bool,
    /// Use the merged sequence S^{X+Y}. Default true.
    pub merged_sequence: bool,
    /// Train S^X and S^Y to predict the next item of *both* domains, so that the other domain's
    /// term of Eq. 11 (`P^Y(x | S)` for target X) is a trained prediction, and read `L^{other}`
    /// of Eq. 10 as the other sub-sequence's loss on the target domain's items. Default false:
    /// S^X predicts only X items and S^Y only Y items.
    pub cross_domain_targets: bool,
    /// The training objective over the sub-sequences: `separate` (Eq. 10, the paper's) or
    /// `mixture` (the Eq. 11 score of the target, trained directly; needs
    /// `cross_domain_targets`). Default `separate`.
    pub objective: DomainObjective,
    /// Learn the sub-sequence weights of Eq. 11 (per target domain, started at the lambdas);
    /// needs the mixture objective. Default false.
    pub learned_domain_weights: bool,
    /// Learn the modality weights of Eq. 8 (started at alpha/beta). Default false.
    pub learned_modality_weights: bool,
    /// Under the mixture objective, weight of the experts' own losses (each sub-sequence and
    /// modality's NLL of the target, averaged), added to the mixture's. Default 0.
    pub expert_loss: f64,
    /// Count positions back from the most recent item. Default false.
    pub positions_from_end: bool,
    /// Give every encoder a query per target domain ([`super::DomainQuery`]: `h + h W_D +
    /// b_D`, started at the identity) before its cosine head. Default false (the paper
    /// compares the encoder's output itself).
    pub domain_queries: bool,
    /// Map the frozen image and text features to the ID width `id_dim` with a learned linear
    /// map (no bias), used for both the encoders' inputs and the output tables, so that their
    /// encoders run at `id_dim` instead of the features' own width (384 for MiniLM, 512 for
    /// CLIP). The features themselves stay frozen. Default false (the paper: encoders at the
    /// features' width, cosine against the frozen vectors).
    pub project_features: bool,
    /// One encoder per modality for all three sub-sequences: S^X and S^Y are read by the
    /// merged sequence's encoder, which then also learns from each domain's items alone (the
    /// single-domain sub-sequences act as views of the merged sequence with the other
    /// domain's items dropped). No effect unless both `single_domain_sequences` and
    /// `merged_sequence` are on. Default false (the paper: nine encoders of their own).
    pub shared_encoders: bool,
    /// A learned logit bias per item (started at 0), added to every expert's logits before
    /// its softmax: a popularity prior that cosine heads, blind to norms, cannot express.
    /// Default false (the paper: cosine logits only).
    pub item_bias: bool,
    /// Text-enriched ID rows: the ID modality's vector of an item, as encoder input and in the
    /// output table, is its learned row plus a learned linear map (no bias) of its frozen text
    /// features, `e_i + W t_i`. An item without text (a zero row) keeps its learned row alone.
    /// Used when text features are given (`features.text`) and the ID modality is on, whether
    /// or not the text modality itself is; without text features the ID rows are the learned
    /// rows, as the image and text modalities are off without their features. Default false
    /// (the paper: ID rows learned from interactions alone).
    pub id_text: bool,
    /// With `id_text`, one text map per domain (X's items through one, Y's through the other)
    /// instead of one map shared by both catalogues. Default false.
    pub id_text_per_domain: bool,
    /// Standard deviation of the learned ID rows at initialisation, as a multiple of
    /// `1 / sqrt(id_dim)`. With `id_text`, a value well below 1 starts every item at its mapped
    /// text (the learned row then holds what interactions add to it), so an item that training
    /// never reaches keeps a vector made of its title instead of a random one. Must be positive.
    /// Default 1.
    pub id_row_init: f64,
    /// With `id_text`, the probability that an item's learned row is left out of its ID
    /// vector at a training step (the whole row, independently per use: each position of the
    /// input and each row of the output table; the rows kept are scaled by `1 / (1 - p)`), so
    /// that the mapped text alone must place the item, as it has to for items that training
    /// rarely reaches. Inference uses every row. Must be in [0, 1); 0 (the default) leaves
    /// training unchanged.
    pub id_row_dropout: f64,
}

/// How the sub-sequences' predictions enter the training loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainObjective {
    /// Eq. 10: `L^D + lambda1 L^other + lambda2 L^{X+Y}`, each a separate mean NLL.
    #[default]
    Separate,
    /// `-log(w_own P^own + w_other P^other + w_merged P^{X+Y})` of every target: the score
    /// that ranks (Eq. 11) is the one trained.
    Mixture,
    /// A product of experts: the experts' (sub-sequence x modality) scaled cosine logits,
    /// weighted by the sub-sequence and modality weights (renormalised over the sub-sequences
    /// present in the row), summed, and soft-maxed once. Scores rank by the same weighted sum.
    /// An item must suit every expert, instead of one (the mixture's max-like behaviour over
    /// peaked distributions).
    Product,
}

impl DomainObjective {
    /// Whether the objective trains the score that ranks (mixture or product), which needs
    /// every sub-sequence to predict the target's domain.
    pub fn is_joint(self) -> bool {
        matches!(self, DomainObjective::Mixture | DomainObjective::Product)
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            id_dim: 256,
            layers: 2,
            heads: 2,
            ff_factor: 1,
            ff_activation: FfActivation::Relu,
            dropout: 0.3,
            max_len: 50,
            alpha: 0.5,
            beta: 0.25,
            lambda1: 0.3,
            lambda2: 0.1,
            temperature: TemperatureConfig::default(),
            modalities: ModalitySwitches::default(),
            single_domain_sequences: true,
            merged_sequence: true,
            cross_domain_targets: false,
            objective: DomainObjective::Separate,
            learned_domain_weights: false,
            learned_modality_weights: false,
            expert_loss: 0.0,
            positions_from_end: false,
            domain_queries: false,
            project_features: false,
            shared_encoders: false,
            item_bias: false,
            id_text: false,
            id_text_per_domain: false,
            id_row_init: 1.0,
            id_row_dropout: 0.0,
        }
    }
}

impl ModelConfig {
    /// Whether the three sub-sequences share their encoders: `shared_encoders` with both the
    /// single-domain and the merged sub-sequences on.
    pub fn shares_encoders(&self) -> bool {
        self.shared_encoders && self.single_domain_sequences && self.merged_sequence
    }

    /// The recommended preset's model (docs/model.md, "Beyond the paper"): the paper's
    /// encoders and heads, every sub-sequence trained on both domains' next items, the Eq. 11
    /// score trained directly with learned sub-sequence and modality weights, positions counted
    /// from the most recent item.
    pub fn recommended() -> Self {
        Self {
            // The sizes every multi-seed table of docs/results.md was measured with (Food-Kitchen,
            // Art-Office); q = 128 over-fitted Food-Kitchen within 8 epochs.
            id_dim: 64,
            dropout: 0.5,
            cross_domain_targets: true,
            objective: DomainObjective::Mixture,
            learned_domain_weights: true,
            learned_modality_weights: true,
            expert_loss: 1.0,
            positions_from_end: true,
            ..Self::default()
        }
    }

    /// The SASRec-like baseline: ID embeddings only, merged sequence only.
    pub fn id_only_single_sequence(mut self) -> Self {
        self.modalities = ModalitySwitches {
            id: true,
            image: false,
            text: false,
        };
        self.single_domain_sequences = false;
        self.merged_sequence = true;
        self
    }

    /// The batcher that feeds this model: its longest sub-sequence, targets, position numbering
    /// and sub-sequences.
    pub fn batcher(&self, dataset: &Dataset) -> SequenceBatcher {
        SequenceBatcher::new(dataset, self.max_len)
            .with_cross_domain_targets(self.cross_domain_targets)
            .with_positions_from_end(self.positions_from_end)
            .with_sub_sequences([
                self.single_domain_sequences,
                self.single_domain_sequences,
                self.merged_sequence,
            ])
    }

    /// Checks the values that no type can.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("model: {m}")));
        if self.id_dim == 0 || self.layers == 0 || self.heads == 0 || self.max_len == 0 {
            return bad("id_dim, layers, heads and max_len must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        if !(self.id_row_init.is_finite() && self.id_row_init > 0.0) {
            return bad(format!("id_row_init {} must be positive", self.id_row_init));
        }
        if !(0.0..1.0).contains(&self.id_row_dropout) {
            return bad(format!(
                "id_row_dropout {} is not in [0, 1)",
                self.id_row_dropout
            ));
        }
        if self.id_row_dropout > 0.0 && !self.id_text {
            return bad(
                "id_row_dropout needs id_text (without text in the ID rows, a dropped row leaves nothing)"
                    .into(),
            );
        }
        let text_weight = 1.0 - self.alpha - self.beta;
        if self.alpha < 0.0 || self.beta < 0.0 || text_weight < -1e-9 {
            return bad(format!(
                "alpha ({}) and beta ({}) must be non-negative with alpha + beta <= 1",
                self.alpha, self.beta
            ));
        }
        if !(self.expert_loss.is_finite() && self.expert_loss >= 0.0) {
            return bad("expert_loss must be non-negative".into());
        }
        if self.lambda1 < 0.0 || self.lambda2 < 0.0 {
            return bad("lambda1 and lambda2 must be non-negative".into());
        }
        if self.temperature.init.is_nan() || self.temperature.init <= 0.0 {
            return bad("temperature.init must be positive".into());
        }
        if !self.single_domain_sequences && !self.merged_sequence {
            return bad(
                "at least one of single_domain_sequences and merged_sequence must be on".into(),
            );
        }
        if !(self.modalities.id || self.modalities.image || self.modalities.text) {
            return bad("at least one modality must be on".into());
        }
        if self.objective.is_joint() && !self.cross_domain_targets {
            return bad(
                "the mixture and product objectives need cross_domain_targets: every sub-sequence must predict the target's domain"
                    .into(),
            );
        }
        if self.learned_domain_weights && !self.objective.is_joint() {
            return bad(
                "learned_domain_weights needs the mixture or product objective (under Eq. 10's separate losses, learned weights would shrink the largest loss instead of fitting the score)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The frozen feature tables E_img and E_tex, rows L2-normalised, on a device. They are not part
/// of the [`LlmEmf`] module, so no optimizer ever sees them.
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

    /// Width of each modality's features (`None` for the ID modality and absent features).
    pub fn dims(&self) -> [Option<usize>; 3] {
        [
            None,
            self.image.as_ref().map(|t| t.dims()[1]),
            self.text.as_ref().map(|t| t.dims()[1]),
        ]
    }

    pub(super) fn table(&self, m: Modality) -> Option<&Tensor<2>> {
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

/// Shared negatives of one training step for one domain (sampled softmax).
#[derive(Debug, Clone)]
pub struct DomainNegatives {
    /// `[K]` negative indices inside the domain.
    pub ids: Tensor<1, Int>,
    /// `[n_D]` log expected count `log(K * q(i))` of every item of the domain under the sampler.
    pub log_q: Tensor<1>,
}

/// The LLM-EMF model. Build it with [`LlmEmf::new`].
#[derive(Module, Debug)]
pub struct LlmEmf {
    /// E_id: `[n_x + n_y, q]`, `None` when the ID modality is off.
    pub item_id: Option<Embedding>,
    /// Encoders of S^X.
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
    /// Per-target-domain queries of the ID encoders' outputs (`ModelConfig::domain_queries`).
    pub id_query: Option<DomainQuery>,
    /// Per-target-domain queries of the image encoders' outputs.
    pub image_query: Option<DomainQuery>,
    /// Per-target-domain queries of the text encoders' outputs.
    pub text_query: Option<DomainQuery>,
    /// Learned logit bias of every item (`ModelConfig::item_bias`), `[n_x + n_y]`.
    pub item_bias: Option<Param<Tensor<1>>>,
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
    /// Learned map of the frozen text features into the ID rows (`ModelConfig::id_text`); with
    /// `ModelConfig::id_text_per_domain`, the map of X's items.
    pub id_text_projection: Option<Linear>,
    /// The map of Y's items with `ModelConfig::id_text_per_domain`.
    pub id_text_projection_y: Option<Linear>,
    /// `ModelConfig::id_row_dropout`: the probability of leaving a learned row out in training.
    pub id_row_dropout: f64,
    /// `ln(1 + c_i)` for every item, `c_i` its interactions in the training sequences
    /// (computed from the dataset when the model is built; not a parameter, not saved).
    pub train_log_counts: Tensor<1>,
    /// Per target domain (X, Y), the exponent `gamma_D` of the popularity adjustment: every
    /// score of domain D is multiplied by `(1 + c_i)^gamma_D` (added as `gamma_D ln(1 + c_i)`
    /// to a log-score), chosen on the validation split by `TrainConfig::fit_popularity`.
    /// 0 (the default) leaves Eq. 11 unchanged. Not saved in the model file: kept in the
    /// score settings beside it ([`ScoreSettings`]).
    pub popularity_exponent: [f64; 2],
    /// Per target domain (X, Y), `b_D`: the scores of domain D's items without any training
    /// interaction are multiplied by `exp(b_D)` (`b_D` added to a log-score), chosen on the
    /// validation split after the exponent. 0 (the default) leaves them unchanged. Kept in
    /// the score settings like the exponent.
    pub unseen_boost: [f64; 2],
    /// Per item domain (X, Y), the prior count `k` of the learned rows at inference
    /// ([`Self::row_shrinkage`]); negative when off (the default). Private so that the
    /// sentinel never leaks.
    row_shrinkage: [f64; 2],
}

/// The settings of the score that a validation fit may change after training and that the
/// model file does not hold (fixed weights and the popularity adjustment are constants, not
/// parameters): saved as JSON beside the model file and applied when the model is loaded
/// ([`LlmEmf::apply_score_settings`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoreSettings {
    /// Modality weights (id, image, text) of the fusion (Eq. 8).
    pub modality_weights: [f64; 3],
    /// Sub-sequence weights (X, Y, merged) per target domain (X, Y) (Eq. 11).
    pub domain_weights: [[f64; 3]; 2],
    /// Exponents of the popularity adjustment per target domain (X, Y).
    #[serde(default)]
    pub popularity_exponent: [f64; 2],
    /// Log-boosts of items without training interactions per target domain (X, Y).
    #[serde(default)]
    pub unseen_boost: [f64; 2],
    /// Per item domain (X, Y), the prior count of the learned ID rows at inference
    /// ([`LlmEmf::row_shrinkage`]); `None` (the default) uses the domain's rows whole.
    #[serde(default)]
    pub row_shrinkage: [Option<f64>; 2],
}

/// Bounds of the learned logit scale: tau in [0.01, 1].
const LOG_SCALE_MIN: f64 = 0.0;
const LOG_SCALE_MAX: f64 = 4.605_170_185_988_091; // ln(100)
/// Added to a masked (empty) sub-sequence's log-score: exp() of it is exactly 0 in f32.
const MASKED: f32 = -1.0e30;

impl LlmEmf {
    /// Builds the model for `dataset`'s domains with the given frozen features (which decide,
    /// with `config.modalities`, the modalities used).
    pub fn new(
        config: &ModelConfig,
        dataset: &Dataset,
        features: &ItemFeatures,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let n_x = dataset.domain(DomainId::X).len as usize;
        let n_y = dataset.domain(DomainId::Y).len as usize;
        let [_, image_dim, text_dim] = features.dims();
        let feature_dims = [
            None,
            image_dim.filter(|_| config.modalities.image),
            text_dim.filter(|_| config.modalities.text),
        ];
        // The encoders' widths: the features' own, or id_dim when they are projected.
        let dims = [
            config.modalities.id.then_some(config.id_dim),
            feature_dims[1].map(|d| {
                if config.project_features {
                    config.id_dim
                } else {
                    d
                }
            }),
            feature_dims[2].map(|d| {
                if config.project_features {
                    config.id_dim
                } else {
                    d
                }
            }),
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
        let id_text_map = || match (config.id_text, dims[0], text_dim) {
            // Unit text rows; N(0, 1/q) weights give the map's output the scale of an ID row
            // (coordinates of std 1/sqrt(q)).
            (true, Some(q), Some(t)) => Some(
                LinearConfig::new(t, q)
                    .with_bias(false)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: 1.0 / (q as f64).sqrt(),
                    })
                    .init(device),
            ),
            _ => None,
        };
        let id_text_projection = id_text_map();
        let id_text_projection_y = if config.id_text_per_domain {
            id_text_map()
        } else {
            None
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
        let query = |width: Option<usize>| {
            width
                .filter(|_| config.domain_queries)
                .map(|w| DomainQueryConfig::new(w).init(device))
        };
        let scale = 1.0 / config.temperature.init;
        let log_scale = config.temperature.learnable.then(|| {
            let v = scale.ln().clamp(LOG_SCALE_MIN, LOG_SCALE_MAX) as f32;
            Param::from_tensor(Tensor::from_data(TensorData::new(vec![v; 3], [3]), device))
        });
        Ok(Self {
            // Small rows (std 1/sqrt(q), times `id_row_init`) so that Adam's steps move their
            // directions, which is all the cosine head sees; `embed` rescales them by sqrt(q) as
            // encoder inputs.
            item_id: dims[0].map(|q| {
                EmbeddingConfig::new(n_x + n_y, q)
                    .with_initializer(Initializer::Normal {
                        mean: 0.0,
                        std: config.id_row_init / (q as f64).sqrt(),
                    })
                    .init(device)
            }),
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
            id_query: query(dims[0]),
            image_query: query(dims[1]),
            text_query: query(dims[2]),
            item_bias: config
                .item_bias
                .then(|| Param::from_tensor(Tensor::zeros([n_x + n_y], device))),
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
                .with_product(config.objective == DomainObjective::Product)
                .with_expert_loss(config.expert_loss)
                .init(
                    [
                        config.single_domain_sequences,
                        config.single_domain_sequences,
                        config.merged_sequence,
                    ],
                    device,
                ),
            cross_domain_targets: config.cross_domain_targets,
            shared_encoders,
            id_text_projection,
            id_text_projection_y,
            id_row_dropout: config.id_row_dropout,
            train_log_counts: Tensor::from_data(
                TensorData::new(
                    dataset
                        .train_counts()
                        .iter()
                        .map(|&c| (c as f32).ln_1p())
                        .collect::<Vec<f32>>(),
                    [dataset.num_items()],
                ),
                device,
            ),
            popularity_exponent: [0.0; 2],
            unseen_boost: [0.0; 2],
            row_shrinkage: [-1.0; 2],
        })
    }

    /// The encoder that reads sub-sequence `s` in modality `m`: its own, or the merged
    /// sequence's when the encoders are shared.
    pub(super) fn encoder(&self, s: SubSequence, m: Modality) -> Option<&SequenceEncoder> {
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

    /// The query that modality `m`'s encoders ask of target domain `d`'s items: the encoder
    /// output itself, or its per-domain map when `domain_queries` is on.
    ///
    /// # Shapes
    /// - `h`: `[n, width]`; output `[n, width]`
    pub(super) fn query(&self, m: Modality, d: DomainId, h: Tensor<2>) -> Tensor<2> {
        let map = match m {
            Modality::Id => self.id_query.as_ref(),
            Modality::Image => self.image_query.as_ref(),
            Modality::Text => self.text_query.as_ref(),
        };
        match map {
            Some(map) => map.forward(d, h),
            None => h,
        }
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

    /// The popularity adjustment of domain `d`'s scores, `gamma_D ln(1 + c_i)` per item of the
    /// domain, plus `b_D` for the items without training interactions (to add to a
    /// log-score); `None` when both are 0.
    ///
    /// # Shapes
    /// - output `[n_D]`
    pub fn log_prior(&self, d: DomainId) -> Option<Tensor<1>> {
        if !self.has_log_prior(d) {
            return None;
        }
        let (gamma, boost) = (
            self.popularity_exponent[d.index()],
            self.unseen_boost[d.index()],
        );
        let (start, len) = self.domain_rows(d);
        let log_counts = self.train_log_counts.clone().narrow(0, start, len);
        let unseen = log_counts.clone().equal_elem(0.0).float();
        Some(log_counts.mul_scalar(gamma) + unseen.mul_scalar(boost))
    }

    /// Whether domain `d`'s scores have a popularity adjustment ([`Self::log_prior`]).
    pub fn has_log_prior(&self, d: DomainId) -> bool {
        self.popularity_exponent[d.index()] != 0.0 || self.unseen_boost[d.index()] != 0.0
    }

    /// Sets the popularity adjustment's exponent of target domain `d`
    /// ([`Self::popularity_exponent`]); an error unless finite.
    pub fn set_popularity_exponent(&mut self, d: DomainId, gamma: f64) -> Result<()> {
        self.popularity_exponent[d.index()] = finite(gamma, "popularity exponent")?;
        Ok(())
    }

    /// Sets the log-boost of target domain `d`'s items without training interactions
    /// ([`Self::unseen_boost`]); an error unless finite.
    pub fn set_unseen_boost(&mut self, d: DomainId, boost: f64) -> Result<()> {
        self.unseen_boost[d.index()] = finite(boost, "unseen-item boost")?;
        Ok(())
    }

    /// With title rows (`ModelConfig::id_text`), the prior count `k` of domain `d`'s learned
    /// rows at inference: item i's learned row is scaled by `c_i / (c_i + k)`, `c_i` its interactions
    /// in the training sequences, before its mapped title is added; `None` (the default) uses
    /// every row whole. A learned row is an estimate from the item's own interactions: an item
    /// never seen in training has only ever been a sampled negative, so its row holds nothing
    /// but "not this one", and an item seen once or twice holds little more. Shrinking the row
    /// towards the title (`k = 0`: only the unseen items' rows are dropped) lets the title
    /// place the items training did not reach. Training is unchanged (the scale applies
    /// outside autodiff); chosen on the validation split by `TrainConfig::fit_row_shrinkage`
    /// (one count for both domains' rows) and kept in the score settings. The rows feed both
    /// the encoders' inputs and the candidates' vectors.
    pub fn row_shrinkage(&self, d: DomainId) -> Option<f64> {
        let k = self.row_shrinkage[d.index()];
        (k >= 0.0).then_some(k)
    }

    /// Sets [`Self::row_shrinkage`] of domain `d`'s rows; an error unless the model has title
    /// rows and `k` is finite and not negative.
    pub fn set_row_shrinkage(&mut self, d: DomainId, k: Option<f64>) -> Result<()> {
        match k {
            None => self.row_shrinkage[d.index()] = -1.0,
            Some(k) => {
                if self.id_text_projection.is_none() {
                    return Err(Error::Config(format!(
                        "row shrinkage {k} needs title rows (model.id_text): without them a shrunk row leaves nothing"
                    )));
                }
                if !(k.is_finite() && k >= 0.0) {
                    return Err(Error::Config(format!(
                        "row shrinkage {k} must be a finite count, 0 or more"
                    )));
                }
                self.row_shrinkage[d.index()] = k;
            }
        }
        Ok(())
    }

    /// The score's settings that the model file does not hold ([`ScoreSettings`]).
    pub fn score_settings(&self) -> ScoreSettings {
        ScoreSettings {
            modality_weights: self.modality_weights(),
            domain_weights: DomainId::BOTH.map(|d| self.domain_weights(d)),
            popularity_exponent: self.popularity_exponent,
            unseen_boost: self.unseen_boost,
            row_shrinkage: DomainId::BOTH.map(|d| self.row_shrinkage(d)),
        }
    }

    /// Applies saved score settings: the fixed modality and sub-sequence weights (learned ones
    /// live in the model file and are left as loaded) and the popularity adjustment.
    pub fn apply_score_settings(&mut self, s: &ScoreSettings) -> Result<()> {
        if self.fusion.logits.is_none() {
            self.fusion.set_weights(s.modality_weights)?;
        }
        if self.domain_loss.logits.is_none() {
            for d in DomainId::BOTH {
                self.domain_loss
                    .set_weights(d, s.domain_weights[d.index()])?;
            }
        }
        for d in DomainId::BOTH {
            self.set_popularity_exponent(d, s.popularity_exponent[d.index()])?;
            self.set_unseen_boost(d, s.unseen_boost[d.index()])?;
            self.set_row_shrinkage(d, s.row_shrinkage[d.index()])?;
        }
        Ok(())
    }

    /// Whether scores combine the sub-sequences as a product of experts
    /// ([`DomainObjective::Product`]) rather than Eq. 11's mixture of probabilities.
    pub fn product_of_experts(&self) -> bool {
        self.domain_loss.product
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
        match m {
            Modality::Id => {
                let table = self
                    .item_id
                    .as_ref()
                    .expect("an ID encoder implies the ID table");
                let q = table.weight.dims()[1];
                let rows = match &self.id_text_projection {
                    None => table.forward(items),
                    Some(_) => {
                        let flat = items.reshape([batch * len]);
                        self.id_rows(features, |t| t.select(0, flat.clone()))
                            .reshape([batch, len, q])
                    }
                };
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
                    .select(0, items.reshape([batch * len]))
                    .mul_scalar((dim as f64).sqrt());
                let rows = match self.projection(m) {
                    Some(p) => p.forward(rows),
                    None => rows,
                };
                let width = rows.dims()[1];
                rows.reshape([batch, len, width])
            }
        }
    }

    /// Encodes one sub-sequence with one modality's encoder.
    ///
    /// # Shapes
    /// - output `[batch, len, width]`
    pub(super) fn encode(
        &self,
        s: SubSequence,
        m: Modality,
        input: &SubSequenceBatch,
        features: &ItemFeatures,
    ) -> Option<Tensor<3>> {
        let encoder = self.encoder(s, m)?;
        let x = self.embed(m, input.items.clone(), features);
        Some(encoder.forward(x, input.positions.clone(), &input.bias))
    }

    /// The first row and the number of rows of domain `d`'s items in the global item tables.
    fn domain_rows(&self, d: DomainId) -> (usize, usize) {
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

    /// The learned logit biases of domain `d`'s items (`ModelConfig::item_bias`), added to
    /// every expert's logits; `None` without them.
    ///
    /// # Shapes
    /// - output `[n_D]`
    pub fn domain_bias(&self, d: DomainId) -> Option<Tensor<1>> {
        let (start, len) = self.domain_rows(d);
        self.item_bias
            .as_ref()
            .map(|b| b.val().narrow(0, start, len))
    }

    /// Rows of a modality's output table: `pick` takes them from the whole table (all items),
    /// then ID rows are L2-normalised and feature rows projected (feature rows are normalised
    /// when uploaded, and again after a projection).
    fn output_rows(
        &self,
        m: Modality,
        features: &ItemFeatures,
        pick: impl Fn(Tensor<2>) -> Tensor<2>,
    ) -> Tensor<2> {
        match m {
            Modality::Id => l2_normalise(self.id_rows(features, pick)),
            _ => self.project_rows(
                m,
                pick(
                    features
                        .table(m)
                        .expect("feature modality without features")
                        .clone(),
                ),
            ),
        }
    }

    /// Rows of the ID table picked by `pick` from the whole table (all items), unnormalised:
    /// the learned rows, plus the mapped text rows with `ModelConfig::id_text`.
    ///
    /// # Shapes
    /// - output `[picked, id_dim]`
    fn id_rows(&self, features: &ItemFeatures, pick: impl Fn(Tensor<2>) -> Tensor<2>) -> Tensor<2> {
        let rows = pick(
            self.item_id
                .as_ref()
                .expect("ID modality without ID table")
                .weight
                .val(),
        );
        let Some(p) = &self.id_text_projection else {
            return rows;
        };
        let rows = if self.id_row_dropout > 0.0 && rows.device().is_autodiff() {
            let [picked, _] = rows.dims();
            let mask = keep_mask([picked, 1], self.id_row_dropout, &rows.device());
            rows * mask
        } else {
            rows
        };
        let rows = match self.row_scale() {
            Some(scale) if !rows.device().is_autodiff() => rows * pick(scale),
            _ => rows,
        };
        let text = pick(
            features
                .table(Modality::Text)
                .expect("model.id_text without text features")
                .clone(),
        );
        match &self.id_text_projection_y {
            None => rows + p.forward(text),
            Some(py) => {
                // 1 for Y's items, 0 for X's, picked like the rows.
                let n = self.n_x + self.n_y;
                let is_y: Vec<f32> = (0..n).map(|i| f32::from(u8::from(i >= self.n_x))).collect();
                let is_y = pick(Tensor::from_data(
                    TensorData::new(is_y, [n, 1]),
                    &rows.device(),
                ));
                let x = p.forward(text.clone());
                rows + x.clone() + (py.forward(text) - x) * is_y
            }
        }
    }

    /// The scale of every item's learned row under [`Self::row_shrinkage`], `c_i / (c_i + k_D)`
    /// (0 for unseen items, also when `k_D = 0`; 1 in a domain without shrinkage); `None`
    /// when neither domain shrinks.
    ///
    /// # Shapes
    /// - output `[items, 1]`
    fn row_scale(&self) -> Option<Tensor<2>> {
        if DomainId::BOTH
            .iter()
            .all(|&d| self.row_shrinkage(d).is_none())
        {
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
            match self.row_shrinkage(d) {
                Some(k) => counts.clone() / counts.add_scalar(k).clamp_min(1e-12),
                None => counts.ones_like(),
            }
        });
        let n = self.n_x + self.n_y;
        Some(Tensor::cat(parts.to_vec(), 0).reshape([n, 1]))
    }

    /// The learned map of a feature modality's frozen rows (`ModelConfig::project_features`).
    fn projection(&self, m: Modality) -> Option<&Linear> {
        match m {
            Modality::Id => None,
            Modality::Image => self.image_projection.as_ref(),
            Modality::Text => self.text_projection.as_ref(),
        }
    }

    /// Output-table rows of a feature modality from its (unit) frozen rows: the rows
    /// themselves, or their projection, normalised again.
    ///
    /// # Shapes
    /// - `rows`: `[n, feature width]`; output `[n, width]`
    fn project_rows(&self, m: Modality, rows: Tensor<2>) -> Tensor<2> {
        match self.projection(m) {
            Some(p) => l2_normalise(p.forward(rows)),
            None => rows,
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
        let start = match d {
            DomainId::X => 0,
            DomainId::Y => self.n_x,
        };
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

    /// Log of the cross-domain score of every item of `domain` (Eq. 11): the fused
    /// probabilities (Eq. 8) of the target domain's sub-sequence, of the other domain's
    /// sub-sequence (weight lambda1) and of the merged sequence (weight lambda2), each from its
    /// last position. An empty sub-sequence contributes nothing; the merged sequence always
    /// contributes (for an empty history it gives the encoders' "no history" preference).
    ///
    /// # Shapes
    /// - output `[batch, n_domain]`
    pub fn score(
        &self,
        plan: &EvalPlan,
        inputs: &[SubSequenceBatch; 3],
        features: &ItemFeatures,
        domain: DomainId,
    ) -> Tensor<2> {
        let heads = self.heads(domain, features);
        self.score_with_heads(plan, inputs, features, domain, &heads)
    }

    /// The L2-normalised output tables of `domain`, one per modality (`None` for modalities
    /// the model does not use): what [`Self::score_with_heads`] reads. They depend on the
    /// model only, so a server computes them once.
    ///
    /// # Shapes
    /// - each: `[n_domain, width]`
    pub fn heads(&self, domain: DomainId, features: &ItemFeatures) -> [Option<Tensor<2>>; 3] {
        let used = self.modalities();
        Modality::ALL.map(|m| used.contains(&m).then(|| self.head(m, domain, features)))
    }

    /// The queries of the Eq. 11 score, before any item is scored: per sub-sequence with a
    /// positive weight, its weight and whether each row has an item of it; per modality, its
    /// weight and the L2-normalised queries of every such sub-sequence (through the
    /// per-domain query maps when present). A server scores them against its own copy of the
    /// output tables ([`Self::heads`]); [`Self::score_parts`] does it on the device.
    ///
    /// # Shapes
    /// - each queries tensor `[parts * batch, width]`, sub-sequence-major (rows `k * batch ..
    ///   (k + 1) * batch` belong to `parts[k]`)
    pub fn score_queries(
        &self,
        plan: &EvalPlan,
        inputs: &[SubSequenceBatch; 3],
        features: &ItemFeatures,
        domain: DomainId,
    ) -> ScoreQueries {
        let subs = self.scored_sub_sequences(domain);
        let parts = subs
            .iter()
            .map(|&(s, weight)| {
                let b = inputs[s.index()].items.dims()[0];
                (
                    s,
                    weight,
                    (0..b)
                        .map(|i| s == SubSequence::Merged || plan.non_empty(s, i))
                        .collect(),
                )
            })
            .collect();
        let modalities = self
            .scored_modalities(domain)
            .into_iter()
            .map(|(m, weight)| {
                let queries: Vec<Tensor<2>> = subs
                    .iter()
                    .filter_map(|&(s, _)| {
                        self.sub_sequence_queries(s, m, domain, &inputs[s.index()], features)
                    })
                    .collect();
                (m, weight, Tensor::cat(queries, 0))
            })
            .collect();
        ScoreQueries {
            domain,
            parts,
            modalities,
        }
    }

    /// The sub-sequences that enter the Eq. 11 score of target domain `domain` (those with an
    /// encoder and a positive weight), with their weights.
    pub fn scored_sub_sequences(&self, domain: DomainId) -> Vec<(SubSequence, f64)> {
        let weights = self.domain_loss.weights(domain);
        self.sub_sequences()
            .into_iter()
            .filter(|s| weights[s.index()] > 0.0)
            .map(|s| (s, weights[s.index()]))
            .collect()
    }

    /// The modalities that enter the Eq. 11 score of `domain` (those with an encoder for every
    /// scored sub-sequence), with their fusion weights.
    pub fn scored_modalities(&self, domain: DomainId) -> Vec<(Modality, f64)> {
        let subs = self.scored_sub_sequences(domain);
        let weights = self.fusion.weights();
        if subs.is_empty() {
            return Vec::new();
        }
        self.modalities()
            .into_iter()
            .filter(|&m| subs.iter().all(|&(s, _)| self.encoder(s, m).is_some()))
            .map(|m| (m, weights[m.index()]))
            .collect()
    }

    /// The L2-normalised query of the last position of one sub-sequence and modality
    /// (through the domain's query map when present), as [`Self::score_queries`] stacks them;
    /// `None` when the model has no encoder for that pair. Rows are independent, so a caller
    /// may batch each sub-sequence by its own lengths.
    ///
    /// # Shapes
    /// - output `[batch, width]`
    pub fn sub_sequence_queries(
        &self,
        s: SubSequence,
        m: Modality,
        domain: DomainId,
        input: &SubSequenceBatch,
        features: &ItemFeatures,
    ) -> Option<Tensor<2>> {
        let encoder = self.encoder(s, m)?;
        let x = self.embed(m, input.items.clone(), features);
        let last = encoder.forward_last(x, input.positions.clone(), &input.bias);
        Some(l2_normalise(self.query(m, domain, last)))
    }

    /// The pieces of the Eq. 11 score before any mixing, for callers that mix on the host (a
    /// server's fused top-k): per sub-sequence with a positive weight, its weight, whether each
    /// row has an item of it, and per modality the modality weight and the scaled cosine logits
    /// of every item of `domain`.
    ///
    /// # Shapes
    /// - each logits tensor `[batch, n_domain]`
    pub fn score_parts(
        &self,
        plan: &EvalPlan,
        inputs: &[SubSequenceBatch; 3],
        features: &ItemFeatures,
        domain: DomainId,
        heads: &[Option<Tensor<2>>; 3],
    ) -> Vec<ScorePart> {
        self.score_parts_of(self.score_queries(plan, inputs, features, domain), heads)
    }

    /// [`Self::score_parts`] from queries made elsewhere ([`Self::score_queries`], or rows of
    /// [`Self::sub_sequence_queries`] stacked in the same layout) and the output tables of
    /// their domain ([`Self::heads`]).
    ///
    /// # Shapes
    /// - each logits tensor `[batch, n_domain]`
    pub fn score_parts_of(
        &self,
        queries: ScoreQueries,
        heads: &[Option<Tensor<2>>; 3],
    ) -> Vec<ScorePart> {
        let mut parts: Vec<ScorePart> = queries
            .parts
            .into_iter()
            .map(|(sub_sequence, weight, present)| ScorePart {
                sub_sequence,
                weight,
                present,
                modalities: Vec::new(),
            })
            .collect();
        let b = parts.first().map_or(0, |p| p.present.len());
        for (m, weight, logits) in self.stacked_logits(queries.domain, queries.modalities, heads) {
            for (k, part) in parts.iter_mut().enumerate() {
                part.modalities
                    .push((m, weight, logits.clone().narrow(0, k * b, b)));
            }
        }
        parts
    }

    /// The scaled cosine logits of stacked queries ([`ScoreQueries::modalities`]) against
    /// every item of their domain `domain` (plus the items' learned biases when the model has
    /// them), per modality with an output table in `heads`: one matrix product per modality for
    /// all sub-sequences, in the queries' row order.
    ///
    /// # Shapes
    /// - each output `[parts * batch, n_domain]`
    pub fn stacked_logits(
        &self,
        domain: DomainId,
        modalities: Vec<(Modality, f64, Tensor<2>)>,
        heads: &[Option<Tensor<2>>; 3],
    ) -> Vec<(Modality, f64, Tensor<2>)> {
        modalities
            .into_iter()
            .filter_map(|(m, weight, queries)| {
                let head = heads[m.index()].as_ref()?;
                // For a few queries, `head [n, w] x queries^T` reads the large table once in
                // its stored layout (no packed copy of it per call); for many, the result must
                // come out row-major, so the queries are the left operand.
                let logits = if queries.dims()[0] <= 16 {
                    head.clone().matmul(queries.transpose()).transpose()
                } else {
                    queries.matmul(head.clone().transpose())
                };
                let logits = self.scale(m, logits);
                let logits = match self.domain_bias(domain) {
                    Some(bias) => {
                        let [n] = bias.dims();
                        logits + bias.reshape([1, n])
                    }
                    None => logits,
                };
                Some((m, weight, logits))
            })
            .collect()
    }

    /// [`Self::score`] with the output tables given (from [`Self::heads`] for this domain).
    ///
    /// # Shapes
    /// - output `[batch, n_domain]`
    pub fn score_with_heads(
        &self,
        plan: &EvalPlan,
        inputs: &[SubSequenceBatch; 3],
        features: &ItemFeatures,
        domain: DomainId,
        heads: &[Option<Tensor<2>>; 3],
    ) -> Tensor<2> {
        let device = inputs[0].items.device();
        let parts = self.score_parts(plan, inputs, features, domain, heads);
        let scores = if self.domain_loss.product {
            product_scores(parts, &device)
        } else {
            self.mixture_scores(domain, parts, &device)
        };
        match self.log_prior(domain) {
            Some(prior) => {
                let [n] = prior.dims();
                scores + prior.reshape([1, n])
            }
            None => scores,
        }
    }

    /// Eq. 11's log-mixture of the parts (the mixture objective's score).
    ///
    /// # Shapes
    /// - output `[batch, n_domain]`
    fn mixture_scores(
        &self,
        domain: DomainId,
        parts: Vec<ScorePart>,
        device: &Device,
    ) -> Tensor<2> {
        let terms = parts
            .into_iter()
            .map(|part| {
                let per_modality = part
                    .modalities
                    .into_iter()
                    .map(|(m, _, logits)| (m.index(), logits.clone() - log_sum_exp(logits)))
                    .collect();
                let log_p = self.fusion.fuse(per_modality);
                let log_p = if part.present.iter().all(|&p| p) {
                    log_p
                } else {
                    let b = part.present.len();
                    let mask: Vec<f32> = part
                        .present
                        .iter()
                        .map(|&p| if p { 0.0 } else { MASKED })
                        .collect();
                    log_p + Tensor::<2>::from_data(TensorData::new(mask, [b, 1]), device)
                };
                (part.sub_sequence, log_p)
            })
            .collect();
        self.domain_loss.mix(domain, terms)
    }
}

/// `value`, or an error naming it (`what`) unless it is finite.
fn finite(value: f64, what: &str) -> Result<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::Config(format!("{what} {value} must be finite")))
    }
}

/// The product-of-experts score of the parts: `sum_{s,m} w_s a_m logits_{s,m} / sum_s w_s`
/// over the sub-sequences present in each row (a ranking score, not a probability).
///
/// # Shapes
/// - output `[batch, n_domain]`
fn product_scores(parts: Vec<ScorePart>, device: &Device) -> Tensor<2> {
    let b = parts.first().map_or(0, |p| p.present.len());
    let norm: Vec<f32> = (0..b)
        .map(|i| {
            parts
                .iter()
                .filter(|p| p.present[i])
                .map(|p| p.weight)
                .sum::<f64>()
                .max(1e-12) as f32
        })
        .collect();
    let mut total: Option<Tensor<2>> = None;
    for part in parts {
        let c: Vec<f32> = part
            .present
            .iter()
            .zip(&norm)
            .map(|(&p, &z)| if p { part.weight as f32 / z } else { 0.0 })
            .collect();
        let c = Tensor::<2>::from_data(TensorData::new(c, [b, 1]), device);
        for (_, a, logits) in part.modalities {
            let term = logits * c.clone().mul_scalar(a);
            total = Some(match total {
                Some(t) => t + term,
                None => term,
            });
        }
    }
    total.expect("a scored part")
}

/// The queries of the Eq. 11 score ([`LlmEmf::score_queries`]).
#[derive(Debug, Clone)]
pub struct ScoreQueries {
    /// The target domain whose items are scored.
    pub domain: DomainId,
    /// Per sub-sequence with a positive weight: the sub-sequence, its weight, and whether each
    /// row has an item of it.
    pub parts: Vec<(SubSequence, f64, Vec<bool>)>,
    /// Per modality: the modality, its weight, and the normalised queries
    /// `[parts * batch, width]`, sub-sequence-major.
    pub modalities: Vec<(Modality, f64, Tensor<2>)>,
}

/// One sub-sequence's share of the Eq. 11 score ([`LlmEmf::score_parts`]).
#[derive(Debug, Clone)]
pub struct ScorePart {
    /// The sub-sequence.
    pub sub_sequence: SubSequence,
    /// Its weight in the score (lambda or learned).
    pub weight: f64,
    /// Whether each row has an item of it (an empty sub-sequence contributes nothing).
    pub present: Vec<bool>,
    /// Per modality: the modality, its weight (alpha, beta, ...) and the scaled logits
    /// `[batch, n_domain]`.
    pub modalities: Vec<(Modality, f64, Tensor<2>)>,
}

/// Row-wise L2 normalisation with a floor, so a zero row stays zero without a NaN gradient.
///
/// # Shapes
/// - `x`: `[n, d]`; output `[n, d]`
pub fn l2_normalise(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).add_scalar(1e-12).sqrt();
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::batcher::{SequenceBatcher, TrainBatch};
    use crate::test_device;
    use burn::optim::{AdamConfig, GradientsParams};

    struct Setup {
        data: crate::data::SyntheticData,
        config: ModelConfig,
    }

    fn setup() -> Setup {
        let data = crate::test_data(40, 30, 40);
        let config = ModelConfig {
            id_dim: 8,
            max_len: 12,
            dropout: 0.0,
            ..Default::default()
        };
        Setup { data, config }
    }

    fn features(s: &Setup, device: &Device) -> ItemFeatures {
        crate::test_features(&s.data, device)
    }

    fn train_batch(s: &Setup, device: &Device) -> TrainBatch {
        let batcher = SequenceBatcher::new(&s.data.dataset, s.config.max_len);
        let seqs: Vec<_> = s.data.dataset.train().unwrap().iter().take(16).collect();
        batcher.plan_train(&seqs).to_tensors(device)
    }

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar()
    }

    #[test]
    fn nine_encoders_with_all_modalities_and_fewer_without_features() {
        let s = setup();
        let device = test_device();
        let model =
            LlmEmf::new(&s.config, &s.data.dataset, &features(&s, &device), &device).unwrap();
        assert_eq!(model.sub_sequences().len(), 3);
        assert_eq!(model.modalities(), Modality::ALL.to_vec());
        let encoders = SubSequence::ALL
            .iter()
            .flat_map(|&q| Modality::ALL.map(|m| model.encoder(q, m).is_some()))
            .filter(|&b| b)
            .count();
        assert_eq!(encoders, 9);
        // Without features, image and text are switched off, not faked.
        let id_only =
            LlmEmf::new(&s.config, &s.data.dataset, &ItemFeatures::none(), &device).unwrap();
        assert_eq!(id_only.modalities(), vec![Modality::Id]);
        assert_eq!(id_only.modality_weights(), [1.0, 0.0, 0.0]);
        let baseline = LlmEmf::new(
            &s.config.clone().id_only_single_sequence(),
            &s.data.dataset,
            &features(&s, &device),
            &device,
        )
        .unwrap();
        assert_eq!(baseline.sub_sequences(), vec![SubSequence::Merged]);
        assert_eq!(baseline.modalities(), vec![Modality::Id]);
    }

    #[test]
    fn id_text_rows_add_the_mapped_text_when_text_features_are_given() {
        let s = setup();
        let device = test_device();
        let config = ModelConfig {
            id_text: true,
            modalities: ModalitySwitches {
                id: true,
                image: false,
                text: false,
            },
            ..s.config.clone()
        };
        // Item 3 has no text: a zero row.
        let (rows, dim) = (s.data.text.rows(), s.data.text.dim());
        let mut text = s.data.text.data().to_vec();
        text[3 * dim..4 * dim].fill(0.0);
        let text = crate::features::FeatureMatrix::new(rows, dim, text).unwrap();
        let feats = ItemFeatures::new(None, Some(&text), rows, &device).unwrap();
        let model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
        assert_eq!(model.modalities(), vec![Modality::Id]);
        let learned = l2_normalise(model.item_id.as_ref().unwrap().weight.val());
        let head = model.head(Modality::Id, DomainId::X, &feats);
        let diff = |i: usize| -> f32 {
            let a = learned.clone().narrow(0, i, 1);
            let b = head.clone().narrow(0, i, 1);
            (a - b).abs().max().into_scalar()
        };
        assert!(diff(3) < 1e-6, "an item without text keeps its learned row");
        assert!(
            diff(2) > 1e-3,
            "an item with text gets its mapped text added"
        );
        // The encoders read the same rows as the head, scaled by sqrt(q).
        let q = config.id_dim;
        let items = Tensor::<2, Int>::from_data(TensorData::new(vec![2i64, 3], [1, 2]), &device);
        let input = model.embed(Modality::Id, items, &feats).reshape([2, q]);
        let unit = l2_normalise(input);
        let both = head.narrow(0, 2, 2);
        let gap: f32 = (unit - both).abs().max().into_scalar();
        assert!(gap < 1e-5, "{gap}");
        // Without text features the ID rows are the learned rows.
        let plain = LlmEmf::new(&config, &s.data.dataset, &ItemFeatures::none(), &device).unwrap();
        assert!(plain.id_text_projection.is_none());
    }

    #[test]
    fn id_row_dropout_leaves_whole_learned_rows_out_in_training_only() {
        let s = setup();
        let device = test_device().autodiff();
        let config = ModelConfig {
            id_text: true,
            id_row_dropout: 0.5,
            ..s.config.clone()
        };
        let feats =
            ItemFeatures::new(None, Some(&s.data.text), s.data.text.rows(), &device).unwrap();
        let model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
        let learned = model.item_id.as_ref().unwrap().weight.val();
        let mapped = model
            .id_text_projection
            .as_ref()
            .unwrap()
            .forward(feats.table(Modality::Text).unwrap().clone());
        let gap = |a: Tensor<2>, b: Tensor<2>| -> Vec<f32> {
            (a - b)
                .abs()
                .max_dim(1)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        // Training (autodiff device): each row is its mapped text alone, or the text plus its
        // learned row scaled by 1 / (1 - p).
        crate::model::dropout::seed_dropout(3);
        let rows = model.id_rows(&feats, |t| t);
        let alone = gap(rows.clone(), mapped.clone());
        let kept = gap(rows, mapped.clone() + learned.clone().mul_scalar(2.0));
        let n = alone.len();
        let dropped = alone.iter().filter(|&&g| g < 1e-6).count();
        assert!(
            alone.iter().zip(&kept).all(|(a, k)| a.min(*k) < 1e-5),
            "every row is whole or dropped whole"
        );
        assert!(
            n >= 20 && dropped > n / 5 && dropped < n - n / 5,
            "{dropped} of {n}"
        );
        // Inference (the model off the autodiff device): every learned row, unscaled.
        let inner = model.valid();
        let inner_feats =
            ItemFeatures::new(None, Some(&s.data.text), s.data.text.rows(), &test_device())
                .unwrap();
        let rows = inner.id_rows(&inner_feats, |t| t);
        let want = inner.item_id.as_ref().unwrap().weight.val()
            + inner
                .id_text_projection
                .as_ref()
                .unwrap()
                .forward(inner_feats.table(Modality::Text).unwrap().clone());
        assert!(gap(rows, want).iter().all(|&g| g < 1e-5));
        // Bad values are refused by name.
        for (bad, says) in [
            (
                ModelConfig {
                    id_row_dropout: 1.0,
                    ..config.clone()
                },
                "id_row_dropout",
            ),
            (
                ModelConfig {
                    id_row_dropout: -0.1,
                    ..config.clone()
                },
                "id_row_dropout",
            ),
            (
                ModelConfig {
                    id_text: false,
                    ..config.clone()
                },
                "needs id_text",
            ),
        ] {
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn row_shrinkage_scales_learned_rows_by_their_counts_at_inference_only() {
        let s = setup();
        let config = ModelConfig {
            id_text: true,
            ..s.config.clone()
        };
        let build = |device: &Device| {
            let feats =
                ItemFeatures::new(None, Some(&s.data.text), s.data.text.rows(), device).unwrap();
            let mut model = LlmEmf::new(&config, &s.data.dataset, &feats, device).unwrap();
            // Known training counts, unseen items among them: c_i = i mod 4.
            let n = model.n_x + model.n_y;
            let logs: Vec<f32> = (0..n).map(|i| ((i % 4) as f32).ln_1p()).collect();
            model.train_log_counts = Tensor::from_data(TensorData::new(logs, [n]), device);
            (model, feats)
        };
        let host = |t: Tensor<2>| -> Vec<Vec<f32>> {
            let [rows, cols] = t.dims();
            let v = t.into_data().try_to_vec::<f32>().unwrap();
            (0..rows)
                .map(|r| v[r * cols..(r + 1) * cols].to_vec())
                .collect()
        };
        // The rows with per-item scales of the learned part.
        let expect = |model: &LlmEmf, feats: &ItemFeatures, scale: &dyn Fn(usize) -> f32| {
            let learned = host(model.item_id.as_ref().unwrap().weight.val());
            let mapped = host(
                model
                    .id_text_projection
                    .as_ref()
                    .unwrap()
                    .forward(feats.table(Modality::Text).unwrap().clone()),
            );
            let got = host(model.id_rows(feats, |t| t));
            for (i, row) in got.iter().enumerate() {
                for (j, v) in row.iter().enumerate() {
                    let want = mapped[i][j] + scale(i) * learned[i][j];
                    assert!((v - want).abs() < 1e-5, "item {i}: {v} against {want}");
                }
            }
        };
        let device = test_device();
        let (mut model, feats) = build(&device);
        let n_x = model.n_x;
        expect(&model, &feats, &|_| 1.0);
        // X's rows shrink with k = 2, Y's stay whole.
        model.set_row_shrinkage(DomainId::X, Some(2.0)).unwrap();
        let c = |i: usize| (i % 4) as f32;
        expect(&model, &feats, &|i| {
            if i < n_x { c(i) / (c(i) + 2.0) } else { 1.0 }
        });
        // k = 0 drops exactly the unseen items' rows, in both domains.
        for d in DomainId::BOTH {
            model.set_row_shrinkage(d, Some(0.0)).unwrap();
        }
        expect(&model, &feats, &|i| if c(i) == 0.0 { 0.0 } else { 1.0 });
        // Kept in the score settings, and applied from them.
        let settings = model.score_settings();
        assert_eq!(settings.row_shrinkage, [Some(0.0), Some(0.0)]);
        let (mut fresh, _) = build(&device);
        fresh.apply_score_settings(&settings).unwrap();
        assert_eq!(fresh.row_shrinkage(DomainId::Y), Some(0.0));
        // Training (the autodiff device) always uses the whole rows.
        let ad = device.clone().autodiff();
        let (mut trained, ad_feats) = build(&ad);
        trained.set_row_shrinkage(DomainId::X, Some(0.0)).unwrap();
        expect(&trained, &ad_feats, &|_| 1.0);
        // Bad values, and a model without title rows, are refused by name.
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let err = model
                .set_row_shrinkage(DomainId::X, Some(bad))
                .unwrap_err()
                .to_string();
            assert!(err.contains("row shrinkage"), "{err}");
        }
        let mut plain =
            LlmEmf::new(&s.config, &s.data.dataset, &features(&s, &device), &device).unwrap();
        let err = plain
            .set_row_shrinkage(DomainId::X, Some(1.0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.id_text"), "{err}");
        plain.set_row_shrinkage(DomainId::X, None).unwrap();
    }

    #[test]
    fn id_row_init_scales_the_learned_rows_and_must_be_positive() {
        let s = setup();
        let device = test_device();
        let std_of = |init: f64| -> f64 {
            let config = ModelConfig {
                id_dim: 32,
                id_row_init: init,
                ..s.config.clone()
            };
            let model =
                LlmEmf::new(&config, &s.data.dataset, &ItemFeatures::none(), &device).unwrap();
            let w = model.item_id.as_ref().unwrap().weight.val();
            let v: f32 = w.powi_scalar(2).mean().sqrt().into_scalar();
            v as f64 * (32f64).sqrt()
        };
        // About 2,300 draws: the sample std is within a few percent of its target.
        assert!((std_of(1.0) - 1.0).abs() < 0.1, "{}", std_of(1.0));
        assert!((std_of(0.1) - 0.1).abs() < 0.01, "{}", std_of(0.1));
        for bad in [0.0, -1.0, f64::NAN] {
            let config = ModelConfig {
                id_row_init: bad,
                ..s.config.clone()
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("id_row_init"), "{err}");
        }
    }

    #[test]
    fn per_domain_text_maps_send_each_catalogue_through_its_own_map() {
        let s = setup();
        let device = test_device();
        let feats = features(&s, &device);
        let config = ModelConfig {
            id_text: true,
            id_text_per_domain: true,
            ..s.config.clone()
        };
        let model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
        let (px, py) = (
            model.id_text_projection.as_ref().unwrap(),
            model.id_text_projection_y.as_ref().unwrap(),
        );
        let learned = model.item_id.as_ref().unwrap().weight.val();
        let text = feats.table(Modality::Text).unwrap().clone();
        let rows = model.id_rows(&feats, |t| t);
        let n_x = model.n_x;
        let gap = |a: Tensor<2>, b: Tensor<2>| -> f32 { (a - b).abs().max().into_scalar() };
        let expect_x =
            learned.clone().narrow(0, 0, n_x) + px.forward(text.clone().narrow(0, 0, n_x));
        let expect_y = learned.clone().narrow(0, n_x, model.n_y)
            + py.forward(text.clone().narrow(0, n_x, model.n_y));
        assert!(gap(rows.clone().narrow(0, 0, n_x), expect_x) < 1e-5);
        assert!(gap(rows.clone().narrow(0, n_x, model.n_y), expect_y.clone()) < 1e-5);
        // The two maps differ, so Y's rows are not what X's map would give them.
        let through_x =
            learned.narrow(0, n_x, model.n_y) + px.forward(text.narrow(0, n_x, model.n_y));
        assert!(gap(expect_y, through_x) > 1e-3);
        // Picked rows (the encoders' and the sampled heads' path) agree with the whole table.
        let ids = Tensor::<1, Int>::from_data(
            TensorData::new(vec![1i64, (n_x + 2) as i64], [2]),
            &device,
        );
        let picked = model.id_rows(&feats, |t| t.select(0, ids.clone()));
        assert!(gap(picked, rows.select(0, ids)) < 1e-6);
        // One shared map without the switch.
        let shared = LlmEmf::new(
            &ModelConfig {
                id_text_per_domain: false,
                ..config
            },
            &s.data.dataset,
            &feats,
            &device,
        )
        .unwrap();
        assert!(shared.id_text_projection_y.is_none());
    }

    #[test]
    fn shared_encoders_read_every_sub_sequence_with_the_merged_encoders() {
        let s = setup();
        let device = test_device();
        let features = features(&s, &device);
        let own = LlmEmf::new(&s.config, &s.data.dataset, &features, &device).unwrap();
        let config = ModelConfig {
            shared_encoders: true,
            ..s.config.clone()
        };
        let shared = LlmEmf::new(&config, &s.data.dataset, &features, &device).unwrap();
        assert_eq!(shared.sub_sequences().len(), 3);
        for m in Modality::ALL {
            let merged = shared.encoder(SubSequence::Merged, m).unwrap();
            for sub in [SubSequence::X, SubSequence::Y] {
                assert!(std::ptr::eq(shared.encoder(sub, m).unwrap(), merged));
            }
        }
        // Two of each modality's three encoders are gone, nothing else.
        let encoder_params: usize = Modality::ALL
            .iter()
            .map(|&m| own.encoder(SubSequence::X, m).unwrap().num_params())
            .sum();
        assert_eq!(own.num_params() - shared.num_params(), 2 * encoder_params);
        // With one kind of sub-sequence switched off there is nothing to share.
        let merged_only = ModelConfig {
            single_domain_sequences: false,
            ..config.clone()
        };
        assert!(!merged_only.shares_encoders());
        let model = LlmEmf::new(&merged_only, &s.data.dataset, &features, &device).unwrap();
        assert_eq!(model.sub_sequences(), vec![SubSequence::Merged]);
        // The loss trains through the shared encoders.
        let batch = train_batch(&s, &device);
        let loss = shared.loss(&batch, &features, &DomainId::BOTH, None);
        assert!(scalar(loss).is_finite());
    }

    #[test]
    fn heads_must_divide_feature_width() {
        let s = setup();
        let device = test_device();
        let config = ModelConfig {
            heads: 3,
            id_dim: 9,
            ..s.config.clone()
        };
        let err =
            LlmEmf::new(&config, &s.data.dataset, &features(&s, &device), &device).unwrap_err();
        assert!(err.to_string().contains("heads"), "{err}");
    }

    #[test]
    fn mixture_loss_at_uniform_scores_is_the_log_of_the_domain_size() {
        // With a tiny logit scale every expert predicts the uniform distribution, so a mixture
        // of them with weights summing to 1 gives -log P = log(n_domain) for every target.
        let s = setup();
        let device = test_device();
        // The same holds for the product of experts (uniform logits, one softmax).
        for (objective, learned, expert_loss) in [
            (DomainObjective::Mixture, true, 0.0),
            (DomainObjective::Mixture, true, 0.5),
            (DomainObjective::Mixture, false, 0.0),
            (DomainObjective::Product, true, 0.0),
            (DomainObjective::Product, true, 0.5),
            (DomainObjective::Product, false, 0.0),
        ] {
            let config = ModelConfig {
                temperature: TemperatureConfig {
                    init: 1e6,
                    learnable: false,
                },
                cross_domain_targets: true,
                objective,
                learned_domain_weights: learned,
                learned_modality_weights: learned,
                expert_loss,
                ..s.config.clone()
            };
            let feats = features(&s, &device);
            let model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
            let seqs: Vec<_> = s.data.dataset.train().unwrap().iter().take(16).collect();
            let plan = config.batcher(&s.data.dataset).plan_train(&seqs);
            let [mx, my] = plan.mixture.clone().unwrap();
            let batch = plan.to_tensors(&device);
            let loss = scalar(model.loss(&batch, &feats, &DomainId::BOTH, None)) as f64;
            let (nx, ny) = (mx.local.len() as f64, my.local.len() as f64);
            let mixture = (nx * 30f64.ln() + ny * 40f64.ln()) / (nx + ny);
            // The mixture is renormalised over the sub-sequences present in each row, so it
            // is exact whatever the weights; the experts' mean NLL counts present rows only.
            let (low, high) = if expert_loss > 0.0 {
                (mixture, 1.5 * mixture + 1e-3)
            } else {
                (mixture - 1e-3, mixture + 1e-3)
            };
            assert!(
                (low..=high).contains(&loss),
                "{objective:?}, learned {learned}, expert {expert_loss}: {loss} not in [{low}, {high}]"
            );
        }
    }

    #[test]
    fn shard_losses_add_up_to_the_whole_batch() {
        // Each part of a batch normalised by the whole batch's counts: the parts' losses sum to
        // the whole batch's loss, under both objectives.
        let s = setup();
        let device = test_device();
        for objective in [
            DomainObjective::Separate,
            DomainObjective::Mixture,
            DomainObjective::Product,
        ] {
            let config = ModelConfig {
                cross_domain_targets: objective.is_joint(),
                objective,
                ..s.config.clone()
            };
            let feats = features(&s, &device);
            let model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
            let batcher = config.batcher(&s.data.dataset);
            let seqs: Vec<_> = s.data.dataset.train().unwrap().iter().take(16).collect();
            let whole = batcher.plan_train(&seqs);
            let parts = [
                batcher.plan_train(&seqs[..7]),
                batcher.plan_train(&seqs[7..]),
            ];
            let counts = crate::data::batcher::TargetCounts::of(&parts);
            assert_eq!(
                counts,
                crate::data::batcher::TargetCounts::of(std::slice::from_ref(&whole))
            );
            let full =
                scalar(model.loss(&whole.to_tensors(&device), &feats, &DomainId::BOTH, None));
            let sum: f32 = parts
                .iter()
                .map(|p| {
                    let b = p.to_tensors(&device);
                    let h = model.encode_train(&b, &feats);
                    scalar(model.loss_from(&h, &b, &feats, &DomainId::BOTH, None, Some(&counts)))
                })
                .sum();
            assert!(
                (full - sum).abs() < 1e-3 * full.abs().max(1.0),
                "{objective:?}: {full} vs {sum}"
            );
        }
    }

    #[test]
    fn full_loss_matches_uniform_guess_at_init_scale() {
        // With a tiny logit scale every item is nearly equally likely, so each sub-sequence's
        // mean NLL is close to log(n_domain) and the total follows the lambda weights.
        let s = setup();
        let device = test_device();
        let config = ModelConfig {
            temperature: TemperatureConfig {
                init: 1e6,
                learnable: false,
            },
            ..s.config.clone()
        };
        let model = LlmEmf::new(&config, &s.data.dataset, &ItemFeatures::none(), &device).unwrap();
        let batch = train_batch(&s, &device);
        let loss = scalar(model.loss(&batch, &ItemFeatures::none(), &[DomainId::X], None));
        // Target X: L^X + 0.3 L^Y + 0.1 L^{X+Y}; L^{X+Y} mixes log 30 and log 40.
        let (lx, ly) = ((30f64).ln(), (40f64).ln());
        let nx = batch.targets[2][0].as_ref().unwrap().local_ids.len() as f64;
        let ny = batch.targets[2][1].as_ref().unwrap().local_ids.len() as f64;
        let merged = (nx * lx + ny * ly) / (nx + ny);
        let expected = lx + 0.3 * ly + 0.1 * merged;
        assert!(
            (loss as f64 - expected).abs() < 1e-3,
            "{loss} vs {expected}"
        );
        // Both target domains: the two per-domain losses are summed.
        let both = scalar(model.loss(&batch, &ItemFeatures::none(), &DomainId::BOTH, None));
        let expected_both = expected + ly + 0.3 * lx + 0.1 * merged;
        assert!(
            (both as f64 - expected_both).abs() < 1e-3,
            "{both} vs {expected_both}"
        );
    }

    #[test]
    fn sampled_loss_with_all_items_as_negatives_approaches_full_loss() {
        // Uniform sampling with every item of the domain as a negative: log-Q correction is a
        // constant shift, the accidental hit (the target itself) is removed, so the sampled
        // softmax equals the full softmax.
        let s = setup();
        let device = test_device();
        let feats = features(&s, &device);
        let model = LlmEmf::new(&s.config, &s.data.dataset, &feats, &device).unwrap();
        let batch = train_batch(&s, &device);
        let full = scalar(model.loss(&batch, &feats, &DomainId::BOTH, None));
        let negatives: [DomainNegatives; 2] = std::array::from_fn(|d| {
            let n = if d == 0 { 30 } else { 40 };
            let ids: Vec<i64> = (0..n as i64).collect();
            DomainNegatives {
                ids: Tensor::from_data(TensorData::new(ids, [n]), &device),
                log_q: Tensor::from_data(TensorData::new(vec![0.0f32; n], [n]), &device),
            }
        });
        let sampled = scalar(model.loss(&batch, &feats, &DomainId::BOTH, Some(&negatives)));
        assert!((full - sampled).abs() < 1e-3, "{full} vs {sampled}");
    }

    #[test]
    fn scores_are_finite_for_empty_sub_sequences_and_histories() {
        let s = setup();
        let device = test_device();
        let feats = features(&s, &device);
        let model = LlmEmf::new(&s.config, &s.data.dataset, &feats, &device).unwrap();
        let batcher = SequenceBatcher::new(&s.data.dataset, s.config.max_len);
        // Only X items (S^Y empty), only Y items (S^X empty), nothing at all.
        let histories: [&[u32]; 3] = [&[0, 1, 2], &[30, 31], &[]];
        let plan = batcher.plan_histories(&histories);
        let inputs = plan.inputs.clone().map(|p| p.to_tensors(&device));
        for d in DomainId::BOTH {
            let scores = model.score(&plan, &inputs, &feats, d);
            let n = if d == DomainId::X { 30 } else { 40 };
            assert_eq!(scores.dims(), [3, n]);
            let values = scores.into_data().try_to_vec::<f32>().unwrap();
            assert!(values.iter().all(|v| v.is_finite()));
            // Each row is the log of a mixture of distributions: its exp sums to the weights
            // of the contributing sub-sequences (1 + 0.1 with one side empty).
            let row0: f32 = values[..n].iter().map(|v| v.exp()).sum();
            let expected = if d == DomainId::X { 1.1 } else { 0.3 + 0.1 };
            assert!((row0 - expected).abs() < 1e-3, "{row0} vs {expected}");
        }
    }

    #[test]
    fn frozen_features_never_change_while_the_model_learns() {
        let s = setup();
        let base = test_device();
        let device = base.clone().autodiff();
        let feats = features(&s, &base);
        let before = [feats.values(Modality::Image), feats.values(Modality::Text)];
        let train_feats = feats.for_autodiff();
        let mut model = LlmEmf::new(&s.config, &s.data.dataset, &train_feats, &device).unwrap();
        // Owned copies: on a GPU backend the optimizer may update the table's buffer in place.
        let id_values = |m: &LlmEmf| {
            m.item_id
                .as_ref()
                .unwrap()
                .weight
                .val()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let id_before = id_values(&model);
        let mut optim = AdamConfig::new().init();
        let batch = train_batch(&s, &device);
        let first = scalar(model.loss(&batch, &train_feats, &DomainId::BOTH, None));
        for _ in 0..5 {
            let loss = model.loss(&batch, &train_feats, &DomainId::BOTH, None);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.01, model, grads);
        }
        let last = scalar(model.loss(&batch, &train_feats, &DomainId::BOTH, None));
        assert!(
            last < first,
            "loss should fall on a fixed batch: {first} -> {last}"
        );
        let id_after = id_values(&model);
        let moved = id_before
            .iter()
            .zip(&id_after)
            .filter(|(a, b)| a != b)
            .count();
        assert!(moved > 0, "the ID table is learnable");
        assert_eq!(
            before,
            [
                train_feats.values(Modality::Image),
                train_feats.values(Modality::Text)
            ]
        );
        assert_eq!(
            before,
            [feats.values(Modality::Image), feats.values(Modality::Text)]
        );
    }

    #[test]
    fn projected_features_and_domain_queries_learn_and_score_at_the_id_width() {
        let s = setup();
        let base = test_device();
        let device = base.clone().autodiff();
        // Features 8 wide projected to an ID width of 4.
        let config = ModelConfig {
            id_dim: 4,
            project_features: true,
            domain_queries: true,
            ..s.config.clone()
        };
        let feats = features(&s, &base).for_autodiff();
        let mut model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
        for m in Modality::ALL {
            assert_eq!(model.head(m, DomainId::Y, &feats).dims(), [40, 4], "{m:?}");
        }
        let weights = |m: &LlmEmf| {
            [
                m.text_projection.as_ref().unwrap().weight.val(),
                m.id_query.as_ref().unwrap().y.weight.val(),
            ]
            .map(|t| t.into_data().try_to_vec::<f32>().unwrap())
        };
        let before = weights(&model);
        let mut optim = AdamConfig::new().init();
        let batch = train_batch(&s, &device);
        for _ in 0..2 {
            let loss = model.loss(&batch, &feats, &DomainId::BOTH, None);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(0.01, model, grads);
        }
        let after = weights(&model);
        assert_ne!(before[0], after[0], "the text projection is learned");
        assert_ne!(before[1], after[1], "the query of domain Y is learned");
        // Scores of a trained model stay finite and cover the domain.
        let valid = model.valid();
        let feats = features(&s, &base);
        let batcher = SequenceBatcher::new(&s.data.dataset, config.max_len);
        let histories: Vec<&[crate::data::ItemId]> = s
            .data
            .dataset
            .train()
            .unwrap()
            .iter()
            .take(3)
            .map(|q| q.items.as_slice())
            .collect();
        let plan = batcher.plan_histories(&histories);
        let inputs = plan.inputs.clone().map(|p| p.to_tensors(&base));
        let scores = valid.score(&plan, &inputs, &feats, DomainId::X);
        assert_eq!(scores.dims(), [3, 30]);
        let values = scores.into_data().try_to_vec::<f32>().unwrap();
        assert!(values.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn domain_weights_can_be_set_learned_or_fixed_and_bad_ones_are_refused() {
        let s = setup();
        let device = test_device();
        for learned in [true, false] {
            let config = ModelConfig {
                cross_domain_targets: true,
                objective: DomainObjective::Mixture,
                learned_domain_weights: learned,
                ..s.config.clone()
            };
            let mut model =
                LlmEmf::new(&config, &s.data.dataset, &ItemFeatures::none(), &device).unwrap();
            // Fixed weights are relative to the own sub-sequence's and shared by both targets.
            model
                .domain_loss
                .set_weights(DomainId::X, [0.5, 0.25, 0.25])
                .unwrap();
            let w = model.domain_weights(DomainId::X);
            let total: f64 = w.iter().sum();
            for (got, want) in w.iter().map(|v| v / total).zip([0.5, 0.25, 0.25]) {
                assert!((got - want).abs() < 1e-5, "learned {learned}: {w:?}");
            }
            for bad in [[-0.1, 0.5, 0.6], [0.0, 0.0, 0.0], [f64::NAN, 0.5, 0.5]] {
                let err = model
                    .domain_loss
                    .set_weights(DomainId::Y, bad)
                    .unwrap_err()
                    .to_string();
                assert!(err.contains("domain weights"), "{err}");
            }
        }
    }
}
