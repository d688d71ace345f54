//! The training loop: Adam, early stopping on validation MRR, best-model and resumable
//! checkpoints, a progress bar and one JSON line per epoch. Each part has its own file:
//! [`super::batching`] (the order of an epoch), [`super::sampler`] (negatives),
//! [`super::step`] (one step, with its profile), [`super::epoch`] (one pass),
//! [`super::stopping`] (validation and early stopping), [`super::checkpoint`] (the run folder and
//! resumption), [`super::log`] (the epoch record); this file puts them in order.

use std::path::Path;

use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::average::WeightAverage;
use super::checkpoint::{
    RunPaths, load_model, load_module, open_run, resume, resume_average, save_checkpoint,
    save_model,
};
use super::config::{ExperimentConfig, LoadedData, Objective, Optimizer, TrainConfig};
use super::epoch::{EpochPlan, run_epoch};
use super::log::EpochLog;
use super::sampler::NegativeSampler;
use super::step::StepContext;
use super::stopping::{plateau_step, record_validation, should_stop};
use crate::data::{Candidates, DomainId, Sequence, Split};
use crate::error::{Error, Result};
use crate::eval::{Evaluation, evaluate};
use crate::io::append_line;
use crate::model::{ItemFeatures, LlmEmf};

/// Options that do not change results.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Show a progress bar per epoch.
    pub progress: bool,
    /// Print one summary line per epoch to stderr.
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
    /// The validation fit of the popularity adjustment (`TrainConfig::fit_popularity`), after
    /// the weight fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popularity_fit: Option<PopularityFit>,
    /// The validation fit of the learned rows' prior counts (`TrainConfig::fit_row_shrinkage`),
    /// after the other fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_shrinkage_fit: Option<RowShrinkageFit>,
}

/// The grid search of [`crate::train::TrainConfig::fit_domain_weights`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DomainWeightFit {
    /// The trained weights (X, Y, merged) per target domain (X, Y).
    pub trained: [[f64; 3]; 2],
    /// Per merged share tried: the share and the validation MRR of each target domain (for
    /// fixed weights, shared by both domains, their mean twice).
    pub grid: Vec<(f64, [f64; 2])>,
    /// The chosen weights (X, Y, merged) per target domain.
    pub chosen: [[f64; 3]; 2],
}

/// The grid search of the modality weights (id, image, text) on validation, part of
/// [`crate::train::TrainConfig::fit_domain_weights`] for models with more than the ID modality:
/// one set for both target domains (the fusion head is shared), chosen on the mean MRR.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModalityWeightFit {
    /// The trained weights (id, image, text).
    pub trained: [f64; 3],
    /// Per share of the feature modalities tried: the share and the mean validation MRR.
    pub grid: Vec<(f64, f64)>,
    /// The chosen weights (id, image, text).
    pub chosen: [f64; 3],
}

/// The validation MRR of each named domain in `e` (minus infinity for a domain it lacks), as
/// the score-weight fits compare them.
fn domain_mrrs(e: &Evaluation, domain_names: [&str; 2]) -> [f64; 2] {
    domain_names.map(|n| e.domains.get(n).map_or(f64::NEG_INFINITY, |m| m.mrr))
}

/// Shares of the feature (image and text) modalities tried by the modality fit (the trained
/// weights are tried too).
const FEATURE_SHARES: [f64; 11] = [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0];

/// Modality weights (id, image, text) that give the feature modalities in `used` the share `s`
/// of the fusion and split it in the ratio of `weights` (equally when their weights are all
/// zero); the ID modality gets `1 - s`.
pub fn feature_share(weights: [f64; 3], used: [bool; 3], s: f64) -> [f64; 3] {
    let features: f64 = (1..3).filter(|&i| used[i]).map(|i| weights[i]).sum();
    let count = (1..3).filter(|&i| used[i]).count().max(1) as f64;
    std::array::from_fn(|i| match i {
        0 => 1.0 - s,
        _ if !used[i] => 0.0,
        _ if features > 0.0 => s * weights[i] / features,
        _ => s / count,
    })
}

/// Whether the model mixes the ID modality with a feature modality: what the modality fit needs.
fn has_modality_weights_to_fit(model: &LlmEmf) -> bool {
    let m = model.modalities();
    m.len() > 1 && m.contains(&crate::model::Modality::Id)
}

