//! The model's configuration: its sizes, the modalities and sub-sequences it reads, how its
//! sub-sequences are trained and weighted, and the title rows of its ID table. `ModelConfig`
//! builds the model ([`ModelConfig::init`]) from the catalogue's sizes and training counts.

use serde::{Deserialize, Serialize};

use super::attention::FfActivation;
use crate::data::Dataset;
use crate::data::batcher::SequenceBatcher;
use crate::error::{Error, Result};

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

/// Configuration of [`LlmEmf`](super::LlmEmf); [`ModelConfig::init`] builds it. Defaults follow the paper's implementation details where it gives
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
    /// Activation of the feed-forward layers: `relu` (SASRec's, the default), `gelu` or
    /// `swiglu` (gated; `ff_factor` sets the width of each half).
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
    /// Rank of the low-rank adapters of a shared encoder ([`super::adapter`]): with
    /// `shared_encoders`, each sub-sequence adds its own `x A B` of this rank beside the
    /// feed-forward layer of every block of the encoder it shares, as ABXI's domain adapters
    /// (rank 8 there). Needs `shared_encoders` with both kinds of sub-sequence on. Default 0
    /// (none).
    #[serde(default)]
    pub adapter_rank: usize,
    /// Text-enriched ID rows: the ID modality's vector of an item, as encoder input and in the
    /// output table, is its learned row plus a learned linear map (no bias) of its frozen text
    /// features, `e_i + W t_i`. An item without text (a zero row) keeps its learned row alone.
    /// Used when text features are given (`features.text`) and the ID modality is on, whether
    /// or not the text modality itself is; without text features the ID rows are the learned
    /// rows, as the image and text modalities are off without their features. Default false
    /// (the paper: ID rows learned from interactions alone).
    pub id_text: bool,
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
    /// training unchanged. With `unseen_row` instead, the probability that a row is replaced
    /// by its domain's learned unseen-item row at a training step.
    pub id_row_dropout: f64,
    /// Without `id_text`: one learned "unseen item" row per domain, which stands in, at
    /// inference, for every item never seen in training (instead of a row that training only
    /// ever pushed away as a negative, or left at its random start), and towards which the row
    /// shrinkage leans rare items. It is trained by `id_row_dropout`: at each step, each use
    /// of a row is replaced by its domain's unseen row with that probability, so the row
    /// learns where an item the model knows nothing about belongs. Needs `id_row_dropout > 0`.
    /// Default false.
    #[serde(default)]
    pub unseen_row: bool,
    /// How the training loss averages over the trained transitions (mixture objective only):
    /// `transition` (each transition counts once, so long histories weigh more) or
    /// `sequence` (each sequence counts once per domain it has transitions into, as evaluation
    /// counts each user once). Default `transition`.
    #[serde(default)]
    pub loss_average: LossAverage,
    /// How a query meets an output row (Eq. 3): `cosine` (the paper's: both L2-normalised, so
    /// only directions count) or `dot` (an inner product, as SASRec's and ABXI's heads: the
    /// query scaled by `1 / sqrt(width)` so that the logits start where the cosine's do, and
    /// the learned ID rows keep their norms, so a row's norm can carry how often its item is
    /// the answer). Frozen feature rows are unit vectors either way. Default `cosine`.
    #[serde(default)]
    pub head: Head,
    /// Whether the row shrinkage (`train.fit_row_shrinkage`) applies to the rows the encoders
    /// read as well as to the candidates' rows. `false`: a history's items are read with the
    /// rows training gave them, except that an item never seen in training is read by its
    /// title alone in a domain with title rows that shrinks (its learned part was only ever a
    /// sampled negative's, never an input's); without title rows, every input row as training
    /// left it (the learned unseen-item row for those items, with `unseen_row`). The
    /// shrinkage is a prior for ranking candidates: applied to the inputs too, it also moves
    /// the encoders' inputs away from the rows they were trained on, and one domain's prior
    /// count changes the other domain's queries through the histories that mix them. Acts at
    /// inference only. Default true.
    #[serde(default = "default_true")]
    pub shrink_inputs: bool,
    /// For models that read items by their learned ID rows alone (no title rows, no image or
    /// text modality): at inference, the histories the encoders read leave out the items that
    /// had no interaction in the training sequences. Such an item's row was never trained as an
    /// input (a row `train.fit_unseen_rows` draws is there to rank the item as a candidate),
    /// so read as a user's latest item it is noise; left out, the query is that of the history
    /// before it. Training is unchanged (its sequences hold trained items only). Validation
    /// histories hold training items only, so the validation split cannot measure it; a test
    /// history ends with the validation target, which on Food-Kitchen was never seen in
    /// training for about 6% of the users. Default false.
    #[serde(default)]
    pub skip_untrained_inputs: bool,
    /// Fuse the sub-sequences' queries instead of their probabilities: for target domain D
    /// the query is `normalise(sum_s w_s q_s)` over the sub-sequences present in the history
    /// (`q_s` each one's unit query, `w_s` the sub-sequence weights of Eq. 11, learned, fixed
    /// or fitted), scored by one softmax, in training and at inference; as ABXI adds its
    /// merged sequence's representation to the target domain's own. Needs the mixture
    /// objective (which trains the score that ranks), the merged sequence and cosine heads.
    /// Default false (Eq. 11: the probabilities mixed).
    #[serde(default)]
    pub query_fusion: bool,
    /// The probability that an item of a history is masked out of an encoder's input at a
    /// training step: its input vector zeroed (its position and the attention over it kept),
    /// independently per encoder and position, the vectors kept unscaled. The encoders learn
    /// queries that do not hang on any one item of a history, as they must at inference for a
    /// history with an item training rarely reached (or, under
    /// [`Self::skip_untrained_inputs`], with one left out). Candidates' rows and inference are
    /// unchanged. Must be in [0, 1); default 0 (every item read).
    #[serde(default)]
    pub item_mask: f64,
}

