//! The typed experiment configuration, saved as `config.json` beside every checkpoint so that any
//! result can be reproduced from its run folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::batching::Batching;
use crate::data::recbole::DEFAULT_MAX_HISTORY;
use crate::data::{
    C2dsrOptions, Dataset, DomainId, Format, Protocol, RecboleOptions, SyntheticConfig,
    detect_format, load_c2dsr, load_recbole,
};
use crate::error::{Error, Result};
use crate::features::FeatureMatrix;
use crate::model::ModelConfig;

pub use super::presets::Preset;

/// Where the interactions come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSource {
    /// A dataset directory in C2DSR or RecBole format.
    Directory {
        /// The directory.
        path: PathBuf,
        /// Longest valid/test history of the RecBole leave-one-out split.
        #[serde(default = "default_max_history")]
        max_history: usize,
    },
    /// The built-in synthetic generator (its image and text vectors are used as features unless
    /// feature files are given).
    Synthetic(SyntheticConfig),
}

fn default_max_history() -> usize {
    DEFAULT_MAX_HISTORY
}

impl Default for DataSource {
    fn default() -> Self {
        DataSource::Synthetic(SyntheticConfig::default())
    }
}

/// Paths of the frozen feature files (`[items, dim]` float32, `.npy` or `.safetensors`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureSources {
    /// Image features (E_img).
    pub image: Option<PathBuf>,
    /// Text features (E_tex); LLM-enriched text is a different file.
    pub text: Option<PathBuf>,
}

/// How negatives of the sampled softmax are drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sampler {
    /// Uniform over the target domain.
    Uniform,
    /// Proportional to `(training count + 1) ^ power` (0.75 is word2vec's choice).
    Popularity {
        /// Exponent of the counts.
        power: f64,
    },
}

/// The training objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Objective {
    /// Softmax over every item of the target domain (the paper's).
    Full,
    /// Softmax over the target and `negatives` shared negatives per domain and step, with
    /// log-Q correction and accidental hits removed.
    Sampled {
        /// Negatives per domain and step.
        negatives: usize,
        /// How they are drawn.
        sampler: Sampler,
        /// Draw negatives only among the items with at least one training interaction: an
        /// item never seen in training is then neither a target nor a negative, and keeps the
        /// vector it started with (with `model.id_text` and a small `model.id_row_init`, its
        /// mapped title) instead of being pushed below every other item. Held-out targets
        /// include such items (on Food-Kitchen 8.7% of Kitchen's test targets, from 3.6% of
        /// its catalogue). Where the objective becomes the full softmax
        /// ([`Objective::for_dataset`]: as many negatives as the larger domain has items),
        /// every item is in it and this has no effect. Default false.
        #[serde(default)]
        seen_only: bool,
    },
}

impl Objective {
    /// The objective a training on `dataset` runs with: a sampled softmax with at least as
    /// many negatives as the larger domain has items becomes the full softmax, which is exact
    /// and cheaper than drawing that many negatives with replacement.
    pub fn for_dataset(&self, dataset: &Dataset) -> Objective {
        match self {
            Objective::Sampled { negatives, .. }
                if DomainId::BOTH
                    .iter()
                    .all(|&d| *negatives >= dataset.domain(d).len as usize) =>
            {
                Objective::Full
            }
            other => other.clone(),
        }
    }
}

/// Which domains the loss targets (Eq. 10 is written for target X; with both, the two losses
/// are summed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetDomains {
    /// Both domains (the default).
    Both,
    /// Domain X only.
    X,
    /// Domain Y only.
    Y,
}

impl TargetDomains {
    /// The domains as a list.
    pub fn domains(self) -> Vec<DomainId> {
        match self {
            TargetDomains::Both => DomainId::BOTH.to_vec(),
            TargetDomains::X => vec![DomainId::X],
            TargetDomains::Y => vec![DomainId::Y],
        }
    }
}

