//! The run folder: its paths, atomic module saves, and the resumable checkpoint (model,
//! optimizer and [`TrainState`] after the last completed epoch).
//!
//! Run folder layout:
//! - `config.json`: the [`ExperimentConfig`] of the run;
//! - `model.bpk`: the best model so far (by mean validation MRR over the two domains);
//! - `checkpoint/`: the model and optimizer after the last completed epoch, and `state.json`;
//! - `log.jsonl`: one line per epoch (loss, validation metrics, seconds, throughput);
//! - `results.json`: the test metrics of the best model, written when training ends.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use super::config::ExperimentConfig;
use crate::error::{Error, Result};
use crate::io::{read_json, write_json};
use crate::model::LlmEmf;

/// Progress saved after every epoch, so an interrupted run resumes from there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epochs completed.
    pub epochs_done: usize,
    /// Epoch (1-based) of the best validation MRR so far.
    pub best_epoch: usize,
    /// Best mean validation MRR so far.
    pub best_valid_mrr: f64,
    /// Consecutive evaluated epochs without improvement.
    pub epochs_without_improvement: usize,
    /// Whether training has ended (early stop or last epoch).
    pub finished: bool,
    /// Factor on the learning rate after plateau decays (1 without).
    #[serde(default = "one")]
    pub lr_scale: f64,
    /// Evaluations without improvement since the last plateau decay.
    #[serde(default)]
    pub evaluations_since_decay: usize,
}

fn one() -> f64 {
    1.0
}

impl TrainState {
    /// The state of a run that has not trained yet.
    pub fn fresh() -> Self {
        Self {
            epochs_done: 0,
            best_epoch: 0,
            best_valid_mrr: -1.0,
            epochs_without_improvement: 0,
            finished: false,
            lr_scale: 1.0,
            evaluations_since_decay: 0,
        }
    }
}

/// Opens the run folder: a fresh run writes `config.json` (and starts a fresh log); a folder
/// holding an unfinished run of the same configuration returns its saved state. Another
/// configuration, or a finished run, is an error that says what to do.
pub(super) fn open_run(paths: &RunPaths, config: &ExperimentConfig) -> Result<TrainState> {
    let run_dir = paths.root();
    std::fs::create_dir_all(paths.checkpoint_dir())
        .map_err(|e| Error::io(paths.checkpoint_dir(), e))?;
    if !paths.state().is_file() {
        config.save(&paths.config())?;
        let _ = std::fs::remove_file(paths.log());
        return Ok(TrainState::fresh());
    }
    let saved: ExperimentConfig = ExperimentConfig::load(&paths.config())?;
    if !saved.same_results(config) {
        return Err(Error::Config(format!(
            "{} holds a run with another configuration: resume it with its own config.json, or choose another output folder",
            run_dir.display()
        )));
    }
    let state: TrainState = read_json(&paths.state())?;
    // Finished, but killed before its results were written: the caller tests it again.
    if state.finished && !paths.results().is_file() {
        return Ok(state);
    }
    if state.finished {
        return Err(Error::Config(format!(
            "{} holds a finished run (best epoch {}): choose another output folder",
            run_dir.display(),
            state.best_epoch
        )));
    }
    Ok(state)
}

/// Restores the model and optimizer saved after epoch `state.epochs_done`; the optimizer is
/// made by `new_optimizer` for the restored model (its parameter groups name their ids).
pub(super) fn resume(
    paths: &RunPaths,
    state: &TrainState,
    model: LlmEmf,
    new_optimizer: impl FnOnce(&LlmEmf) -> ModuleOptimizer,
) -> Result<(LlmEmf, ModuleOptimizer)> {
    let e = state.epochs_done;
    let model = load_module(model, &paths.checkpoint_model(e))?.train();
    let optim_path = paths.checkpoint_optim(e);
    let optim = new_optimizer(&model)
        .load(&optim_path)
        .map_err(|err| Error::checkpoint(&optim_path, format!("{err:?}")))?;
    Ok((model, optim))
}