/// Chooses the feature modalities' share of the fusion with the best mean validation MRR (the
/// trained weights compete too), sets it in `model` and reports the grid.
pub(crate) fn fit_modality_weights(
    model: &mut LlmEmf,
    mut validate: impl FnMut(&LlmEmf) -> Result<Evaluation>,
    domain_names: [&str; 2],
) -> Result<ModalityWeightFit> {
    let used = model.fusion.used;
    let trained = model.modality_weights();
    let mrr = |e: &Evaluation| {
        let [x, y] = domain_mrrs(e, domain_names);
        (x + y) / 2.0
    };
    let mut best = mrr(&validate(model)?);
    let mut chosen = trained;
    let mut grid = Vec::new();
    for s in FEATURE_SHARES {
        let weights = feature_share(trained, used, s);
        model.fusion.set_weights(weights)?;
        let got = mrr(&validate(model)?);
        if got > best {
            best = got;
            chosen = weights;
        }
        grid.push((s, got));
    }
    model.fusion.set_weights(chosen)?;
    Ok(ModalityWeightFit {
        trained,
        grid,
        chosen: model.modality_weights(),
    })
}

/// The validation fits of [`crate::train::TrainConfig::fit_domain_weights`], in their order:
/// the modality weights, then the sub-sequence weights, each where the model has them (`None`
/// otherwise).
pub(crate) fn fit_score_weights(
    model: &mut LlmEmf,
    mut validate: impl FnMut(&LlmEmf) -> Result<Evaluation>,
    domain_names: [&str; 2],
) -> Result<(Option<ModalityWeightFit>, Option<DomainWeightFit>)> {
    let modality = if has_modality_weights_to_fit(model) {
        Some(fit_modality_weights(model, &mut validate, domain_names)?)
    } else {
        None
    };
    let domain = if has_domain_weights_to_fit(model) {
        Some(fit_domain_weights(model, &mut validate, domain_names)?)
    } else {
        None
    };
    Ok((modality, domain))
}

/// Shares of the merged sequence tried by the fit (the trained weights are tried too).
const MERGED_SHARES: [f64; 12] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0];

/// Sub-sequence weights (X, Y, merged) that give the merged sequence the share `m` of the score
/// and split `1 - m` between S^X and S^Y in the ratio of `weights`. A share of 1 leaves them a
/// negligible weight (fixed weights are relative to the own sub-sequence's, which must stay
/// positive).
pub fn merged_share(weights: [f64; 3], m: f64) -> [f64; 3] {
    let [x, y, _] = weights;
    let scale = (1.0 - m).max(1e-9) / (x + y).max(1e-12);
    [x * scale, y * scale, m]
}

/// Whether the model reads the merged sequence and another one: what the validation fit of the
/// sub-sequence weights needs.
fn has_domain_weights_to_fit(model: &LlmEmf) -> bool {
    let subs = model.sub_sequences();
    subs.len() > 1 && subs.contains(&crate::data::batcher::SubSequence::Merged)
}

/// Chooses per target domain the merged sequence's share of the score with the best validation
/// MRR (the trained weights compete too), sets it in `model` and reports the grid.
pub(crate) fn fit_domain_weights(
    model: &mut LlmEmf,
    mut validate: impl FnMut(&LlmEmf) -> Result<Evaluation>,
    domain_names: [&str; 2],
) -> Result<DomainWeightFit> {
    let trained = DomainId::BOTH.map(|d| model.domain_weights(d));
    // Fixed weights are one pair of lambdas for both target domains: one share for both,
    // chosen on the mean MRR.
    let shared = model.domain_loss.logits.is_none();
    let mrr = |e: &Evaluation| {
        let per = domain_mrrs(e, domain_names);
        if shared {
            let mean = (per[0] + per[1]) / 2.0;
            [mean, mean]
        } else {
            per
        }
    };
    let mut best = mrr(&validate(model)?);
    let mut chosen = trained;
    let mut grid = Vec::new();
    for m in MERGED_SHARES {
        let weights = trained.map(|w| merged_share(w, m));
        for d in DomainId::BOTH {
            model.domain_loss.set_weights(d, weights[d.index()])?;
        }
        let got = mrr(&validate(model)?);
        for d in 0..2 {
            if got[d] > best[d] {
                best[d] = got[d];
                chosen[d] = weights[d];
            }
        }
        grid.push((m, got));
    }
    for d in DomainId::BOTH {
        model.domain_loss.set_weights(d, chosen[d.index()])?;
    }
    Ok(DomainWeightFit {
        trained,
        grid,
        chosen,
    })
}