/// The optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Optimizer {
    /// Adam with L2 regularisation coupled into the gradient (`l2`), as PyTorch's
    /// `Adam(weight_decay=)` and the paper.
    Adam,
    /// AdamW: weight decay decoupled from the adaptive step (Loshchilov and Hutter), applied
    /// to every parameter, or to the weight matrices only (`decay_all`). `l2` must be 0.
    AdamW {
        /// Decoupled weight decay.
        weight_decay: f64,
    },
}

/// An auxiliary contrastive term of the training loss (the unsupervised augmentation of
/// DuoRec, Qiu et al. 2022): every batch is encoded a second time with other dropout masks,
/// and each sequence's representation at its last position must pick out its own second view
/// among the batch's (a symmetric InfoNCE over the batch, per sub-sequence and modality, on
/// L2-normalised vectors). It asks the encoders for representations that dropout does not
/// move, a regulariser for sparse histories; it costs a second forward and backward pass of
/// the encoders per step. Scoring is unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contrastive {
    /// Weight of the term beside the next-item loss (per sequence, averaged over the batch).
    pub weight: f64,
    /// Temperature of its softmax over the batch, on cosines (in [-1, 1]). Default 0.2.
    #[serde(default = "Contrastive::default_temperature")]
    pub temperature: f64,
}

impl Contrastive {
    fn default_temperature() -> f64 {
        0.2
    }
}

/// Learning-rate decay when validation stalls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Plateau {
    /// Evaluations without a better validation MRR before the rate is multiplied by
    /// `factor`. Default 3.
    pub patience: usize,
    /// Factor applied to the rate. Default 0.5.
    pub factor: f64,
    /// The rate never falls below `min_scale` times the base rate. Default 0.01.
    pub min_scale: f64,
    /// At each decay, go back to the best weights so far (the saved best model), restart the
    /// optimizer's moments and, when on, the weight average at those weights, so that the
    /// lower rate refines the best model instead of the over-fitted one that stalled.
    /// Default false.
    pub restore_best: bool,
}

impl Default for Plateau {
    fn default() -> Self {
        Self {
            patience: 3,
            factor: 0.5,
            min_scale: 0.01,
            restore_best: false,
        }
    }
}

