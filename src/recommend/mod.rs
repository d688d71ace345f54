//! Using a trained model: [`TrainedRun`] loads a run folder with its data (to evaluate, fit or
//! export it), [`Recommender`] serves a model folder or a run folder (top-k for histories,
//! single or batched), and takes new items by their text without retraining
//! ([`Recommender::add_items`]).

use std::path::Path;

use burn::tensor::Device;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::batcher::SequenceBatcher;
use crate::data::{Candidates, DomainId, ItemId, Protocol, Split};
use crate::error::{Error, Result};
use crate::eval::{Evaluation, Evaluator};
use crate::model::host::HostParts;
use crate::model::{ItemFeatures, LlmEmf, readable_history};
use crate::train::checkpoint::load_best_model;
use crate::train::{ExperimentConfig, LoadedData, RunPaths};

mod new_items;

pub use new_items::{NewItem, read_new_items};

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Global item id.
    pub item: ItemId,
    /// Its title, when known.
    pub title: Option<String>,
    /// The cross-domain score: Eq. 11's weighted sum of probabilities.
    pub score: f64,
}

/// A trained model with its data, ready to evaluate and recommend.
#[derive(Debug)]
pub struct TrainedRun {
    /// The run's configuration.
    pub config: ExperimentConfig,
    /// The dataset and features it was trained with.
    pub data: LoadedData,
    /// The best model, in validation mode.
    pub model: LlmEmf,
    features: ItemFeatures,
    batcher: SequenceBatcher,
    device: Device,
}

impl TrainedRun {
    /// Loads the run folder written by [`crate::train::train`]: its config, its data (from the
    /// paths recorded in the config) and its best model.
    pub fn load(run_dir: &Path, device: &Device) -> Result<Self> {
        let paths = RunPaths::new(run_dir);
        let config = ExperimentConfig::load(&paths.config())?;
        let data = config.load_data()?;
        Self::from_parts(config, data, &paths.best_model(), device)
    }

    /// Builds a run from a config, its loaded data and a saved model file.
    pub fn from_parts(
        config: ExperimentConfig,
        data: LoadedData,
        model_path: &Path,
        device: &Device,
    ) -> Result<Self> {
        let features = data.features(device)?;
        let model = load_best_model(&config.model, &data, &features, model_path, device)?;
        let batcher = config.model.batcher(&data.dataset);
        Ok(Self {
            config,
            data,
            model,
            features,
            batcher,
            device: device.clone(),
        })
    }

    /// Fits the sub-sequence weights of the score on the validation split, as
    /// [`crate::train::TrainConfig::fit_domain_weights`] does at the end of training, for a
    /// run trained without it: the model is changed here, the run folder is not (see
    /// [`crate::train::fit_run`] for that).
    pub fn fit_domain_weights(&mut self) -> Result<crate::train::DomainWeightFit> {
        self.fit_with(|model, validate, names| {
            crate::train::fit::fit_domain_weights(model, validate, names)
        })
    }

    /// Everything [`crate::train::TrainConfig::fit_domain_weights`] fits at the end of
    /// training, in its order: the modality weights (the share of the feature modalities
    /// beside the IDs), then the sub-sequence weights, each where the model has them. The model
    /// is changed here, the run folder is not.
    #[allow(clippy::type_complexity)]
    pub fn fit_score_weights(
        &mut self,
    ) -> Result<(
        Option<crate::train::ModalityWeightFit>,
        Option<crate::train::DomainWeightFit>,
    )> {
        self.fit_with(|model, validate, names| {
            crate::train::fit::fit_score_weights(model, validate, names)
        })
    }

    /// Fits the prior count of the learned ID rows on the validation split, as
    /// [`crate::train::TrainConfig::fit_row_shrinkage`] does at the end of training. The model
    /// is changed here, the run folder is not.
    pub fn fit_row_shrinkage(&mut self) -> Result<crate::train::RowShrinkageFit> {
        self.fit_with(|model, validate, names| {
            crate::train::fit::fit_row_shrinkage(model, validate, names)
        })
    }

