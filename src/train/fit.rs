//! The validation fits made after training: the score's weights (the feature modalities'
//! share of the fusion, then the merged sequence's share of the score) and the learned rows'
//! shrinkage towards their titles, each a grid search on the validation split that keeps the
//! best point in the model; the fresh rows of the items never seen in training (`unseen`);
//! [`make_fits`], which makes them in order after training, and [`fit_run`], which makes them
//! on a finished run folder.

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::checkpoint::{RunPaths, load_best_model, save_model};
use super::config::ExperimentConfig;
use super::trainer::TrainReport;
use crate::data::{Candidates, DomainId, Split};
use crate::error::{Error, Result};
use crate::eval::{Evaluation, Evaluator};
use crate::model::{LlmEmf, UnseenRowDraw};

mod unseen;
pub use unseen::{
    UNSEEN_ROWS_MAX_LOSS, UnseenRowFit, UnseenRowTrial, allowance_from, choose_unseen_draw,
    describe_unseen_row_fit, fit_unseen_rows, unseen_row_domains, unseen_row_draws,
};

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
pub fn fit_modality_weights(
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
pub fn fit_score_weights(
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
/// and split `1 - m` between S^X and S^Y in the ratio of `weights` (equally when `weights` give
/// them nothing, as after an earlier fit chose the merged sequence alone). A share of 1 leaves
/// them a negligible weight (fixed weights are relative to the own sub-sequence's, which must
/// stay positive).
pub fn merged_share(weights: [f64; 3], m: f64) -> [f64; 3] {
    let [x, y, _] = weights;
    let (x, y) = if x + y > 0.0 { (x, y) } else { (1.0, 1.0) };
    let scale = (1.0 - m).max(1e-9) / (x + y);
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
pub fn fit_domain_weights(
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
    /// The pair of per-domain counts tried after the grid (each domain's best count for its
    /// own validation MRR, when the two differ) and the validation MRR of each target domain
    /// with both set at once; `None` when one count was best for both.
    #[serde(default)]
    pub pair: Option<([Option<f64>; 2], [f64; 2])>,
    /// The chosen prior counts (X's rows, Y's rows): the grid's best shared count, or the pair
    /// when, validated as set, it scores a higher sum (each with no domain more than
    /// [`ROW_SHRINKAGE_MAX_LOSS`] below whole rows).
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

/// Most a domain's validation MRR may fall below whole rows' for prior counts to be kept (0.1
/// points): the shrinkage may not buy one domain's gain with the other's loss.
pub const ROW_SHRINKAGE_MAX_LOSS: f64 = 0.001;

/// Whether prior counts whose validation MRRs are `mrrs` may be kept against whole rows'
/// (`whole`): no domain falls by more than [`ROW_SHRINKAGE_MAX_LOSS`].
fn shrinkage_allowed(whole: [f64; 2], mrrs: [f64; 2]) -> bool {
    (0..2).all(|d| mrrs[d] >= whole[d] - ROW_SHRINKAGE_MAX_LOSS)
}

/// Chooses the prior counts of both domains' learned ID rows ([`LlmEmf::row_shrinkage`]) on
/// the validation split, sets them in `model` and reports the grid. First one count for both
/// domains, the best sum of the domains' validation MRRs over the grid among the counts that
/// leave no domain more than [`ROW_SHRINKAGE_MAX_LOSS`] below whole rows (whole rows are the
/// grid's first point and win ties; the counts the model had are replaced, so a fit depends
/// on the trained weights alone and fitting again gives the same). Then, when the grid's best
/// count for X's MRR and for Y's differ, that pair is validated as set (a domain's rows feed
/// the other domain's histories too, so two counts each best on its own pass may combine
/// into something worse) and kept only if it passes the same bound and its sum beats the
/// shared count's. An error naming the switch for a model without ID rows.
pub fn fit_row_shrinkage(
    model: &mut LlmEmf,
    mut validate: impl FnMut(&LlmEmf) -> Result<Evaluation>,
    domain_names: [&str; 2],
) -> Result<RowShrinkageFit> {
    if model.items.is_none() {
        return Err(Error::Config(
            "train.fit_row_shrinkage needs ID rows: the model has none (the id modality is off)"
                .into(),
        ));
    }
    let before = DomainId::BOTH.map(|d| model.row_shrinkage(d));
    let total = |mrrs: [f64; 2]| mrrs[0] + mrrs[1];
    let mut best = f64::NEG_INFINITY;
    let mut chosen = [None; 2];
    let mut grid = Vec::new();
    // Whole rows come first in the grid: the reference no domain may fall far below.
    let mut whole = None;
    for k in ROW_SHRINKAGES {
        for d in DomainId::BOTH {
            model.set_row_shrinkage(d, k)?;
        }
        let got = domain_mrrs(&validate(model)?, domain_names);
        let reference = *whole.get_or_insert(got);
        if shrinkage_allowed(reference, got) && total(got) > best {
            best = total(got);
            chosen = [k; 2];
        }
        grid.push((k, got));
    }
    let whole = whole.expect("the grid starts with whole rows");
    // Each domain's best count for its own MRR (the first of equals, whole rows first).
    let own_best = [0, 1].map(|d| {
        grid.iter()
            .fold((None, f64::NEG_INFINITY), |acc, (k, mrrs)| {
                if mrrs[d] > acc.1 { (*k, mrrs[d]) } else { acc }
            })
            .0
    });
    let mut pair = None;
    if own_best[0] != own_best[1] {
        for d in DomainId::BOTH {
            model.set_row_shrinkage(d, own_best[d.index()])?;
        }
        let got = domain_mrrs(&validate(model)?, domain_names);
        if shrinkage_allowed(whole, got) && total(got) > best {
            chosen = own_best;
        }
        pair = Some((own_best, got));
    }
    for d in DomainId::BOTH {
        model.set_row_shrinkage(d, chosen[d.index()])?;
    }
    Ok(RowShrinkageFit {
        before,
        grid,
        pair,
        chosen,
    })
}

/// Runs one of the score fits made after training when its switch `on` is set, saying what
/// it chose (`describe`) when `verbose`.
pub(super) fn fit_if<R>(
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
        tracing::info!("{}", describe(&fit));
    }
    Ok(Some(fit))
}

/// Which validation fits [`make_fits`] (after training) and [`fit_run`] (on a finished run)
/// make; their order is [`make_fits`]'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunFits {
    /// The score's weights (the feature modalities' share, then the sub-sequence weights,
    /// each where the model has them), as [`crate::train::TrainConfig::fit_domain_weights`].
    pub weights: bool,
    /// The learned rows' prior counts, as [`crate::train::TrainConfig::fit_row_shrinkage`].
    pub row_shrinkage: bool,
    /// Fresh rows for the items never seen in training, as
    /// [`crate::train::TrainConfig::fit_unseen_rows`].
    pub unseen_rows: bool,
}

/// What the fits of [`make_fits`] found, each `None` where it was not made.
#[derive(Debug, Clone, Default)]
pub struct FitRecords {
    /// The unseen-row fit.
    pub unseen_rows: Option<UnseenRowFit>,
    /// The modality-weight fit (models with a feature modality beside the IDs).
    pub modality_weights: Option<ModalityWeightFit>,
    /// The sub-sequence-weight fit.
    pub domain_weights: Option<DomainWeightFit>,
    /// The row-shrinkage fit.
    pub row_shrinkage: Option<RowShrinkageFit>,
}

impl FitRecords {
    /// Whether a fit changed something the saved model holds (weights, rows, prior counts).
    pub fn changed_model(&self) -> bool {
        self.modality_weights.is_some()
            || self.domain_weights.is_some()
            || self.row_shrinkage.is_some()
            || self.unseen_rows.as_ref().is_some_and(|f| f.kept)
    }
}

/// Makes the validation fits `fits` names on a trained `model`, in the order that lets each
/// build on the last, and says what each chose when `verbose`. Plain learned rows: the
/// never-seen items' fresh rows first (the row shrinkage then leaves them as drawn), the
/// score's weights, the row shrinkage. Title rows: the score's weights, the row shrinkage,
/// then the fresh rows, drawn in the domains the shrinkage left whole
/// ([`unseen_row_domains`]; a domain it shrinks places those items by their titles), and not
/// made when it shrinks both; the two row fits then share one allowance, measured from whole
/// rows (no domain more than 0.1 points below them at the end). `draws` and `seed` are the unseen-row fit's
/// ([`unseen_row_draws`], the training seed).
pub fn make_fits(
    model: &mut LlmEmf,
    mut validate: impl FnMut(&LlmEmf) -> Result<Evaluation>,
    domain_names: [&str; 2],
    fits: RunFits,
    draws: &[UnseenRowDraw],
    seed: u64,
    verbose: bool,
) -> Result<FitRecords> {
    let mut records = FitRecords::default();
    let unseen_first = !model.has_title_rows();
    let unseen = |model: &mut LlmEmf,
                  validate: &mut dyn FnMut(&LlmEmf) -> Result<Evaluation>,
                  reference: Option<[f64; 2]>| {
        // Not made where no domain's never-seen rows count (title rows shrunk in both).
        let any = unseen_row_domains(model).contains(&true);
        if fits.unseen_rows && !any && verbose {
            tracing::info!(
                "no fresh rows for the items never seen in training: the row shrinkage places them by their titles in both domains"
            );
        }
        fit_if(
            fits.unseen_rows && any,
            verbose,
            || fit_unseen_rows(model, validate, domain_names, draws, seed, reference),
            describe_unseen_row_fit,
        )
    };
    if unseen_first {
        records.unseen_rows = unseen(model, &mut validate, None)?;
    }
    if fits.weights {
        (records.modality_weights, records.domain_weights) =
            fit_score_weights(model, &mut validate, domain_names)?;
        if verbose {
            if let Some(fit) = &records.modality_weights {
                tracing::info!(
                    "modality weights (id, image, text) fitted on validation: {:?}",
                    fit.chosen
                );
            }
            if let Some(fit) = &records.domain_weights {
                tracing::info!(
                    "sub-sequence weights fitted on validation: target X {:?}, target Y {:?}",
                    fit.chosen[0],
                    fit.chosen[1]
                );
            }
        }
    }
    records.row_shrinkage = fit_if(
        fits.row_shrinkage,
        verbose,
        || fit_row_shrinkage(model, &mut validate, domain_names),
        |fit| {
            format!(
                "prior counts of the learned rows (X, Y) fitted on validation: {:?}",
                fit.chosen
            )
        },
    )?;
    if !unseen_first {
        // One allowance for both row fits: measured from whole rows too.
        let whole = records.row_shrinkage.as_ref().and_then(|f| {
            f.grid
                .iter()
                .find(|(k, _)| k.is_none())
                .map(|(_, mrrs)| *mrrs)
        });
        records.unseen_rows = unseen(model, &mut validate, whole)?;
    }
    Ok(records)
}

/// Makes the validation fits `fits` names on the finished run in `run_dir`, as the train
/// switches would have at the end of training (the fits happen after training, so the result
/// equals what the switches would have given), and rewrites the run's best model, its score
/// settings and `results.json` (validation and test metrics, and the fits made; the training
/// fields and earlier fits are kept). An error, before anything is written, when none is asked
/// for, when the weights alone are asked for and the model has none to fit, and when the row
/// shrinkage is asked for and the model has no title rows. Fitting the unseen rows again on
/// a run whose rows an earlier fit replaced starts from the initial draw (the rows as trained
/// are gone; [`fit_unseen_rows`] judges the draws against the rows it starts from).
pub fn fit_run(run_dir: &Path, device: &Device, fits: RunFits) -> Result<TrainReport> {
    refit_run(run_dir, device, fits, false)
}

/// Scores a finished run's best model again on both splits, under its `config.json` as it
/// stands, and rewrites the metrics of its `results.json` (the weights, the training fields
/// and the fit records are kept): for a setting that acts at inference only, such as
/// `model.skip_untrained_inputs`, set on a run trained without it.
pub fn rescore_run(run_dir: &Path, device: &Device) -> Result<TrainReport> {
    let none = RunFits {
        weights: false,
        row_shrinkage: false,
        unseen_rows: false,
    };
    refit_run(run_dir, device, none, true)
}

fn refit_run(run_dir: &Path, device: &Device, fits: RunFits, rescore: bool) -> Result<TrainReport> {
    let paths = RunPaths::new(run_dir);
    let mut report: TrainReport = crate::io::read_json(&paths.results())?;
    if !(rescore || fits.weights || fits.row_shrinkage || fits.unseen_rows) {
        return Err(Error::Config(format!(
            "{}: no fit asked for",
            run_dir.display()
        )));
    }
    let config = ExperimentConfig::load(&paths.config())?;
    let data = config.load_data()?;
    let dataset = &data.dataset;
    let features = data.features(device)?;
    let mut model = load_best_model(&config.model, &data, &features, &paths.best_model(), device)?;
    let weights =
        fits.weights && (has_modality_weights_to_fit(&model) || has_domain_weights_to_fit(&model));
    if fits.weights && !weights && !fits.row_shrinkage && !fits.unseen_rows {
        return Err(Error::Config(format!(
            "{}: the model reads {} sub-sequence(s) without both the merged one and another, and {} modality(ies) without IDs and a feature modality: no weights to fit",
            run_dir.display(),
            model.sub_sequences().len(),
            model.modalities().len()
        )));
    }
    if (fits.row_shrinkage || fits.unseen_rows) && model.items.is_none() {
        return Err(Error::Config(format!(
            "{}: the model has no ID rows (the id modality is off): no learned rows to shrink",
            run_dir.display()
        )));
    }
    let batcher = config.model.batcher(dataset);
    let ec = &config.eval;
    let evaluator = Evaluator {
        features: &features,
        dataset,
        batcher: &batcher,
        batch_size: ec.batch_size,
        device,
    };
    let valid_candidates =
        Candidates::sample(dataset, Split::Valid, ec.protocol, ec.seed, ec.negatives)?;
    let validate = |m: &LlmEmf| evaluator.evaluate(m, Split::Valid, &valid_candidates);
    let names = DomainId::BOTH.map(|d| dataset.domain(d).name.as_str());
    let draws = unseen_row_draws(config.model.id_row_init, model.has_title_rows());
    if fits.unseen_rows && report.unseen_row_fit.is_some() {
        // An earlier fit replaced the rows as trained: the reference the draws are judged
        // against is the initial draw instead (like those rows, it carries no training
        // signal), so a refit does not depend on which draw was kept before.
        model.redraw_unseen_rows(draws[0], config.train.seed)?;
    }
    let asked = RunFits { weights, ..fits };
    let records = make_fits(
        &mut model,
        validate,
        names,
        asked,
        &draws,
        config.train.seed,
        false,
    )
    .map_err(|e| Error::Config(format!("{}: {e}", run_dir.display())))?;
    if fits.unseen_rows {
        report.unseen_row_fit = records.unseen_rows;
    }
    if weights {
        (report.modality_weight_fit, report.domain_weight_fit) =
            (records.modality_weights, records.domain_weights);
    }
    if fits.row_shrinkage {
        report.row_shrinkage_fit = records.row_shrinkage;
    }
    if !rescore {
        save_model(&model, &paths.best_model())?;
    }
    report.valid = validate(&model)?;
    let test_candidates =
        Candidates::sample(dataset, Split::Test, ec.protocol, ec.seed, ec.negatives)?;
    report.test = evaluator.evaluate(&model, Split::Test, &test_candidates)?;
    crate::io::write_json(&paths.results(), &report)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::{UnseenRowTrial, allowance_from, choose_unseen_draw, merged_share};
    use crate::model::UnseenRowDraw;

    fn trial(popularity: f64, mrr: [f64; 2], unseen_mrr: [Option<f64>; 2]) -> UnseenRowTrial {
        UnseenRowTrial {
            draw: UnseenRowDraw::Trained { popularity },
            mrr,
            unseen_mrr,
        }
    }

    #[test]
    fn the_unseen_draw_kept_is_allowed_above_chance_then_leans_furthest() {
        let before = [0.20, 0.10];
        let unseen = [Some(0.001), Some(0.002)];
        let chance = [Some(0.0075), Some(0.0075)];
        let choose = |domains: &[usize], tried: &[UnseenRowTrial]| {
            choose_unseen_draw(domains, before, unseen, chance, tried)
        };
        let tried = [
            // Best sum, never-seen below chance in Y.
            trial(0.0, [0.2005, 0.1000], [Some(0.009), Some(0.007)]),
            // Above chance in both, the best never-seen MRR of the allowed draws.
            trial(0.5, [0.1995, 0.0995], [Some(0.019), Some(0.011)]),
            // Above chance in both, a lower sum and never-seen MRR, leaning further.
            trial(0.75, [0.1992, 0.0993], [Some(0.012), Some(0.009)]),
            // Above chance and the highest never-seen MRR, but X falls by 0.15 points.
            trial(1.0, [0.1985, 0.1010], [Some(0.025), Some(0.013)]),
        ];
        assert_eq!(choose(&[0, 1], &tried), Some(2));
        // Per domain: X takes the same, Y the draw that X ruled out.
        assert_eq!(choose(&[0], &tried), Some(2));
        assert_eq!(choose(&[1], &tried), Some(3));
        // Without a draw above chance the lean decides too; the initial draw leans least.
        let initial = |scale: f64, mrr: [f64; 2]| UnseenRowTrial {
            draw: UnseenRowDraw::Initial { scale },
            mrr,
            unseen_mrr: [Some(0.005), Some(0.005)],
        };
        let below = [
            initial(1.0, [0.2010, 0.1010]),
            trial(0.0, [0.2000, 0.1000], [Some(0.004), Some(0.004)]),
        ];
        assert_eq!(choose(&[0, 1], &below), Some(1));
        // Equal leans: the higher sum.
        let same_lean = [initial(1.0, [0.2, 0.1]), initial(0.5, [0.2005, 0.1])];
        assert_eq!(choose(&[0, 1], &same_lean), Some(1));
        // A domain without never-seen targets does not count against a draw.
        let none_in_y = [trial(0.0, [0.2, 0.1], [Some(0.009), None])];
        assert_eq!(
            choose_unseen_draw(&[0, 1], before, [Some(0.001), None], chance, &none_in_y),
            Some(0)
        );
        // Never-seen targets falling, or a domain down by more than 0.1 points: nothing kept.
        let worse = [
            trial(0.0, [0.2, 0.1], [Some(0.0005), Some(0.009)]),
            trial(0.5, [0.2, 0.0985], [Some(0.009), Some(0.009)]),
        ];
        assert_eq!(choose(&[0, 1], &worse), None);
        assert_eq!(choose(&[0], &worse), Some(1));
        assert_eq!(choose(&[1], &worse), Some(0));
    }

    #[test]
    fn the_unseen_row_allowance_counts_from_the_higher_of_its_start_and_whole_rows() {
        // The row shrinkage cost X 0.04 points and gained Y 1.0: X's allowance is what is left
        // of 0.1 against whole rows, Y's is measured from where the shrinkage left it.
        let whole = [0.1507, 0.1643];
        let before = [0.1503, 0.1743];
        assert_eq!(allowance_from(before, Some(whole)), [0.1507, 0.1743]);
        assert_eq!(allowance_from(before, None), before);
        let tried = [trial(1.0, [0.1498, 0.1740], [Some(0.02), Some(0.02)])];
        let chance = [Some(0.0075); 2];
        let unseen = [Some(0.001); 2];
        let from = allowance_from(before, Some(whole));
        // X 0.05 points below its start and 0.09 below whole rows: allowed either way.
        assert_eq!(
            choose_unseen_draw(&[0, 1], before, unseen, chance, &tried),
            Some(0)
        );
        assert_eq!(
            choose_unseen_draw(&[0, 1], from, unseen, chance, &tried),
            Some(0)
        );
        // X 0.07 below its start but 0.11 below whole rows: allowed only from its start.
        let costly = [trial(1.0, [0.1496, 0.1740], [Some(0.02), Some(0.02)])];
        assert_eq!(
            choose_unseen_draw(&[0, 1], before, unseen, chance, &costly),
            Some(0)
        );
        assert_eq!(
            choose_unseen_draw(&[0, 1], from, unseen, chance, &costly),
            None
        );
    }

    #[test]
    fn merged_share_keeps_the_ratio_and_splits_equally_without_one() {
        assert_eq!(merged_share([0.2, 0.6, 0.2], 0.5), [0.125, 0.375, 0.5]);
        // After a fit chose the merged sequence alone, the others share the rest equally.
        assert_eq!(merged_share([0.0, 0.0, 1.0], 0.0), [0.5, 0.5, 0.0]);
        assert_eq!(merged_share([0.0, 0.0, 1.0], 0.6), [0.2, 0.2, 0.6]);
    }
}