/// The grid search of [`crate::train::TrainConfig::fit_row_shrinkage`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RowShrinkageFit {
    /// The prior counts (X's rows, Y's rows) before the fit (`None`: rows whole).
    pub before: [Option<f64>; 2],
    /// Per prior count tried (for both domains' rows): the count and the validation MRR of
    /// each target domain.
    pub grid: Vec<(Option<f64>, [f64; 2])>,
    /// The chosen prior counts (X's rows, Y's rows; one count for both).
    pub chosen: [Option<f64>; 2],
}

/// Prior counts of the learned rows tried by the row-shrinkage fit, whole rows first. 0 drops
/// only the rows of items never seen in training.
const ROW_SHRINKAGES: [Option<f64>; 9] = [
    None,
    Some(0.0),
    Some(0.5),
    Some(1.0),
    Some(2.0),
    Some(4.0),
    Some(8.0),
    Some(16.0),
    Some(32.0),
];

/// Chooses one prior count for both domains' learned ID rows ([`LlmEmf::row_shrinkage`]) with
/// the best sum of the domains' validation MRRs over the grid (whole rows are its first point
/// and win ties; the counts the model had are replaced, so a fit depends on the trained
/// weights alone and fitting again gives the same), sets it in `model` and reports the grid.
/// One count, evaluated as set: a domain's rows feed the other domain's histories too, so
/// counts chosen per domain on separate passes would combine into a setting never validated
/// (on Food-Kitchen such a pair scored below the grid's own points). An error naming the
/// switch for a model without title rows.
pub(crate) fn fit_row_shrinkage(
    model: &mut LlmEmf,
    mut validate: impl FnMut(&LlmEmf) -> Result<Evaluation>,
    domain_names: [&str; 2],
) -> Result<RowShrinkageFit> {
    if model.id_text_projection.is_none() {
        return Err(Error::Config(
            "train.fit_row_shrinkage needs title rows (model.id_text): the model has no rows to shrink towards a title".into(),
        ));
    }
    let before = DomainId::BOTH.map(|d| model.row_shrinkage(d));
    let total = |mrrs: [f64; 2]| mrrs[0] + mrrs[1];
    let mut best = f64::NEG_INFINITY;
    let mut chosen = [None; 2];
    let mut grid = Vec::new();
    for k in ROW_SHRINKAGES {
        for d in DomainId::BOTH {
            model.set_row_shrinkage(d, k)?;
        }
        let got = domain_mrrs(&validate(model)?, domain_names);
        if total(got) > best {
            best = total(got);
            chosen = [k; 2];
        }
        grid.push((k, got));
    }
    for d in DomainId::BOTH {
        model.set_row_shrinkage(d, chosen[d.index()])?;
    }
    Ok(RowShrinkageFit {
        before,
        grid,
        chosen,
    })
}

/// The grid searches of [`crate::train::TrainConfig::fit_popularity`], per target domain: the
/// exponent `gamma_D` of the popularity adjustment ([`LlmEmf::popularity_exponent`]), then the
/// log-boost `b_D` of the items without training interactions ([`LlmEmf::unseen_boost`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PopularityFit {
    /// The exponents before the fit (X, Y).
    pub before: [f64; 2],
    /// Per exponent tried: the exponent and the validation MRR of each target domain.
    pub grid: Vec<(f64, [f64; 2])>,
    /// The chosen exponents (X, Y).
    pub chosen: [f64; 2],
    /// The boosts before the fit (X, Y).
    #[serde(default)]
    pub unseen_before: [f64; 2],
    /// Per boost tried (with the chosen exponents): the boost and the validation MRR of each
    /// target domain.
    #[serde(default)]
    pub unseen_grid: Vec<(f64, [f64; 2])>,
    /// The chosen boosts (X, Y).
    #[serde(default)]
    pub unseen_chosen: [f64; 2],
}

