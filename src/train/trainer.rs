//! The training loop: Adam with L2, early stopping on validation MRR, best-model and resumable
//! checkpoints, a progress bar and one JSON line per epoch.
//!
//! Run folder layout:
//! - `config.json`: the [`ExperimentConfig`] of the run;
//! - `model.bpk`: the best model so far (by mean validation MRR over the two domains);
//! - `checkpoint/`: the model and optimizer after the last completed epoch, and `state.json`;
//! - `log.jsonl`: one line per epoch (loss, validation metrics, seconds, throughput);
//! - `results.json`: the test metrics of the best model, written when training ends.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::{ExperimentConfig, LoadedData, Objective, Sampler};
use crate::data::batcher::SequenceBatcher;
use crate::data::{Candidates, Dataset, DomainId, Sequence, Split};
use crate::error::{Error, Result};
use crate::eval::{Evaluation, evaluate};
use crate::io::{append_line, read_json, write_json};
use crate::model::{DomainNegatives, ItemFeatures, LlmEmf};

/// Options that do not change results.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Show a progress bar per epoch.
    pub progress: bool,
    /// Print one summary line per epoch to stderr.
    pub verbose: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            progress: true,
            verbose: true,
        }
    }
}

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
}

/// One line of `log.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Seconds spent training (without validation).
    pub train_seconds: f64,
    /// Training sequences per second.
    pub train_sequences_per_second: f64,
    /// Validation metrics, when evaluated this epoch.
    pub valid: Option<Evaluation>,
    /// Whether this epoch's model is the best so far.
    pub best: bool,
    /// Temperatures of the id, image and text heads.
    pub temperatures: [f64; 3],
}

/// What a finished training run reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    /// Epochs run (including any before a resume).
    pub epochs: usize,
    /// Epoch of the best model.
    pub best_epoch: usize,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Validation metrics of the best model.
    pub valid: Evaluation,
    /// Test metrics of the best model.
    pub test: Evaluation,
    /// Mean training throughput over the epochs of this process, sequences per second.
    pub train_sequences_per_second: f64,
    /// Number of trainable parameters.
    pub parameters: usize,
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
    fn checkpoint_dir(&self) -> PathBuf {
        self.root.join("checkpoint")
    }
    fn state(&self) -> PathBuf {
        self.checkpoint_dir().join("state.json")
    }
    fn checkpoint_model(&self, epoch: usize) -> PathBuf {
        self.checkpoint_dir().join(format!("model-{epoch}.bpk"))
    }
    fn checkpoint_optim(&self, epoch: usize) -> PathBuf {
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

/// Loads a module saved by [`save_module`] into `module`'s structure.
pub(crate) fn load_module<M: Module>(module: M, path: &Path) -> Result<M> {
    if !path.is_file() {
        return Err(Error::checkpoint(path, "no such checkpoint file"));
    }
    module
        .try_load_file(path)
        .map_err(|e| Error::checkpoint(path, format!("{e:?}")))
}

/// Per-domain negative sampler of the sampled softmax.
struct NegativeSampler {
    k: usize,
    /// Cumulative distribution over each domain's items.
    cdf: [Vec<f64>; 2],
    /// `log(K * q(i))` per domain, on the training device.
    log_q: [Tensor<1>; 2],
}

impl NegativeSampler {
    fn new(dataset: &Dataset, k: usize, sampler: &Sampler, device: &Device) -> Self {
        let counts = dataset.train_counts();
        let build = |d: DomainId| {
            let dom = dataset.domain(d);
            let weights: Vec<f64> = dom
                .items()
                .map(|i| match sampler {
                    Sampler::Uniform => 1.0,
                    Sampler::Popularity { power } => (counts[i as usize] as f64 + 1.0).powf(*power),
                })
                .collect();
            let total: f64 = weights.iter().sum();
            let mut acc = 0.0;
            let cdf: Vec<f64> = weights
                .iter()
                .map(|w| {
                    acc += w / total;
                    acc
                })
                .collect();
            let log_q: Vec<f32> = weights
                .iter()
                .map(|w| ((k as f64) * w / total).ln() as f32)
                .collect();
            let n = log_q.len();
            (cdf, Tensor::from_data(TensorData::new(log_q, [n]), device))
        };
        let (cx, qx) = build(DomainId::X);
        let (cy, qy) = build(DomainId::Y);
        Self {
            k,
            cdf: [cx, cy],
            log_q: [qx, qy],
        }
    }

    fn sample(&self, rng: &mut ChaCha8Rng, device: &Device) -> [DomainNegatives; 2] {
        std::array::from_fn(|d| {
            let cdf = &self.cdf[d];
            let ids: Vec<i64> = (0..self.k)
                .map(|_| {
                    let u: f64 = rng.random();
                    cdf.partition_point(|&c| c < u).min(cdf.len() - 1) as i64
                })
                .collect();
            DomainNegatives {
                ids: Tensor::<1, Int>::from_data(TensorData::new(ids, [self.k]), device),
                log_q: self.log_q[d].clone(),
            }
        })
    }
}

fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    rng
}