/// Optimisation and schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Learning rate (after warm-up). Default 0.001.
    pub learning_rate: f64,
    /// The optimizer. Default: Adam (with `l2`).
    pub optimizer: Optimizer,
    /// L2 regularisation coefficient (added to the gradient, as PyTorch's Adam weight_decay).
    /// Default 0.00001.
    pub l2: f64,
    /// Epochs of linear learning-rate warm-up (from 1/steps to the full rate over the steps of
    /// these epochs). Default 0.
    pub warmup_epochs: usize,
    /// Reduce the rate when validation stalls. Default: never.
    pub plateau: Option<Plateau>,
    /// Adam epsilon. Default 1e-8 (PyTorch's; Burn's default is 1e-5).
    pub adam_epsilon: f64,
    /// Decay every parameter (`weight_decay` of AdamW, or Adam's `l2`). Default true (as an
    /// optimizer without parameter groups). `false` decays the weight matrices and embedding
    /// tables only, and spares the biases, the layer norms' gains and shifts, the heads'
    /// log-scales and the learned score weights' logits, as transformers are usually trained:
    /// a decayed log-scale or logit is pulled towards zero, which is not a smaller model but a
    /// fixed temperature or an even mixture.
    pub decay_all: bool,
    /// Sequences per batch. Default 256.
    pub batch_size: usize,
    /// Maximum number of epochs. Default 100.
    pub epochs: usize,
    /// Stop after this many epochs without a better validation MRR. Default 10.
    pub patience: usize,
    /// Seed of initialisation, shuffling, dropout and sampling. Default 42.
    pub seed: u64,
    /// The objective. Default: full softmax.
    pub objective: Objective,
    /// Target domains of the loss. Default: both.
    pub target_domains: TargetDomains,
    /// Evaluate on the validation split every this many epochs. Default 1.
    pub eval_every: usize,
    /// How sequences are grouped into batches. Default: length-sorted pools of 16 batches.
    pub batching: Batching,
    /// Parts of each batch that run forward and backward at the same time, on their own
    /// threads; their gradients add up to the whole batch's (each part draws its own dropout
    /// masks, so the number is part of a run's definition). Default 2.
    pub parallel_shards: usize,
    /// After training, choose the score's mixture weights on the validation split and keep
    /// the best in the saved model: first, for a model with IDs and a feature modality, the
    /// feature modalities' share of the fusion (Eq. 8; 11 values, one set for both domains);
    /// then, for a model with the merged sequence and another one, the merged sequence's share
    /// of the score (Eq. 11) per target domain (12 values; the single-domain sub-sequences
    /// keep their trained ratio). Weights learned on the training loss trust the experts that
    /// fit the training transitions best (single-domain sub-sequences, IDs) more than held-out
    /// data does (docs/model.md). The trained weights compete in both grids. Default false.
    pub fit_domain_weights: bool,
    /// After training (and after the weight fits), choose on the validation split one prior
    /// count `k` for the learned ID rows of both domains at inference
    /// ([`crate::model::LlmEmf::row_shrinkage`]: item i's learned row times `c_i / (c_i + k)`,
    /// the rest of its weight on its mapped title with title rows, on its domain's mean trained
    /// row without; with title rows `k = 0` replaces only the rows of items never seen in
    /// training, without them those items keep their own rows).
    /// Whole rows compete; chosen on the sum of the domains' validation MRRs (9 values).
    /// Needs ID rows; kept beside the saved model (`model.score.json`). Default false.
    #[serde(default)]
    pub fit_row_shrinkage: bool,
    /// After training, draw fresh learned rows for the items never seen in training
    /// ([`crate::model::LlmEmf::redraw_unseen_rows`]) each way of `fit::unseen_row_draws` (as
    /// at initialisation, at `id_row_init`, and like the domain's trained rows, by five
    /// weightings of their training counts) and keep the best draw validation allows: the
    /// never-seen targets' MRR falls in no domain and no domain's MRR falls by more than 0.1
    /// points (`fit::UNSEEN_ROWS_MAX_LOSS`); a draw that puts the never-seen targets above a
    /// random order in every domain comes first, then the draw leaning furthest towards
    /// popular items (`fit::choose_unseen_draw`), then the mean MRR. A row that was only ever
    /// a sampled negative ranks its item below a random order; a fresh one says nothing
    /// either way. With plain learned rows the fit comes before the other fits; with title
    /// rows (`model.id_text`) after the row shrinkage, in the domains it leaves whole (there
    /// the drawn row is added to the item's title; a shrunk domain places those items by
    /// their titles alone). Needs the id modality, without `model.unseen_row`. Default false.
    #[serde(default)]
    pub fit_unseen_rows: bool,
    /// An auxiliary contrastive term over two dropout views of each sequence
    /// ([`Contrastive`]). Default: none (and left out of the written config).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contrastive: Option<Contrastive>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            optimizer: Optimizer::Adam,
            l2: 1e-5,
            warmup_epochs: 0,
            plateau: None,
            adam_epsilon: 1e-8,
            decay_all: true,
            batch_size: 256,
            epochs: 100,
            patience: 10,
            seed: 42,
            objective: Objective::Full,
            target_domains: TargetDomains::Both,
            eval_every: 1,
            batching: Batching::default(),
            parallel_shards: 2,
            fit_domain_weights: false,
            fit_row_shrinkage: false,
            fit_unseen_rows: false,
            contrastive: None,
        }
    }
}

