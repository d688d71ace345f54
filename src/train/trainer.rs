//! The training loop: Adam, early stopping on validation MRR, best-model and resumable
//! checkpoints, a progress bar and one JSON line per epoch. Each part has its own file:
//! [`super::batching`] (the order of an epoch), `sampler` (negatives),
//! [`super::step`] (one step, with its profile), `optimizer` (Adam or AdamW, its parameter
//! groups), `epoch` (one pass),
//! `stopping` (validation and early stopping), [`super::checkpoint`] (the run folder and
//! resumption), [`super::log`] (the epoch record); this file puts them in order.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::checkpoint::{
    RunPaths, load_best_model, load_module, open_run, resume, save_checkpoint, save_model,
};
use super::config::{ExperimentConfig, LoadedData, Objective};
use super::epoch::{EpochPlan, run_epoch};
use super::fit::{
    DomainWeightFit, ModalityWeightFit, RowShrinkageFit, RunFits, UnseenRowFit, make_fits,
    unseen_row_draws,
};
use super::log::EpochLog;
use super::optimizer::new_optimizer;
use super::sampler::NegativeSampler;
use super::step::StepContext;
use super::stopping::{plateau_step, record_validation, should_stop};
use crate::data::{Candidates, DomainId, Sequence, Split};
use crate::error::{Error, Result};
use crate::eval::{Evaluation, Evaluator};
use crate::io::append_line;
use crate::model::LlmEmf;