/// Trains LLM-EMF on `data` as `config` says, writing the run folder `run_dir`. Resumes from
/// `run_dir`'s last checkpoint when it holds an unfinished run of the same configuration.
pub fn train(
    config: &ExperimentConfig,
    data: &LoadedData,
    run_dir: &Path,
    device: &Device,
    options: &TrainOptions,
) -> Result<TrainReport> {
    config.validate()?;
    let dataset = &data.dataset;
    let sequences: Vec<&Sequence> = dataset
        .train()?
        .iter()
        .filter(|s| s.items.len() >= 2)
        .collect();
    if sequences.is_empty() {
        return Err(Error::InvalidInput(
            "no training sequence has two or more items: nothing to learn".into(),
        ));
    }
    let paths = RunPaths::new(run_dir);
    std::fs::create_dir_all(paths.checkpoint_dir())
        .map_err(|e| Error::io(paths.checkpoint_dir(), e))?;

    let mut state = if paths.state().is_file() {
        let saved: ExperimentConfig = ExperimentConfig::load(&paths.config())?;
        if &saved != config {
            return Err(Error::Config(format!(
                "{} holds a run with another configuration: resume it with its own config.json, or choose another output folder",
                run_dir.display()
            )));
        }
        let state: TrainState = read_json(&paths.state())?;
        if state.finished {
            return Err(Error::Config(format!(
                "{} holds a finished run (best epoch {}): choose another output folder",
                run_dir.display(),
                state.best_epoch
            )));
        }
        state
    } else {
        config.save(&paths.config())?;
        // A fresh run starts a fresh log.
        let _ = std::fs::remove_file(paths.log());
        TrainState {
            epochs_done: 0,
            best_epoch: 0,
            best_valid_mrr: -1.0,
            epochs_without_improvement: 0,
            finished: false,
        }
    };

    let tc = &config.train;
    let features = ItemFeatures::new(
        data.image.as_ref(),
        data.text.as_ref(),
        dataset.num_items(),
        device,
    )?;
    let train_features = features.for_autodiff();
    let ad_device = device.clone().autodiff();
    ad_device.seed(tc.seed);
    let mut model = LlmEmf::new(&config.model, dataset, &features, &ad_device)?;
    let parameters = model.num_params();
    let mut optim: ModuleOptimizer = AdamConfig::new()
        .with_epsilon(tc.adam_epsilon as f32)
        .with_weight_decay((tc.l2 > 0.0).then(|| WeightDecayConfig::new(tc.l2 as f32)))
        .init();
    if state.epochs_done > 0 {
        let e = state.epochs_done;
        model = load_module(model, &paths.checkpoint_model(e))?.train();
        let optim_path = paths.checkpoint_optim(e);
        optim = optim
            .load(&optim_path)
            .map_err(|err| Error::checkpoint(&optim_path, format!("{err:?}")))?;
        if options.verbose {
            eprintln!("resuming {} after epoch {e}", run_dir.display());
        }
    }

    let batcher = SequenceBatcher::new(dataset, config.model.max_len)
        .with_cross_domain_targets(config.model.cross_domain_targets);
    let ec = &config.eval;
    let valid_candidates =
        Candidates::sample(dataset, Split::Valid, ec.protocol, ec.seed, ec.negatives)?;
    let sampler = match &tc.objective {
        Objective::Full => None,
        Objective::Sampled { negatives, sampler } => Some(NegativeSampler::new(
            dataset, *negatives, sampler, &ad_device,
        )),
    };
    let target_domains = tc.target_domains.domains();
    let evaluate_on = |model: &LlmEmf, split: Split, candidates: &Candidates| {
        evaluate(
            model,
            &features,
            dataset,
            split,
            candidates,
            &batcher,
            ec.batch_size,
            device,
        )
    };
    let mut throughput = Vec::new();
    let mut stopped_early = false;

    for epoch in state.epochs_done..tc.epochs {
        let mut rng = epoch_rng(tc.seed, epoch);
        ad_device.seed(tc.seed.wrapping_add(1 + epoch as u64));
        let mut order = sequences.clone();
        order.shuffle(&mut rng);
        let batches = order.len().div_ceil(tc.batch_size);
        let bar = if options.progress {
            let bar = ProgressBar::new(batches as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} batches, {per_sec}, eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{}/{}", epoch + 1, tc.epochs));
            bar
        } else {
            ProgressBar::hidden()
        };
        let start = Instant::now();
        let (mut loss_sum, mut loss_count) = (0.0f64, 0usize);
        for (b, chunk) in order.chunks(tc.batch_size).enumerate() {
            let plan = batcher.plan_train(chunk);
            if plan.targets.iter().flatten().all(|t| t.is_empty()) {
                // Nothing to predict (cannot happen with sequences of two or more items).
                bar.inc(1);
                continue;
            }
            let batch = plan.to_tensors(&ad_device);
            let negatives = sampler.as_ref().map(|s| s.sample(&mut rng, &ad_device));
            let loss = model.loss(&batch, &train_features, &target_domains, negatives.as_ref());
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                return Err(Error::InvalidInput(format!(
                    "the training loss became {value} at epoch {}, batch {}: lower the learning rate",
                    epoch + 1,
                    b + 1
                )));
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(tc.learning_rate, model, grads);
            loss_sum += value as f64;
            loss_count += 1;
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", loss_sum / loss_count as f64));
        }
        bar.finish_and_clear();
        let train_seconds = start.elapsed().as_secs_f64();
        let rate = order.len() as f64 / train_seconds.max(1e-9);
        throughput.push(rate);
        let epoch_no = epoch + 1;

        let evaluate_now = epoch_no % tc.eval_every == 0 || epoch_no == tc.epochs;
        let mut best = false;
        let valid = if evaluate_now {
            let snapshot = model.valid();
            let v = evaluate_on(&snapshot, Split::Valid, &valid_candidates)?;
            let mrr = v.mean_mrr();
            if mrr > state.best_valid_mrr {
                state.best_valid_mrr = mrr;
                state.best_epoch = epoch_no;
                state.epochs_without_improvement = 0;
                save_module(&snapshot, &paths.best_model())?;
                best = true;
            } else {
                state.epochs_without_improvement += 1;
            }
            Some(v)
        } else {
            None
        };
        let log = EpochLog {
            epoch: epoch_no,
            loss: loss_sum / loss_count.max(1) as f64,
            train_seconds,
            train_sequences_per_second: rate,
            valid: valid.clone(),
            best,
            temperatures: model.temperatures(),
        };
        if options.verbose {
            let v = valid
                .as_ref()
                .map(|v| {
                    v.domains
                        .iter()
                        .map(|(n, m)| format!("{n} MRR {:.2}%", 100.0 * m.mrr))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|| "not evaluated".into());
            eprintln!(
                "epoch {epoch_no}: loss {:.4}, {:.1}s ({rate:.0} seq/s), valid: {v}{}",
                log.loss,
                train_seconds,
                if best { " (best)" } else { "" }
            );
        }
        let line = serde_json::to_string(&log).map_err(|e| Error::json(paths.log(), e))?;
        append_line(&paths.log(), &line)?;

        stopped_early = state.epochs_without_improvement >= tc.patience;
        state.epochs_done = epoch_no;
        state.finished = stopped_early || epoch_no == tc.epochs;
        // Checkpoint files first, then the state that points at them, then drop older files.
        save_module(&model, &paths.checkpoint_model(epoch_no))?;
        let optim_path = paths.checkpoint_optim(epoch_no);
        let tmp = optim_path.with_extension("bpk.tmp");
        optim
            .save(&tmp)
            .map_err(|e| Error::checkpoint(&optim_path, format!("{e:?}")))?;
        std::fs::rename(&tmp, &optim_path).map_err(|e| Error::io(&optim_path, e))?;
        write_json(&paths.state(), &state)?;
        if epoch_no > 1 {
            let _ = std::fs::remove_file(paths.checkpoint_model(epoch_no - 1));
            let _ = std::fs::remove_file(paths.checkpoint_optim(epoch_no - 1));
        }
        if stopped_early {
            if options.verbose {
                eprintln!(
                    "early stop: no better validation MRR for {} epochs (best: epoch {})",
                    tc.patience, state.best_epoch
                );
            }
            break;
        }
    }

    // Test the best model.
    let best = load_module(
        LlmEmf::new(&config.model, dataset, &features, device)?,
        &paths.best_model(),
    )?
    .valid();
    let valid = evaluate_on(&best, Split::Valid, &valid_candidates)?;
    let test_candidates =
        Candidates::sample(dataset, Split::Test, ec.protocol, ec.seed, ec.negatives)?;
    let test = evaluate_on(&best, Split::Test, &test_candidates)?;
    let report = TrainReport {
        epochs: state.epochs_done,
        best_epoch: state.best_epoch,
        stopped_early,
        valid,
        test,
        train_sequences_per_second: if throughput.is_empty() {
            0.0
        } else {
            throughput.iter().sum::<f64>() / throughput.len() as f64
        },
        parameters,
    };
    write_json(&paths.results(), &report)?;
    Ok(report)
}