impl TrainConfig {
    /// The recommended preset's recipe (docs/model.md, "Beyond the paper"): a sampled softmax
    /// with 2,048 uniform negatives per domain and step (the full softmax on catalogues that
    /// small), AdamW, a short warm-up, the rate halved from the best weights when validation
    /// stalls for two evaluations, and the sub-sequence weights of the score fitted on the
    /// validation split after training.
    pub fn recommended() -> Self {
        Self {
            // The recipe of every multi-seed table of docs/results.md.
            learning_rate: 2e-3,
            batch_size: 128,
            epochs: 60,
            optimizer: Optimizer::AdamW { weight_decay: 0.01 },
            l2: 0.0,
            warmup_epochs: 1,
            plateau: Some(Plateau {
                patience: 2,
                restore_best: true,
                ..Plateau::default()
            }),
            patience: 10,
            objective: Objective::Sampled {
                negatives: 2048,
                sampler: Sampler::Uniform,
                seen_only: false,
            },
            fit_domain_weights: true,
            ..Self::default()
        }
    }
}

/// Evaluation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalConfig {
    /// Protocol of validation (early stopping) and of the final test. Default: C2DSR's.
    pub protocol: Protocol,
    /// Seed of the sampled negatives. Default 2024.
    pub seed: u64,
    /// Negatives per example of the sampled protocols. Default 999.
    pub negatives: usize,
    /// Examples per evaluation batch (each sub-sequence is batched by its own lengths, then
    /// the batch is scored against the domain's items). Default 64: on the 2-core CPU this
    /// project measures on, validation ran 1.1x faster than with 128 and 1.3x faster than
    /// with 256 (docs/performance.md); a GPU wants larger batches.
    pub batch_size: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            protocol: Protocol::C2dsr,
            seed: 2024,
            negatives: crate::data::sampling::DEFAULT_NEGATIVES,
            batch_size: 64,
        }
    }
}

/// Everything that defines a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The preset the rest of the file is read on top of. Default: recommended.
    pub preset: Preset,
    /// The data.
    pub data: DataSource,
    /// Frozen feature files.
    pub features: FeatureSources,
    /// The model.
    pub model: ModelConfig,
    /// Optimisation.
    pub train: TrainConfig,
    /// Evaluation.
    pub eval: EvalConfig,
    /// Items held out of training, to measure how items added after training rank
    /// ([`HoldOut`]). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_out: Option<HoldOut>,
}

/// A seeded share of one domain's items held out of training: every occurrence removed from
/// the training sequences, so the model never learns them, while they stay in the catalogue
/// and in the evaluation splits. Their test targets then rank as items added after training
/// would ([`crate::recommend::Recommender::add_items`]: with title rows under the row
/// shrinkage, exactly by their titles); `llm-emf evaluate --targets` reads the list the run
/// writes (`held_out.txt`) to score them alone, here and in a run trained with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldOut {
    /// The domain's name (or `X` / `Y`).
    pub domain: String,
    /// The share of the domain's items that occur in training to hold out, in (0, 1).
    pub share: f64,
    /// Seed of the draw.
    pub seed: u64,
    /// Draw among items with a title only.
    #[serde(default)]
    pub titled_only: bool,
}

impl HoldOut {
    /// The held-out items of `dataset`, sorted: `share` of the domain's items (titled ones
    /// with `titled_only`) that occur in training, drawn with `seed`.
    pub fn items(&self, dataset: &Dataset) -> Result<Vec<crate::data::ItemId>> {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        if !(self.share > 0.0 && self.share < 1.0) {
            return Err(Error::Config(format!(
                "hold_out.share {} is not in (0, 1)",
                self.share
            )));
        }
        let d = dataset.domain_by_name(&self.domain)?;
        let counts = dataset.train_counts();
        let mut pool: Vec<crate::data::ItemId> = dataset
            .domain(d)
            .items()
            .filter(|&i| counts[i as usize] > 0)
            .filter(|&i| !self.titled_only || dataset.items()[i as usize].title.is_some())
            .collect();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed);
        pool.shuffle(&mut rng);
        let n = (self.share * pool.len() as f64).round() as usize;
        let mut held: Vec<_> = pool.into_iter().take(n).collect();
        held.sort_unstable();
        Ok(held)
    }
}