/// Options that do not change results.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Show a progress bar per epoch.
    pub progress: bool,
    /// Emit one summary line per epoch and the training's events (resumption, rate decays,
    /// early stop, validation fits) as `tracing` info events: the `llm-emf` tool prints them
    /// on stderr; a service routes them with its own subscriber (none installed: dropped).
    pub verbose: bool,
    /// Time the phases of every training step (synchronising the device after each) and write
    /// them to `log.jsonl`. Slows training a little.
    pub profile: bool,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            progress: true,
            verbose: true,
            profile: false,
        }
    }
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
    /// The validation fit of the sub-sequence weights (`TrainConfig::fit_domain_weights`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_weight_fit: Option<DomainWeightFit>,
    /// The validation fit of the modality weights, before the sub-sequence weights (same
    /// switch; models with a feature modality beside the IDs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality_weight_fit: Option<ModalityWeightFit>,
    /// The validation fit of the learned rows' prior counts (`TrainConfig::fit_row_shrinkage`),
    /// after the score's weights (`fit::make_fits` gives the order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_shrinkage_fit: Option<RowShrinkageFit>,
    /// The validation check of fresh rows for the items never seen in training
    /// (`TrainConfig::fit_unseen_rows`): first with plain learned rows, last with title rows
    /// (`fit::make_fits`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen_row_fit: Option<UnseenRowFit>,
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
    if config.preset == super::config::Preset::Titles && data.text.is_none() {
        return Err(Error::Config(
            "the titles preset needs title vectors (features.text, or --features-tex): make them with `llm-emf embed --text-encoder minilm`, or use the ids preset".into(),
        ));
    }
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
    let mut state = open_run(&paths, config)?;
    if !data.held_out.is_empty() {
        // The items training never saw, for `llm-emf evaluate --targets`.
        let list: String = data.held_out.iter().map(|i| format!("{i}\n")).collect();
        crate::io::write_atomic(&run_dir.join("held_out.txt"), list.as_bytes())?;
    }

    let tc = &config.train;
    let features = data.features(device)?;
    let train_features = features.for_autodiff();
    let ad_device = device.clone().autodiff();
    ad_device.seed(tc.seed);
    let model = LlmEmf::new(&config.model, dataset, &features, &ad_device)?;
    let parameters = model.num_params();
    let (mut model, mut optim) = if state.epochs_done > 0 {
        let resumed = resume(&paths, &state, model, |m| new_optimizer(tc, m))?;
        if options.verbose {
            tracing::info!(
                "resuming {} after epoch {}",
                run_dir.display(),
                state.epochs_done
            );
        }
        resumed
    } else {
        let optim = new_optimizer(tc, &model);
        (model, optim)
    };

    let batcher = config.model.batcher(dataset);
    let ec = &config.eval;
    let valid_candidates =
        Candidates::sample(dataset, Split::Valid, ec.protocol, ec.seed, ec.negatives)?;
    let objective = tc.objective.for_dataset(dataset);
    if options.verbose && objective != tc.objective {
        tracing::info!(
            "the sampled softmax's negatives cover both domains ({} and {} items): training \
             with the full softmax",
            dataset.domain(DomainId::X).len,
            dataset.domain(DomainId::Y).len
        );
    }
    let sampler = match objective {
        Objective::Full => None,
        Objective::Sampled {
            negatives,
            sampler,
            seen_only,
        } => Some(NegativeSampler::new(
            dataset, negatives, &sampler, seen_only, &ad_device,
        )),
    };
    let target_domains = tc.target_domains.domains();
    let evaluator = Evaluator {
        features: &features,
        dataset,
        batcher: &batcher,
        batch_size: ec.batch_size,
        device,
    };
    let ctx = StepContext {
        batcher: &batcher,
        features: &train_features,
        base_features: &features,
        sampler: sampler.as_ref(),
        target_domains: &target_domains,
        contrastive: tc.contrastive,
        device: &ad_device,
    };
    let mut throughput = Vec::new();
    let mut stopped_early = false;

    let first = if state.finished {
        tc.epochs
    } else {
        state.epochs_done
    };
    for epoch in first..tc.epochs {
        ad_device.seed(tc.seed.wrapping_add(1 + epoch as u64));
        let plan = EpochPlan {
            epoch,
            epochs: tc.epochs,
            seed: tc.seed,
            batch_size: tc.batch_size,
            batching: tc.batching,
            domain_x: dataset.domain(DomainId::X),
            progress: options.progress,
            profile: options.profile,
            learning_rate: tc.learning_rate,
            lr_scale: state.lr_scale,
            warmup_epochs: tc.warmup_epochs,
            shards: tc.parallel_shards,
        };
        let (next, stats) = run_epoch(model, &mut optim, &sequences, &plan, &ctx)?;
        model = next;
        let rate = stats.sequences as f64 / stats.seconds.max(1e-9);
        throughput.push(rate);
        let epoch_no = epoch + 1;

        let evaluate_now = epoch_no % tc.eval_every == 0 || epoch_no == tc.epochs;
        let mut best = false;
        let valid = if evaluate_now {
            let snapshot = model.valid();
            let v = evaluator.evaluate(&snapshot, Split::Valid, &valid_candidates)?;
            best = record_validation(&mut state, epoch_no, v.mean_mrr());
            if best {
                save_model(&snapshot, &paths.best_model())?;
            }
            if let Some(p) = &tc.plateau
                && plateau_step(&mut state, best, p)
            {
                if p.restore_best {
                    model = load_module(model, &paths.best_model())?;
                    optim = new_optimizer(tc, &model);
                }
                if options.verbose {
                    tracing::info!(
                        "validation stalled: learning rate x{}{}",
                        state.lr_scale,
                        if p.restore_best {
                            format!(", from the best weights (epoch {})", state.best_epoch)
                        } else {
                            String::new()
                        }
                    );
                }
            }
            Some(v)
        } else {
            None
        };
        let log = EpochLog {
            epoch: epoch_no,
            loss: stats.loss,
            train_seconds: stats.seconds,
            train_sequences_per_second: rate,
            padding: Some(stats.padding),
            profile: stats.profile,
            valid,
            best,
            temperatures: model.temperatures(),
            modality_weights: Some(model.modality_weights()),
            domain_weights: Some(DomainId::BOTH.map(|d| model.domain_weights(d))),
        };
        if options.verbose {
            tracing::info!("{}", log.summary());
        }
        let line = serde_json::to_string(&log).map_err(|e| Error::json(paths.log(), e))?;
        append_line(&paths.log(), &line)?;

        stopped_early = should_stop(&state, tc.patience);
        state.epochs_done = epoch_no;
        state.finished = stopped_early || epoch_no == tc.epochs;
        save_checkpoint(&paths, &state, &model, &optim)?;
        if stopped_early {
            if options.verbose {
                tracing::info!(
                    "early stop: no better validation MRR for {} epochs (best: epoch {})",
                    tc.patience,
                    state.best_epoch
                );
            }
            break;
        }
    }

    // Test the best model, its sub-sequence weights first fitted on validation when asked.
    let mut best = load_best_model(&config.model, data, &features, &paths.best_model(), device)?;
    let names = DomainId::BOTH.map(|d| dataset.domain(d).name.as_str());
    let fits = RunFits {
        weights: tc.fit_domain_weights,
        row_shrinkage: tc.fit_row_shrinkage,
        unseen_rows: tc.fit_unseen_rows,
    };
    let draws = unseen_row_draws(config.model.id_row_init, best.has_title_rows());
    let records = make_fits(
        &mut best,
        |m| evaluator.evaluate(m, Split::Valid, &valid_candidates),
        names,
        fits,
        &draws,
        tc.seed,
        options.verbose,
    )?;
    // The best model saved once with whatever the fits changed.
    if records.changed_model() {
        save_model(&best, &paths.best_model())?;
    }
    let valid = evaluator.evaluate(&best, Split::Valid, &valid_candidates)?;
    let test_candidates =
        Candidates::sample(dataset, Split::Test, ec.protocol, ec.seed, ec.negatives)?;
    let test = evaluator.evaluate(&best, Split::Test, &test_candidates)?;
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
        domain_weight_fit: records.domain_weights,
        modality_weight_fit: records.modality_weights,
        row_shrinkage_fit: records.row_shrinkage,
        unseen_row_fit: records.unseen_rows,
    };
    crate::io::write_json(&paths.results(), &report)?;
    Ok(report)
}