/// Exponents of the popularity adjustment tried by the fit (the model's current ones are
/// tried too). Negative values lift rarely seen items against popular ones.
const POPULARITY_EXPONENTS: [f64; 13] = [
    -1.0, -0.75, -0.5, -0.4, -0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3, 0.5, 0.75,
];

/// Log-boosts of the items without training interactions tried by the fit (the current ones
/// are tried too): their scores times `exp(b)`.
const UNSEEN_BOOSTS: [f64; 12] = [
    -4.0, -2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0,
];

/// The values a per-domain grid search tried, each with the validation MRR of both target
/// domains.
type PerDomainGrid = Vec<(f64, [f64; 2])>;

/// One grid search per target domain of a score setting that changes only that domain's
/// scores (so both are chosen from one pass over the grid): `set(model, d, value)` sets it,
/// the current values compete. Returns the grid and the chosen values, set in `model`.
fn fit_per_domain(
    model: &mut LlmEmf,
    validate: &mut impl FnMut(&LlmEmf) -> Result<Evaluation>,
    domain_names: [&str; 2],
    current: [f64; 2],
    values: &[f64],
    set: impl Fn(&mut LlmEmf, DomainId, f64) -> Result<()>,
) -> Result<(PerDomainGrid, [f64; 2])> {
    let mut best = domain_mrrs(&validate(model)?, domain_names);
    let mut chosen = current;
    let mut grid = Vec::new();
    for &value in values {
        for d in DomainId::BOTH {
            set(model, d, value)?;
        }
        let got = domain_mrrs(&validate(model)?, domain_names);
        for d in 0..2 {
            if got[d] > best[d] {
                best[d] = got[d];
                chosen[d] = value;
            }
        }
        grid.push((value, got));
    }
    for d in DomainId::BOTH {
        set(model, d, chosen[d.index()])?;
    }
    Ok((grid, chosen))
}