/// Writes `over` onto `base`: objects merge key by key, anything else is replaced. A tagged
/// object (one with a `kind`) whose kind changes is replaced whole, so that no field of the
/// old variant survives.
fn merge_json(base: &mut serde_json::Value, over: serde_json::Value) {
    use serde_json::Value;
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let kind_changed = matches!(
                (b.get("kind"), o.get("kind")),
                (Some(x), Some(y)) if x != y
            );
            if kind_changed {
                *b = o;
                return;
            }
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// Switches that were measured, lost on every dataset they were tried on, and were removed
/// (docs/results.md, "What did not help"): the section, the key, the value that means "off",
/// and what the measurement showed.
const REMOVED_KEYS: [(&str, &str, &str, &str); 6] = [
    (
        "model",
        "domain_queries",
        "false",
        "per-domain query maps lost on both models they were tried on (the SASRec-like baseline and the ids preset)",
    ),
    (
        "model",
        "item_bias",
        "false",
        "a learned item bias lost MRR in both domains",
    ),
    (
        "model",
        "id_text_per_domain",
        "false",
        "one text map per domain lost against the shared map",
    ),
    (
        "train",
        "weight_average",
        "null",
        "a moving average of the weights was level or below over three seeds",
    ),
    (
        "train",
        "fit_popularity",
        "false",
        "the popularity adjustment and the unseen-item boost lost against the row shrinkage",
    ),
    (
        "model",
        "objective",
        "\"separate\" or \"mixture\"",
        "the product-of-experts objective lost against the mixture in both domains",
    ),
];

/// Reads a config file written before the switches of [`REMOVED_KEYS`] were removed: a removed
/// key set to its "off" value (what every saved `config.json` holds) is dropped; one that is
/// on is an error saying what was removed and why (the `product` objective likewise).
fn drop_removed_keys(file: &mut serde_json::Value) -> std::result::Result<(), String> {
    use serde_json::Value;
    for (section, key, off, why) in REMOVED_KEYS {
        let Some(obj) = file.get_mut(section).and_then(Value::as_object_mut) else {
            continue;
        };
        let Some(value) = obj.get(key) else { continue };
        let is_off = match key {
            "objective" => value != "product",
            _ => value.is_null() || *value == Value::Bool(false),
        };
        if key == "objective" {
            if !is_off {
                return Err(format!(
                    "{section}.objective \"product\" was removed ({why}; docs/results.md, \"What did not help\"): use {off}"
                ));
            }
            continue;
        }
        if !is_off {
            return Err(format!(
                "{section}.{key} was removed ({why}; docs/results.md, \"What did not help\"): delete the key, or set it to {off}"
            ));
        }
        obj.remove(key);
    }
    Ok(())
}

/// Reads the JSON file at `path` holding a configuration, as a whole (`field` `None`) or
/// under `field`, with the switches of [`REMOVED_KEYS`] dropped from that configuration when
/// off; an error naming the file when one is on or the file is not JSON.
pub(super) fn read_config_json(path: &Path, field: Option<&str>) -> Result<serde_json::Value> {
    let text = crate::io::read_text(path)?;
    let mut file: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::json(path, e))?;
    let config = match field {
        Some(name) => file.get_mut(name),
        None => Some(&mut file),
    };
    if let Some(config) = config {
        drop_removed_keys(config).map_err(|m| Error::Config(format!("{}: {m}", path.display())))?;
    }
    Ok(file)
}