    /// Runs a fit on a copy of the model (a module's copy shares its tensors) with a
    /// validation on this run's data and validation candidates (drawn once), then keeps the
    /// fitted copy.
    fn fit_with<R>(
        &mut self,
        fit: impl FnOnce(
            &mut LlmEmf,
            &mut dyn FnMut(&LlmEmf) -> Result<Evaluation>,
            [&str; 2],
        ) -> Result<R>,
    ) -> Result<R> {
        let protocol = self.config.eval.protocol;
        let candidates = self.candidates(Split::Valid, protocol, None)?;
        let dataset = &self.data.dataset;
        let names = DomainId::BOTH.map(|d| dataset.domain(d).name.as_str());
        let evaluator = self.evaluator();
        let mut validate = |m: &LlmEmf| evaluator.evaluate(m, Split::Valid, &candidates);
        let mut model = self.model.clone();
        let out = fit(&mut model, &mut validate, names)?;
        self.model = model;
        Ok(out)
    }

    /// Evaluates the model on `split` under `protocol`, with the run's evaluation seed unless
    /// `seed` is given.
    pub fn evaluate(
        &self,
        split: Split,
        protocol: Protocol,
        seed: Option<u64>,
    ) -> Result<Evaluation> {
        self.evaluate_with(split, &self.candidates(split, protocol, seed)?)
    }

    /// Samples the candidates of `split` under `protocol`, with the run's number of negatives
    /// and its evaluation seed unless `seed` is given.
    pub fn candidates(
        &self,
        split: Split,
        protocol: Protocol,
        seed: Option<u64>,
    ) -> Result<Candidates> {
        let ec = &self.config.eval;
        Candidates::sample(
            &self.data.dataset,
            split,
            protocol,
            seed.unwrap_or(ec.seed),
            ec.negatives,
        )
    }

    /// Evaluates the model on `split` against given candidates (e.g. loaded from a file).
    pub fn evaluate_with(&self, split: Split, candidates: &Candidates) -> Result<Evaluation> {
        self.evaluator().evaluate(&self.model, split, candidates)
    }

    /// The run's [`Evaluator`]: its features, dataset, batcher, evaluation batch size and
    /// device.
    pub fn evaluator(&self) -> Evaluator<'_> {
        Evaluator {
            features: &self.features,
            dataset: &self.data.dataset,
            batcher: &self.batcher,
            batch_size: self.config.eval.batch_size,
            device: &self.device,
        }
    }

    /// Evaluates only the examples of `split` whose target is one of `targets` (each with the
    /// candidates it has among all examples): how a set of items ranks, such as the items a
    /// run held out of training (`held_out.txt`, [`crate::train::HoldOut`]) or the same items
    /// in a run trained with them.
    pub fn evaluate_targets(
        &self,
        split: Split,
        candidates: &Candidates,
        targets: &std::collections::HashSet<ItemId>,
    ) -> Result<Evaluation> {
        candidates.check(&self.data.dataset, split)?;
        let (dataset, kept) = self
            .data
            .dataset
            .with_examples_where(split, |e| targets.contains(&e.target));
        let mut info = candidates.info.clone();
        info.examples = kept.len();
        let candidates = Candidates {
            info,
            negatives: kept
                .iter()
                .map(|&i| candidates.negatives[i].clone())
                .collect(),
        };
        Evaluator {
            dataset: &dataset,
            ..self.evaluator()
        }
        .evaluate(&self.model, split, &candidates)
    }

    /// The `k` best items of `domain` after `history` (global ids, oldest first), excluding the
    /// items of the history. For many requests, build a [`Recommender`] once instead.
    pub fn recommend(
        &self,
        history: &[ItemId],
        domain: DomainId,
        k: usize,
    ) -> Result<Vec<Recommendation>> {
        Recommender::new(
            self.model.clone(),
            self.features.clone(),
            self.data.dataset.clone(),
            &self.config.model,
            &self.device,
        )
        .recommend(history, domain, k, Exclude::History)
    }

    /// Writes the run's best model as a self-contained model folder at `dir`
    /// ([`crate::model_dir`]): configuration, score settings, weights, the catalogue with its
    /// training counts, and the frozen feature rows; no interaction and no path outside it.
    pub fn export(&self, dir: &Path) -> Result<crate::model_dir::SaveReport> {
        let dataset = &self.data.dataset;
        let catalogue = crate::data::Dataset::new(
            dataset.name(),
            dataset.domains().clone(),
            dataset.items().to_vec(),
            crate::data::TrainingData::Missing {
                path: dir.to_path_buf(),
                hint: "a model folder holds no interactions".into(),
            },
            Vec::new(),
            Vec::new(),
        )?;
        let parts = crate::model_dir::ModelDirParts {
            config: self.config.model.clone(),
            score: self.model.score_settings(),
            catalogue,
            train_counts: dataset.train_counts(),
            image: self.data.image.clone(),
            text: self.data.text.clone(),
            added: Vec::new(),
        };
        crate::model_dir::save(dir, &self.model, &parts)
    }

    /// Turns the run into a [`Recommender`] (keeping its model, features and dataset).
    pub fn into_recommender(self) -> Recommender {
        Recommender::new(
            self.model,
            self.features,
            self.data.dataset,
            &self.config.model,
            &self.device,
        )
    }
}