/// Saves the checkpoint of a completed epoch: model and optimizer files first,
/// then the state that points at them, then the previous epoch's files are dropped. A kill at
/// any point leaves a state that points at complete files.
pub(super) fn save_checkpoint(
    paths: &RunPaths,
    state: &TrainState,
    model: &LlmEmf,
    optim: &ModuleOptimizer,
) -> Result<()> {
    let epoch = state.epochs_done;
    save_module(model, &paths.checkpoint_model(epoch))?;
    let optim_path = paths.checkpoint_optim(epoch);
    let tmp = optim_path.with_extension("bpk.tmp");
    optim
        .save(&tmp)
        .map_err(|e| Error::checkpoint(&optim_path, format!("{e:?}")))?;
    std::fs::rename(&tmp, &optim_path).map_err(|e| Error::io(&optim_path, e))?;
    write_json(&paths.state(), state)?;
    if epoch > 1 {
        let _ = std::fs::remove_file(paths.checkpoint_model(epoch - 1));
        let _ = std::fs::remove_file(paths.checkpoint_optim(epoch - 1));
    }
    Ok(())
}

/// Paths inside a run folder.
#[derive(Debug, Clone)]
pub struct RunPaths {
    root: PathBuf,
}

impl RunPaths {
    /// The run folder `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }
    /// The best model.
    pub fn best_model(&self) -> PathBuf {
        self.root.join("model.bpk")
    }
    /// The per-epoch log.
    pub fn log(&self) -> PathBuf {
        self.root.join("log.jsonl")
    }
    /// Final test results.
    pub fn results(&self) -> PathBuf {
        self.root.join("results.json")
    }
    /// The files that record a finished run without its weights, each with whether a
    /// finished run always has it: the config, the test results, the per-epoch log and the
    /// best model's score settings (what [`archive_experiment`](super::archive_experiment)
    /// keeps).
    pub fn record_files(&self) -> [(PathBuf, bool); 4] {
        [
            (self.config(), true),
            (self.results(), true),
            (self.log(), false),
            (score_settings_path(&self.best_model()), false),
        ]
    }
    pub(super) fn checkpoint_dir(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    pub(super) fn state(&self) -> PathBuf {
        self.checkpoint_dir().join("state.json")
    }
    pub(super) fn checkpoint_model(&self, epoch: usize) -> PathBuf {
        self.checkpoint_dir().join(format!("model-{epoch}.bpk"))
    }
    pub(super) fn checkpoint_optim(&self, epoch: usize) -> PathBuf {
        self.checkpoint_dir().join(format!("optim-{epoch}.bpk"))
    }
}

/// Saves a module atomically (temporary file, then rename).
pub(crate) fn save_module<M: Module>(module: &M, path: &Path) -> Result<()> {
    let tmp = path.with_extension("bpk.tmp");
    module
        .clone()
        .save_file(&tmp)
        .map_err(|e| Error::checkpoint(path, format!("{e:?}")))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The file of the score settings saved beside a model file (`model.bpk` ->
/// `model.score.json`): what a validation fit changed that the model file cannot hold.
pub fn score_settings_path(model_path: &Path) -> PathBuf {
    model_path.with_extension("score.json")
}

/// Saves a model with its score settings beside it ([`crate::model::ScoreSettings`]): the
/// settings first, so that a model file never sits beside settings older than itself.
pub(crate) fn save_model(model: &LlmEmf, path: &Path) -> Result<()> {
    crate::io::write_json(&score_settings_path(path), &model.score_settings())?;
    save_module(model, path)
}

/// Loads a model saved by [`save_model`] into `model`'s structure and applies the score
/// settings saved beside it (a model file without them, written before they existed, keeps the
/// settings of its configuration).
pub(crate) fn load_model(model: LlmEmf, path: &Path) -> Result<LlmEmf> {
    let mut model = load_module(model, path)?;
    let settings_path = score_settings_path(path);
    if settings_path.is_file() {
        let settings: crate::model::ScoreSettings = crate::io::read_json(&settings_path)?;
        model
            .apply_score_settings(&settings)
            .map_err(|e| Error::checkpoint(&settings_path, e.to_string()))?;
    }
    Ok(model)
}

/// Builds the model of `config` for `data` and loads the best model saved at `path` into it
/// ([`load_model`]), in validation mode.
pub(crate) fn load_best_model(
    config: &crate::model::ModelConfig,
    data: &super::config::LoadedData,
    features: &crate::model::ItemFeatures,
    path: &Path,
    device: &burn::tensor::Device,
) -> Result<LlmEmf> {
    let model = LlmEmf::new(config, &data.dataset, features, device)?;
    Ok(load_model(model, path)?.valid())
}

/// Loads a module saved by [`save_module`] into `module`'s structure.
pub(crate) fn load_module<M: Module>(module: M, path: &Path) -> Result<M> {
    if !path.is_file() {
        return Err(Error::checkpoint(path, "no such checkpoint file"));
    }
    module
        .try_load_file(path)
        .map_err(|e| Error::checkpoint(path, format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::DomainId;
    use crate::model::ModelConfig;

    #[test]
    fn fixed_weights_survive_a_save_and_a_load() {
        let device = crate::test_device();
        let data = crate::test_data(30, 20, 25);
        let features = crate::test_features(&data, &device);
        // Fixed (not learned) weights: constants of the module, absent from the model file.
        let config = ModelConfig {
            id_dim: 8,
            max_len: 12,
            learned_domain_weights: false,
            learned_modality_weights: false,
            ..Default::default()
        };
        let fresh = || LlmEmf::new(&config, &data.dataset, &features, &device).unwrap();
        let mut model = fresh();
        model
            .domain_loss
            .set_weights(DomainId::X, [0.2, 0.05, 0.75])
            .unwrap();
        model.fusion.set_weights([0.6, 0.1, 0.3]).unwrap();
        let want = model.score_settings();
        assert_ne!(
            want,
            fresh().score_settings(),
            "the settings differ from the config's"
        );

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bpk");
        save_model(&model, &path).unwrap();
        assert!(score_settings_path(&path).is_file());
        let loaded = load_model(fresh(), &path).unwrap();
        assert_eq!(loaded.score_settings(), want);
        // The module file alone gives the config's settings back: what was lost before.
        let bare = load_module(fresh(), &path).unwrap();
        assert_eq!(bare.score_settings(), fresh().score_settings());

        // Settings that do not fit the model are an error naming their file.
        std::fs::write(
            score_settings_path(&path),
            r#"{"modality_weights": [1, 0, 0], "domain_weights": [[0, 0, 0], [1, 1, 1]]}"#,
        )
        .unwrap();
        let err = load_model(fresh(), &path).unwrap_err().to_string();
        assert!(err.contains("model.score.json"), "{err}");
        // A model file without settings (written before they existed) keeps its config's.
        std::fs::remove_file(score_settings_path(&path)).unwrap();
        let old = load_model(fresh(), &path).unwrap();
        assert_eq!(old.score_settings(), fresh().score_settings());
        // Settings of the removed popularity adjustment: read when neutral, refused otherwise.
        let legacy = |exponent: f64| {
            let mut file = serde_json::to_value(&want).unwrap();
            file["popularity_exponent"] = serde_json::json!([0.0, exponent]);
            file["unseen_boost"] = serde_json::json!([0.0, 0.0]);
            file.to_string()
        };
        std::fs::write(score_settings_path(&path), legacy(0.0)).unwrap();
        assert_eq!(load_model(fresh(), &path).unwrap().score_settings(), want);
        std::fs::write(score_settings_path(&path), legacy(-0.4)).unwrap();
        let err = load_model(fresh(), &path).unwrap_err().to_string();
        assert!(err.contains("popularity adjustment was removed"), "{err}");
    }
}