/// A loaded dataset with its optional feature matrices.
#[derive(Debug, Clone)]
pub struct LoadedData {
    /// The dataset.
    pub dataset: Dataset,
    /// Image features, if any.
    pub image: Option<FeatureMatrix>,
    /// Text features, if any.
    pub text: Option<FeatureMatrix>,
    /// The items held out of training ([`ExperimentConfig::hold_out`]), sorted; empty
    /// without.
    pub held_out: Vec<crate::data::ItemId>,
}

impl LoadedData {
    /// The frozen feature tables of the data on `device`
    /// ([`crate::model::ItemFeatures::new`]: one row per
    /// item, checked, rows L2-normalised).
    pub fn features(&self, device: &burn::tensor::Device) -> Result<crate::model::ItemFeatures> {
        crate::model::ItemFeatures::new(
            self.image.as_ref(),
            self.text.as_ref(),
            self.dataset.num_items(),
            device,
        )
    }
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self::preset(Preset::default())
    }
}

impl ExperimentConfig {
    /// Whether a run of `self` and a run of `other` train and score alike: equal but for
    /// `eval.batch_size`, which changes how many examples are ranked at once and no metric
    /// (so a run or experiment started by a build with another default still resumes), and
    /// for the name of the preset the values were read over (every value is spelled out).
    pub fn same_results(&self, other: &Self) -> bool {
        let mut other = other.clone();
        other.eval.batch_size = self.eval.batch_size;
        other.preset = self.preset;
        *self == other
    }