/// What to leave out of a recommendation list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exclude {
    /// Leave out the items of the history (the usual choice: recommend something new).
    #[default]
    History,
    /// Rank every item, seen or not.
    Nothing,
}

/// One request to a [`Recommender`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Global item ids, oldest first. Only the last `max_len` items of each sub-sequence are
    /// read; an empty history is allowed (the merged encoder's "no history" preference).
    pub history: Vec<ItemId>,
    /// The domain to recommend from.
    pub domain: DomainId,
    /// How many items; a `k` above the number of eligible items returns them all.
    pub k: usize,
    /// What to leave out.
    #[serde(default)]
    pub exclude: Exclude,
    /// Rank only these items of `domain` (global ids), when given.
    #[serde(default)]
    pub candidates: Option<Vec<ItemId>>,
}

impl Request {
    /// A request for the top `k` of `domain` after `history`, excluding the history.
    pub fn new(history: Vec<ItemId>, domain: DomainId, k: usize) -> Self {
        Self {
            history,
            domain,
            k,
            exclude: Exclude::History,
            candidates: None,
        }
    }
}

/// A trained model ready to serve: built once from a run folder, it keeps the model, the
/// frozen features and the normalised output tables of both domains (computed once), and
/// answers single or batched requests. It is `Send + Sync`: share it across a server's threads
/// behind an `Arc`.
pub struct Recommender {
    model: LlmEmf,
    features: ItemFeatures,
    heads: [[Option<burn::tensor::Tensor<2>>; 3]; 2],
    /// The same tables on the host (row-major values and width), for requests of a few rows:
    /// the recommender holds the output tables twice (64k items x 64 floats: 16 MB a copy).
    host_heads: [[Option<HostTable>; 3]; 2],
    /// Logit scale `1 / tau` per modality.
    scales: [f64; 3],
    batcher: SequenceBatcher,
    dataset: crate::data::Dataset,
    /// Items added after training ([`Recommender::add_items`]), per domain in the order of
    /// their columns after the domain's catalogue items, with their global ids.
    added: [Vec<(ItemId, NewItem)>; 2],
    /// The items a history read by the encoders keeps ([`LlmEmf::readable_items`]).
    readable: Option<Vec<bool>>,
    device: Device,
}

impl std::fmt::Debug for Recommender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recommender")
            .field("dataset", &self.dataset.name())
            .field("items", &self.dataset.num_items())
            .field("added", &(self.added[0].len() + self.added[1].len()))
            .field("max_len", &self.batcher.max_len())
            .finish()
    }
}

