//! Using a trained run: load it from its folder, evaluate it, recommend items for a history.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::data::batcher::SequenceBatcher;
use crate::data::{Candidates, DomainId, ItemId, Protocol, Split};
use crate::error::{Error, Result};
use crate::eval::{Evaluation, evaluate};
use crate::model::{ItemFeatures, LlmEmf};
use crate::train::trainer::load_module;
use crate::train::{ExperimentConfig, LoadedData, RunPaths};

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    /// Global item id.
    pub item: ItemId,
    /// Its title, when known.
    pub title: Option<String>,
    /// The cross-domain score of Eq. 11 (a weighted sum of probabilities).
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
        let features = ItemFeatures::new(
            data.image.as_ref(),
            data.text.as_ref(),
            data.dataset.num_items(),
            device,
        )?;
        let model = load_module(
            LlmEmf::new(&config.model, &data.dataset, &features, device)?,
            model_path,
        )?
        .valid();
        let batcher = SequenceBatcher::new(&data.dataset, config.model.max_len);
        Ok(Self {
            config,
            data,
            model,
            features,
            batcher,
            device: device.clone(),
        })
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
        evaluate(
            &self.model,
            &self.features,
            &self.data.dataset,
            split,
            candidates,
            &self.batcher,
            self.config.eval.batch_size,
            &self.device,
        )
    }

    /// The `k` best items of `domain` after `history` (global ids, oldest first), excluding the
    /// items of the history.
    pub fn recommend(
        &self,
        history: &[ItemId],
        domain: DomainId,
        k: usize,
    ) -> Result<Vec<Recommendation>> {
        let dataset = &self.data.dataset;
        if k == 0 {
            return Err(Error::InvalidInput("k must be at least 1".into()));
        }
        for &item in history {
            dataset.item(item)?;
        }
        let plan = self.batcher.plan_histories(&[history]);
        let inputs = plan.inputs.clone().map(|p| p.to_tensors(&self.device));
        let scores = self.model.score(&plan, &inputs, &self.features, domain);
        let scores: Vec<f32> = scores
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| Error::InvalidInput(format!("reading scores back: {e:?}")))?;
        let dom = dataset.domain(domain);
        let mut ranked: Vec<(ItemId, f32)> = scores
            .into_iter()
            .enumerate()
            .map(|(i, s)| (dom.start + i as ItemId, s))
            .filter(|(item, s)| !history.contains(item) && !s.is_nan())
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Ok(ranked
            .into_iter()
            .take(k)
            .map(|(item, s)| Recommendation {
                item,
                title: dataset.items()[item as usize].title.clone(),
                score: (s as f64).exp(),
            })
            .collect())
    }
}