    /// Reads a config file (JSON; unknown keys are errors). The file's keys are read on top of
    /// the preset it names (`"preset"`, default recommended), so a file lists only what it
    /// changes.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, None)
    }

    /// [`Self::load`], on top of `preset` instead of the file's own.
    pub fn load_with(path: &Path, preset: Option<Preset>) -> Result<Self> {
        let mut file = read_config_json(path, None)?;
        let named: Option<Preset> = match file.get("preset") {
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| Error::json(path, e))?),
            None => None,
        };
        let preset = preset.or(named).unwrap_or_default();
        if let Some(obj) = file.as_object_mut() {
            obj.insert(
                "preset".into(),
                serde_json::to_value(preset).expect("a preset"),
            );
        }
        let mut base = serde_json::to_value(Self::preset(preset)).expect("a config");
        merge_json(&mut base, file);
        serde_json::from_value(base).map_err(|e| Error::json(path, e))
    }

    /// Writes the config as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::io::write_json(path, self)
    }

    /// Checks the values no type can.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        let t = &self.train;
        if t.batch_size == 0 || t.eval_every == 0 || t.epochs == 0 || t.parallel_shards == 0 {
            return Err(Error::Config(
                "train: batch_size, epochs, eval_every and parallel_shards must be positive".into(),
            ));
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if let Optimizer::AdamW { weight_decay } = t.optimizer {
            if !(weight_decay.is_finite() && weight_decay >= 0.0) {
                return Err(Error::Config(
                    "train: the AdamW weight_decay must be non-negative".into(),
                ));
            }
            if t.l2 > 0.0 {
                return Err(Error::Config(
                    "train: AdamW decays weights itself: set l2 to 0 (or use Adam)".into(),
                ));
            }
        }
        let decay = match t.optimizer {
            Optimizer::AdamW { weight_decay } => weight_decay,
            Optimizer::Adam => t.l2,
        };
        if !t.decay_all && decay <= 0.0 {
            return Err(Error::Config(
                "train: decay_all = false spares some parameters a decay, and there is none \
                 (set AdamW's weight_decay or Adam's l2 above 0, or leave decay_all on)"
                    .into(),
            ));
        }
        if let Some(p) = &t.plateau
            && !(p.patience > 0 && p.factor > 0.0 && p.factor < 1.0 && p.min_scale > 0.0)
        {
            return Err(Error::Config(
                "train: plateau needs patience > 0, factor in (0, 1) and min_scale > 0".into(),
            ));
        }
        let l2_ok = t.l2.is_finite() && t.l2 >= 0.0;
        if !(positive(t.learning_rate) && positive(t.adam_epsilon) && l2_ok) {
            return Err(Error::Config(
                "train: learning_rate and adam_epsilon must be positive, l2 non-negative".into(),
            ));
        }
        if let Objective::Sampled {
            negatives, sampler, ..
        } = &t.objective
        {
            if *negatives == 0 {
                return Err(Error::Config(
                    "train: a sampled objective needs negatives > 0".into(),
                ));
            }
            if let Sampler::Popularity { power } = sampler
                && !power.is_finite()
            {
                return Err(Error::Config(
                    "train: the popularity power must be finite".into(),
                ));
            }
        }
        if let Some(c) = &t.contrastive
            && !(c.weight.is_finite() && c.weight >= 0.0 && positive(c.temperature))
        {
            return Err(Error::Config(format!(
                "train: the contrastive term needs a finite weight >= 0 and a positive temperature (got weight {}, temperature {})",
                c.weight, c.temperature
            )));
        }
        if t.fit_row_shrinkage && !self.model.modalities.id {
            return Err(Error::Config(
                "train: fit_row_shrinkage needs ID rows (the id modality): there are no learned rows to shrink".into(),
            ));
        }
        if t.fit_unseen_rows && (!self.model.modalities.id || self.model.unseen_row) {
            return Err(Error::Config(
                "train: fit_unseen_rows needs learned ID rows (the id modality on) without model.unseen_row (its learned unseen-item rows stand in for those items already)".into(),
            ));
        }
        if self.eval.batch_size == 0 || self.eval.negatives == 0 {
            return Err(Error::Config(
                "eval: batch_size and negatives must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Loads the dataset and the feature matrices the config names (checking each has one row
    /// per item).
    pub fn load_data(&self) -> Result<LoadedData> {
        let (dataset, mut image, mut text) = match &self.data {
            DataSource::Directory { path, max_history } => {
                let dataset = match detect_format(path)? {
                    Format::C2dsr => load_c2dsr(path, &C2dsrOptions::default())?,
                    Format::Recbole => load_recbole(
                        path,
                        &RecboleOptions {
                            max_history: *max_history,
                            ..Default::default()
                        },
                    )?,
                };
                (dataset, None, None)
            }
            DataSource::Synthetic(cfg) => {
                let data = cfg.generate()?;
                (data.dataset, Some(data.image), Some(data.text))
            }
        };
        let n = dataset.num_items();
        if let Some(p) = &self.features.image {
            image = Some(FeatureMatrix::load(p, Some(n))?);
        }
        if let Some(p) = &self.features.text {
            text = Some(FeatureMatrix::load(p, Some(n))?);
        }
        let (dataset, held_out) = match &self.hold_out {
            Some(h) => {
                let held = h.items(&dataset)?;
                let set = held.iter().copied().collect();
                (dataset.without_training_items(&set), held)
            }
            None => (dataset, Vec::new()),
        };
        Ok(LoadedData {
            dataset,
            image,
            text,
            held_out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut cfg = ExperimentConfig::default();
        cfg.train.objective = Objective::Sampled {
            negatives: 100,
            sampler: Sampler::Popularity { power: 0.75 },
            seen_only: true,
        };
        cfg.data = DataSource::Directory {
            path: "data/x".into(),
            max_history: 20,
        };
        cfg.model.head = crate::model::Head::Dot;
        cfg.save(&path).unwrap();
        assert_eq!(ExperimentConfig::load(&path).unwrap(), cfg);

        std::fs::write(&path, r#"{"model": {"head": "dots"}}"#).unwrap();
        let err = ExperimentConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("dots") && err.contains("cosine"),
            "{err}"
        );

        std::fs::write(&path, r#"{"train": {"learning_rat": 0.1}}"#).unwrap();
        let err = ExperimentConfig::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("config.json") && err.contains("learning_rat"),
            "{err}"
        );
    }

    #[test]
    fn sparing_parameters_a_decay_needs_a_decay() {
        let mut cfg = ExperimentConfig::preset(Preset::Ids);
        cfg.train.decay_all = false;
        cfg.validate().unwrap();
        cfg.train.optimizer = Optimizer::AdamW { weight_decay: 0.0 };
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("decay_all"), "{err}");
        cfg.train.optimizer = Optimizer::Adam;
        cfg.train.l2 = 1e-5;
        cfg.validate().unwrap();
    }

    #[test]
    fn negatives_covering_both_domains_train_the_full_softmax() {
        let data = crate::test_data(20, 10, 12);
        let sampled = |negatives| Objective::Sampled {
            negatives,
            sampler: Sampler::Uniform,
            seen_only: false,
        };
        assert_eq!(sampled(12).for_dataset(&data.dataset), Objective::Full);
        assert_eq!(sampled(500).for_dataset(&data.dataset), Objective::Full);
        // Fewer than the larger domain's items: sampled in both.
        assert_eq!(sampled(11).for_dataset(&data.dataset), sampled(11));
        assert_eq!(Objective::Full.for_dataset(&data.dataset), Objective::Full);
    }

    #[test]
    fn partial_files_fill_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.json");
        std::fs::write(
            &path,
            r#"{"train": {"epochs": 3}, "model": {"id_dim": 64}}"#,
        )
        .unwrap();
        let cfg = ExperimentConfig::load(&path).unwrap();
        assert_eq!(cfg.train.epochs, 3);
        // The recommended preset's values under the file's.
        assert_eq!(cfg.train.batch_size, 128);
        assert_eq!(cfg.model.dropout, 0.5);
        assert_eq!(cfg.model.id_dim, 64);
        assert_eq!(cfg.model.lambda1, 0.3);
    }

    #[test]
    fn validation_catches_bad_values() {
        let mut cfg = ExperimentConfig::default();
        cfg.model.alpha = 0.8;
        cfg.model.beta = 0.5;
        assert!(cfg.validate().unwrap_err().to_string().contains("alpha"));
        let mut cfg = ExperimentConfig::default();
        cfg.train.batch_size = 0;
        assert!(cfg.validate().is_err());
        // The row shrinkage needs ID rows, checked before training.
        let mut cfg = ExperimentConfig::default();
        cfg.train.fit_row_shrinkage = true;
        cfg.validate().unwrap();
        cfg.model.modalities.id = false;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("fit_row_shrinkage") && err.contains("ID rows"),
            "{err}"
        );
        // The contrastive term: a weight alone reads with the default temperature; bad values
        // are named.
        let mut cfg: ExperimentConfig =
            serde_json::from_str(r#"{"train": {"contrastive": {"weight": 0.1}}}"#).unwrap();
        assert_eq!(
            cfg.train.contrastive,
            Some(Contrastive {
                weight: 0.1,
                temperature: 0.2
            })
        );
        cfg.validate().unwrap();
        for (weight, temperature) in [(-0.1, 1.0), (0.1, 0.0), (f64::NAN, 1.0)] {
            cfg.train.contrastive = Some(Contrastive {
                weight,
                temperature,
            });
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains("contrastive"), "{err}");
        }
    }

    #[test]
    fn missing_feature_file_is_named() {
        let cfg = ExperimentConfig {
            data: DataSource::Synthetic(SyntheticConfig {
                users: 20,
                items_x: 10,
                items_y: 10,
                topics: 2,
                ..Default::default()
            }),
            features: FeatureSources {
                image: Some("/nonexistent/img.npy".into()),
                text: None,
            },
            ..Default::default()
        };
        let err = cfg.load_data().unwrap_err().to_string();
        assert!(err.contains("/nonexistent/img.npy"), "{err}");
    }
}