/// Chooses per target domain the exponent of the popularity adjustment, then the boost of the
/// items without training interactions, each with the best validation MRR (the current values
/// compete too), sets them in `model` and reports the grids.
pub(crate) fn fit_popularity(
    model: &mut LlmEmf,
    mut validate: impl FnMut(&LlmEmf) -> Result<Evaluation>,
    domain_names: [&str; 2],
) -> Result<PopularityFit> {
    let before = model.popularity_exponent;
    let (grid, chosen) = fit_per_domain(
        model,
        &mut validate,
        domain_names,
        before,
        &POPULARITY_EXPONENTS,
        LlmEmf::set_popularity_exponent,
    )?;
    let unseen_before = model.unseen_boost;
    let (unseen_grid, unseen_chosen) = fit_per_domain(
        model,
        &mut validate,
        domain_names,
        unseen_before,
        &UNSEEN_BOOSTS,
        LlmEmf::set_unseen_boost,
    )?;
    Ok(PopularityFit {
        before,
        grid,
        chosen,
        unseen_before,
        unseen_grid,
        unseen_chosen,
    })
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
    let mut state = open_run(&paths, config)?;

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
    let mut optim = new_optimizer(tc);
    if state.epochs_done > 0 {
        (model, optim) = resume(&paths, &state, model, optim)?;
        if options.verbose {
            eprintln!(
                "resuming {} after epoch {}",
                run_dir.display(),
                state.epochs_done
            );
        }
    }

    // The weight average starts at the first step's weights, or resumes from its checkpoint.
    let mut average = match &tc.weight_average {
        Some(w) => {
            let decay = w.decay(sequences.len().div_ceil(tc.batch_size));
            Some(if state.epochs_done > 0 {
                WeightAverage::resume(resume_average(&paths, &state, &model)?, decay)
            } else {
                WeightAverage::new(decay)
            })
        }
        None => None,
    };

    let batcher = config.model.batcher(dataset);
    let ec = &config.eval;
    let valid_candidates =
        Candidates::sample(dataset, Split::Valid, ec.protocol, ec.seed, ec.negatives)?;
    let objective = tc.objective.for_dataset(dataset);
    if options.verbose && objective != tc.objective {
        eprintln!(
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
    let ctx = StepContext {
        batcher: &batcher,
        features: &train_features,
        base_features: &features,
        sampler: sampler.as_ref(),
        target_domains: &target_domains,
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
        let (next, stats) =
            run_epoch(model, &mut optim, &sequences, &plan, &ctx, average.as_mut())?;
        model = next;
        let rate = stats.sequences as f64 / stats.seconds.max(1e-9);
        throughput.push(rate);
        let epoch_no = epoch + 1;

        let evaluate_now = epoch_no % tc.eval_every == 0 || epoch_no == tc.epochs;
        let mut best = false;
        let valid = if evaluate_now {
            let snapshot = match average.as_ref().and_then(|a| a.model()) {
                Some(avg) => avg.clone(),
                None => model.valid(),
            };
            let v = evaluate_on(&snapshot, Split::Valid, &valid_candidates)?;
            best = record_validation(&mut state, epoch_no, v.mean_mrr());
            if best {
                save_model(&snapshot, &paths.best_model())?;
            }
            if let Some(p) = &tc.plateau
                && plateau_step(&mut state, best, p)
            {
                if p.restore_best {
                    model = load_module(model, &paths.best_model())?;
                    optim = new_optimizer(tc);
                    if let Some(a) = average.as_mut() {
                        a.restart_at(&model);
                    }
                }
                if options.verbose {
                    eprintln!(
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
            eprintln!("{}", log.summary());
        }
        let line = serde_json::to_string(&log).map_err(|e| Error::json(paths.log(), e))?;
        append_line(&paths.log(), &line)?;

        stopped_early = should_stop(&state, tc.patience);
        state.epochs_done = epoch_no;
        state.finished = stopped_early || epoch_no == tc.epochs;
        save_checkpoint(
            &paths,
            &state,
            &model,
            &optim,
            average.as_ref().and_then(|a| a.model()),
        )?;
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

    // Test the best model, its sub-sequence weights first fitted on validation when asked.
    let mut best = load_model(
        LlmEmf::new(&config.model, dataset, &features, device)?,
        &paths.best_model(),
    )?
    .valid();
    let names = DomainId::BOTH.map(|d| dataset.domain(d).name.as_str());
    let (modality_weight_fit, domain_weight_fit) = if tc.fit_domain_weights {
        let fits = fit_score_weights(
            &mut best,
            |m| evaluate_on(m, Split::Valid, &valid_candidates),
            names,
        )?;
        if options.verbose {
            if let Some(fit) = &fits.0 {
                eprintln!(
                    "modality weights (id, image, text) fitted on validation: {:?}",
                    fit.chosen
                );
            }
            if let Some(fit) = &fits.1 {
                eprintln!(
                    "sub-sequence weights fitted on validation: target X {:?}, target Y {:?}",
                    fit.chosen[0], fit.chosen[1]
                );
            }
        }
        fits
    } else {
        (None, None)
    };
    let validate = |m: &LlmEmf| evaluate_on(m, Split::Valid, &valid_candidates);
    let popularity_fit = fit_if(
        tc.fit_popularity,
        options.verbose,
        || fit_popularity(&mut best, validate, names),
        |fit| {
            format!(
                "popularity exponents fitted on validation: {:?}, unseen-item boosts {:?}",
                fit.chosen, fit.unseen_chosen
            )
        },
    )?;
    let row_shrinkage_fit = fit_if(
        tc.fit_row_shrinkage,
        options.verbose,
        || fit_row_shrinkage(&mut best, validate, names),
        |fit| {
            format!(
                "prior counts of the learned rows (X, Y) fitted on validation: {:?}",
                fit.chosen
            )
        },
    )?;
    // The best model saved once with whatever the fits changed.
    if modality_weight_fit.is_some()
        || domain_weight_fit.is_some()
        || popularity_fit.is_some()
        || row_shrinkage_fit.is_some()
    {
        save_model(&best, &paths.best_model())?;
    }
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
        domain_weight_fit,
        modality_weight_fit,
        popularity_fit,
        row_shrinkage_fit,
    };
    crate::io::write_json(&paths.results(), &report)?;
    Ok(report)
}

/// Runs one of the score fits made after training when its switch `on` is set, saying what
/// it chose (`describe`) when `verbose`.
fn fit_if<R>(
    on: bool,
    verbose: bool,
    fit: impl FnOnce() -> Result<R>,
    describe: impl Fn(&R) -> String,
) -> Result<Option<R>> {
    if !on {
        return Ok(None);
    }
    let fit = fit()?;
    if verbose {
        eprintln!("{}", describe(&fit));
    }
    Ok(Some(fit))
}

/// Which validation fits [`fit_run`] makes on a finished run, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunFits {
    /// The score's weights (the feature modalities' share, then the sub-sequence weights,
    /// each where the model has them), as [`crate::train::TrainConfig::fit_domain_weights`].
    pub weights: bool,
    /// The popularity adjustment, as [`crate::train::TrainConfig::fit_popularity`].
    pub popularity: bool,
    /// The learned rows' prior counts, as [`crate::train::TrainConfig::fit_row_shrinkage`].
    pub row_shrinkage: bool,
}

/// Fits the score's weights of a finished run on its validation split, then, with
/// `popularity`, the popularity adjustment: [`fit_run`] with those fits.
pub fn fit_run_domain_weights(
    run_dir: &Path,
    device: &Device,
    popularity: bool,
) -> Result<TrainReport> {
    fit_run(
        run_dir,
        device,
        RunFits {
            weights: true,
            popularity,
            row_shrinkage: false,
        },
    )
}

/// Makes the validation fits `fits` names on the finished run in `run_dir`, as the train
/// switches would have at the end of training (the fits happen after training, so the result
/// equals what the switches would have given), and rewrites the run's best model, its score
/// settings and `results.json` (validation and test metrics, and the fits made; the training
/// fields and earlier fits are kept). An error, before anything is written, when none is asked
/// for, when the weights alone are asked for and the model has none to fit, and when the row
/// shrinkage is asked for and the model has no title rows.
pub fn fit_run(run_dir: &Path, device: &Device, fits: RunFits) -> Result<TrainReport> {
    let paths = RunPaths::new(run_dir);
    let mut report: TrainReport = crate::io::read_json(&paths.results())?;
    let mut run = crate::recommend::TrainedRun::load(run_dir, device)?;
    if !(fits.weights || fits.popularity || fits.row_shrinkage) {
        return Err(Error::Config(format!(
            "{}: no fit asked for",
            run_dir.display()
        )));
    }
    let weights = fits.weights
        && (has_modality_weights_to_fit(&run.model) || has_domain_weights_to_fit(&run.model));
    if fits.weights && !weights && !fits.popularity && !fits.row_shrinkage {
        return Err(Error::Config(format!(
            "{}: the model reads {} sub-sequence(s) without both the merged one and another, and {} modality(ies) without IDs and a feature modality: no weights to fit",
            run_dir.display(),
            run.model.sub_sequences().len(),
            run.model.modalities().len()
        )));
    }
    if fits.row_shrinkage && run.model.id_text_projection.is_none() {
        return Err(Error::Config(format!(
            "{}: the model has no title rows (model.id_text): no learned rows to shrink towards a title",
            run_dir.display()
        )));
    }
    if weights {
        (report.modality_weight_fit, report.domain_weight_fit) = run.fit_score_weights()?;
    }
    if fits.popularity {
        report.popularity_fit = Some(run.fit_popularity()?);
    }
    if fits.row_shrinkage {
        report.row_shrinkage_fit = Some(run.fit_row_shrinkage()?);
    }
    save_model(&run.model, &paths.best_model())?;
    let protocol = run.config.eval.protocol;
    report.valid = run.evaluate(Split::Valid, protocol, None)?;
    report.test = run.evaluate(Split::Test, protocol, None)?;
    crate::io::write_json(&paths.results(), &report)?;
    Ok(report)
}

/// A fresh optimizer of the configured kind (no moments yet).
fn new_optimizer(tc: &TrainConfig) -> ModuleOptimizer {
    match tc.optimizer {
        Optimizer::Adam => AdamConfig::new()
            .with_epsilon(tc.adam_epsilon as f32)
            .with_weight_decay((tc.l2 > 0.0).then(|| WeightDecayConfig::new(tc.l2 as f32)))
            .init(),
        Optimizer::AdamW { weight_decay } => AdamWConfig::new()
            .with_epsilon(tc.adam_epsilon as f32)
            .with_weight_decay(weight_decay as f32)
            .init(),
    }
}