/// How the heads score a query against an output row ([`ModelConfig::head`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Head {
    /// `cos(h, e) / tau` (Eq. 3).
    #[default]
    Cosine,
    /// `(h . e) / (sqrt(width) tau)`, the learned ID rows unnormalised.
    Dot,
}

/// How the training loss averages over the trained transitions of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossAverage {
    /// The mean over every trained transition.
    #[default]
    Transition,
    /// Each sequence's transitions into a domain averaged first, then the mean over the
    /// (sequence, domain) pairs of the batch: every user counts once per target domain,
    /// however long their history.
    Sequence,
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
}

impl DomainObjective {
    /// Whether the objective trains the score that ranks (the mixture), which needs every
    /// sub-sequence to predict the target's domain.
    pub fn is_joint(self) -> bool {
        self == DomainObjective::Mixture
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
            project_features: false,
            shared_encoders: false,
            adapter_rank: 0,
            id_text: false,
            id_row_init: 1.0,
            id_row_dropout: 0.0,
            unseen_row: false,
            loss_average: LossAverage::Transition,
            head: Head::Cosine,
            skip_untrained_inputs: false,
            shrink_inputs: true,
            query_fusion: false,
            item_mask: 0.0,
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
        if self.unseen_row && (self.id_text || self.id_row_dropout <= 0.0) {
            return bad(
                "unseen_row needs IDs without id_text (title rows have the title as their prior) and id_row_dropout > 0 (which trains it)"
                    .into(),
            );
        }
        if self.id_row_dropout > 0.0 && !self.id_text && !self.unseen_row {
            return bad(
                "id_row_dropout needs id_text (without text in the ID rows, a dropped row leaves nothing)"
                    .into(),
            );
        }
        if !(0.0..1.0).contains(&self.item_mask) {
            return bad(format!("item_mask {} is not in [0, 1)", self.item_mask));
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
                "the mixture objective needs cross_domain_targets: every sub-sequence must predict the target's domain"
                    .into(),
            );
        }
        if self.query_fusion
            && (!self.objective.is_joint() || !self.merged_sequence || self.head != Head::Cosine)
        {
            return bad(
                "query_fusion needs the mixture objective, the merged sequence and cosine heads (the fused query is a normalised sum of the sub-sequences' unit queries)"
                    .into(),
            );
        }
        if self.adapter_rank > 0 && !self.shares_encoders() {
            return bad(format!(
                "adapter_rank {} needs shared_encoders with both single_domain_sequences and merged_sequence on (the adapters tell the sub-sequences apart on the encoder they share)",
                self.adapter_rank
            ));
        }
        if self.loss_average == LossAverage::Sequence && !self.objective.is_joint() {
            return bad(
                "loss_average \"sequence\" needs the mixture objective (Eq. 10's separate losses are means per sub-sequence)"
                    .into(),
            );
        }
        if self.learned_domain_weights && !self.objective.is_joint() {
            return bad(
                "learned_domain_weights needs the mixture objective (under Eq. 10's separate losses, learned weights would shrink the largest loss instead of fitting the score)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// `true`, the default of the switches that are on unless a file says otherwise.
fn default_true() -> bool {
    true
}