impl Recommender {
    /// Loads a model folder written by [`crate::model_dir::save`] (`llm-emf export`), which
    /// needs nothing outside itself, or a run folder written by [`crate::train::train`] (its
    /// config, its data through the paths the config records, its best model).
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        if crate::model_dir::is_model_dir(dir) {
            let loaded = crate::model_dir::load(dir, device)?;
            let added = loaded.parts.added.clone();
            let mut recommender = Self::new(
                loaded.model,
                loaded.features,
                loaded.parts.catalogue,
                &loaded.parts.config,
                device,
            );
            recommender.add_items(&added).map_err(|e| {
                Error::InvalidInput(format!("{}: the added items: {e}", dir.display()))
            })?;
            Ok(recommender)
        } else {
            Ok(TrainedRun::load(dir, device)?.into_recommender())
        }
    }

    /// Builds a recommender from a model in validation mode and its catalogue (a dataset;
    /// only its domains, items and titles are read).
    pub fn new(
        model: LlmEmf,
        features: ItemFeatures,
        dataset: crate::data::Dataset,
        config: &crate::model::ModelConfig,
        device: &Device,
    ) -> Self {
        let heads = DomainId::BOTH.map(|d| model.heads(d, &features));
        // A table that cannot be read back (no such case on the CPU backends) leaves its
        // domain on the device path.
        let host_heads = heads.clone().map(|per_modality| {
            per_modality.map(|t| {
                let t = t?;
                let width = t.dims()[1];
                let values = t.into_data().convert::<f32>().try_into_vec::<f32>().ok()?;
                Some((values, width))
            })
        });
        let scales = model.temperatures().map(|tau| 1.0 / tau);
        let batcher = config.batcher(&dataset);
        // Reading the training counts back fails on no backend (an f32 vector); were it to,
        // histories would be read whole.
        let readable = model.readable_items().ok().flatten();
        Self {
            model,
            features,
            heads,
            host_heads,
            scales,
            batcher,
            dataset,
            added: [Vec::new(), Vec::new()],
            readable,
            device: device.clone(),
        }
    }

    /// The dataset (catalogue, titles, domains).
    pub fn dataset(&self) -> &crate::data::Dataset {
        &self.dataset
    }

    /// The `k` best items of `domain` after `history` (global ids, oldest first). Errors: an
    /// unknown item id (named), `k = 0`.
    pub fn recommend(
        &self,
        history: &[ItemId],
        domain: DomainId,
        k: usize,
        exclude: Exclude,
    ) -> Result<Vec<Recommendation>> {
        let request = Request {
            history: history.to_vec(),
            domain,
            k,
            exclude,
            candidates: None,
        };
        let mut out = self.recommend_batch(std::slice::from_ref(&request))?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Answers several requests with one forward pass per domain. Every request is checked
    /// before any is scored; an error names the request (by index) and the problem.
    pub fn recommend_batch(&self, requests: &[Request]) -> Result<Vec<Vec<Recommendation>>> {
        for (i, r) in requests.iter().enumerate() {
            self.check(r)
                .map_err(|e| Error::InvalidInput(format!("request {i}: {e}")))?;
        }
        let mut out: Vec<Vec<Recommendation>> = vec![Vec::new(); requests.len()];
        for d in DomainId::BOTH {
            let idx: Vec<usize> = (0..requests.len())
                .filter(|&i| requests[i].domain == d)
                .collect();
            if idx.is_empty() {
                continue;
            }
            // The encoders' view of each history; the whole history still decides what is
            // excluded from the answer.
            let read: Vec<std::borrow::Cow<[ItemId]>> = idx
                .iter()
                .map(|&i| readable_history(&requests[i].history, self.readable.as_deref()))
                .collect();
            let histories: Vec<&[ItemId]> = read.iter().map(|h| h.as_ref()).collect();
            let plan = self.batcher.plan_histories(&histories);
            let inputs = plan.inputs.clone().map(|p| p.to_tensors(&self.device));
            let host_ready = self
                .model
                .modalities()
                .iter()
                .all(|m| self.host_heads[d.index()][m.index()].is_some());
            let parts = if idx.len() <= HOST_ROWS && host_ready {
                self.host_parts(&plan, &inputs, d)?
            } else {
                HostParts::score(
                    &self.model,
                    self.model.score_queries(&plan, &inputs, &self.features, d),
                    &self.heads[d.index()],
                )?
            };
            let n = self.columns(d);
            // Rows are independent: mixed and ranked in parallel on the host, one pass each.
            let answers: Vec<Vec<Recommendation>> = idx
                .par_iter()
                .enumerate()
                .map(|(row, &i)| self.top_k(&parts.mix_row(row, n), &requests[i]))
                .collect();
            for (&i, a) in idx.iter().zip(answers) {
                out[i] = a;
            }
        }
        Ok(out)
    }

    /// The score parts of a few rows, scored on the host against the tables read back at
    /// construction: the queries come from the encoders, the products from
    /// [`crate::fastmath::scaled_dots`] on all cores (one read of each table per call, which
    /// is what bounds a single request's time over a large catalogue).
    fn host_parts(
        &self,
        plan: &crate::data::batcher::EvalPlan,
        inputs: &[crate::data::batcher::SubSequenceBatch; 3],
        d: DomainId,
    ) -> Result<HostParts> {
        let queries = self.model.score_queries(plan, inputs, &self.features, d);
        let mut modalities = Vec::new();
        for (m, weight, q) in queries.modalities {
            let Some((table, width)) = &self.host_heads[d.index()][m.index()] else {
                continue;
            };
            let q = q
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| Error::InvalidInput(format!("reading queries back: {e:?}")))?;
            // `[parts * batch, n]`, sub-sequence-major, as the queries.
            let logits =
                crate::fastmath::scaled_dots(table, *width, &q, self.scales[m.index()] as f32);
            let len = logits.len();
            modalities.push((weight, burn::tensor::TensorData::new(logits, [len])));
        }
        HostParts::new(
            queries.parts.into_iter().map(|(_, w, p)| (w, p)).collect(),
            modalities,
        )
    }

    fn check(&self, r: &Request) -> std::result::Result<(), String> {
        if r.k == 0 {
            return Err("k must be at least 1".into());
        }
        let n = self.dataset.num_items();
        if let Some(&bad) = r.history.iter().find(|&&i| i as usize >= n) {
            return Err(if self.added_column(bad).is_some() {
                format!(
                    "history item {bad} was added after training: a history holds only the items the model was trained with (an added item is recommendable, not yet readable as a past interaction)"
                )
            } else {
                format!("history item {bad} is outside the catalogue of {n} items")
            });
        }
        if let Some(c) = &r.candidates {
            let dom = self.dataset.domain(r.domain);
            if let Some(&bad) = c.iter().find(|&&i| {
                !dom.contains(i) && self.added_column(i).is_none_or(|(d, _)| d != r.domain)
            }) {
                return Err(format!(
                    "candidate {bad} is not an item of domain {}",
                    dom.name
                ));
            }
        }
        Ok(())
    }

    /// The best `k` eligible items of one row of Eq. 11 scores (local ids of the request's
    /// domain).
    fn top_k(&self, row: &[f32], r: &Request) -> Vec<Recommendation> {
        let dom = self.dataset.domain(r.domain);
        let excluded = |item: ItemId| r.exclude == Exclude::History && r.history.contains(&item);
        let mut eligible: Vec<(ItemId, f32)> = match &r.candidates {
            Some(c) => {
                let mut c: Vec<(ItemId, f32)> = c
                    .iter()
                    .filter(|&&item| !excluded(item))
                    .map(|&item| {
                        let column = match self.added_column(item) {
                            Some((_, column)) => column,
                            None => (item - dom.start) as usize,
                        };
                        (item, row[column])
                    })
                    .collect();
                c.sort_unstable_by_key(|&(item, _)| item);
                c.dedup_by_key(|e| e.0);
                c
            }
            None => {
                let mut all: Vec<(ItemId, f32)> = row
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| (self.column_item(r.domain, i), s))
                    .collect();
                if r.exclude == Exclude::History {
                    for &item in r.history.iter().filter(|&&i| dom.contains(i)) {
                        all[(item - dom.start) as usize].1 = f32::NAN;
                    }
                }
                all
            }
        };
        eligible.retain(|&(_, s)| !s.is_nan());
        let better = |a: &(ItemId, f32), b: &(ItemId, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let k = r.k.min(eligible.len());
        if k < eligible.len() {
            eligible.select_nth_unstable_by(k, better);
            eligible.truncate(k);
        }
        eligible.sort_unstable_by(better);
        eligible
            .into_iter()
            .map(|(item, s)| Recommendation {
                item,
                title: self.title(item),
                score: s as f64,
            })
            .collect()
    }
}

/// An output table on the host: row-major values and the row width.
type HostTable = (Vec<f32>, usize);

/// Requests per domain up to which a batch is scored on the host (a few queries per table
/// row); above it, one matrix product on the device is faster.
const HOST_ROWS: usize = 4;
