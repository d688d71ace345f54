//! Using trained runs: the `Recommender` (errors, exclusions, candidates, batches, thread
//! safety), presets read from files, the multi-seed experiment harness (resumption, summaries)
//! and reports (markdown and SVG charts).

mod common;

use std::path::Path;

use common::{quiet, tiny_config};

use llm_emf::backend;
use llm_emf::data::{DomainId, Split};
use llm_emf::recommend::{Exclude, Recommendation, Recommender, Request, TrainedRun};
use llm_emf::report::{Group, write_report};
use llm_emf::train::archive_experiment;
use llm_emf::train::experiment::run_experiment;
use llm_emf::train::{
    ExperimentConfig, HoldOut, Objective, Preset, RunFits, fit_run, rescore_run, train,
};

/// Burn's weight initialisation draws from a process-wide generator: trainings whose results
/// are compared take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Trains `cfg` silently into `dir` and loads the run back.
fn train_and_load(dir: &Path, cfg: &ExperimentConfig) -> TrainedRun {
    let device = backend::from_env().unwrap();
    let data = cfg.load_data().unwrap();
    train(cfg, &data, dir, &device, &quiet()).unwrap();
    TrainedRun::load(dir, &device).unwrap()
}

fn trained(dir: &Path, preset: Preset) -> Recommender {
    train_and_load(dir, &tiny_config(preset, 1)).into_recommender()
}

/// One request for a fixed history of domain Y (scored on the host) and 20 of them (scored
/// with the backend's matrix product) give the same answer.
fn assert_host_and_device_serve_alike(rec: &Recommender) {
    let history = [0, 45, 3, 60];
    let single = rec
        .recommend(&history, DomainId::Y, 8, Exclude::History)
        .unwrap();
    assert_many_answer_as_one(rec, &history, DomainId::Y, &single);
}

/// A batch of 20 requests for `history` (scored with the backend's matrix product) answers each
/// as `single`, the answer to one request (scored on the host): same items, same scores.
fn assert_many_answer_as_one(
    rec: &Recommender,
    history: &[u32],
    domain: DomainId,
    single: &[Recommendation],
) {
    let many: Vec<Request> = (0..20)
        .map(|_| Request::new(history.to_vec(), domain, single.len()))
        .collect();
    for answer in rec.recommend_batch(&many).unwrap() {
        assert_eq!(
            answer.iter().map(|r| r.item).collect::<Vec<_>>(),
            single.iter().map(|r| r.item).collect::<Vec<_>>()
        );
        for (a, b) in answer.iter().zip(single) {
            assert!((a.score - b.score).abs() < 1e-4 * b.score.abs().max(1e-9));
        }
    }
}

#[test]
fn recommender_is_shareable_and_answers_single_and_batched_requests() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Recommender>();

    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let rec = trained(dir.path(), Preset::Recommended);
    // Y is 40..90.
    let history = [0, 45, 3, 60];
    let top = rec
        .recommend(&history, DomainId::Y, 5, Exclude::History)
        .unwrap();
    assert_eq!(top.len(), 5);
    assert!(top.iter().all(|r| (40..90).contains(&r.item)));
    assert!(top.iter().all(|r| r.item != 45 && r.item != 60));
    assert!(top.windows(2).all(|w| w[0].score >= w[1].score));
    // Not excluding the history may bring its items back; the full list has every item once.
    let all = rec
        .recommend(&history, DomainId::Y, 1000, Exclude::Nothing)
        .unwrap();
    assert_eq!(
        all.len(),
        50,
        "k above the domain size returns the whole domain"
    );
    let excluded = rec
        .recommend(&history, DomainId::Y, 1000, Exclude::History)
        .unwrap();
    assert_eq!(excluded.len(), 48);
    // A batch answers each request as it would alone.
    let requests = vec![
        Request::new(history.to_vec(), DomainId::Y, 5),
        Request::new(vec![], DomainId::X, 3),
        Request {
            candidates: Some(vec![41, 42, 42, 45]),
            ..Request::new(history.to_vec(), DomainId::Y, 10)
        },
    ];
    let batch = rec.recommend_batch(&requests).unwrap();
    let single = rec
        .recommend(&history, DomainId::Y, 5, Exclude::History)
        .unwrap();
    assert_eq!(
        batch[0].iter().map(|r| r.item).collect::<Vec<_>>(),
        single.iter().map(|r| r.item).collect::<Vec<_>>()
    );
    for (b, s) in batch[0].iter().zip(&single) {
        assert!((b.score - s.score).abs() < 1e-5 * s.score.abs().max(1e-12));
    }
    assert_eq!(batch[1].len(), 3, "an empty history is answered");
    // Few requests are scored on the host, many with the backend's matrix product: the same.
    assert_many_answer_as_one(&rec, &history, DomainId::Y, &single);
    let mut cands: Vec<u32> = batch[2].iter().map(|r| r.item).collect();
    cands.sort_unstable();
    assert_eq!(
        cands,
        vec![41, 42],
        "candidates deduplicated, history excluded"
    );
    // A history longer than max_len (10) reads its last items.
    let long: Vec<u32> = (0..30).collect();
    assert_eq!(
        rec.recommend(&long, DomainId::Y, 2, Exclude::History)
            .unwrap()
            .len(),
        2
    );
    // Shared across threads.
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                rec.recommend(&history, DomainId::X, 2, Exclude::History)
                    .unwrap()
            });
        }
    });
}

#[test]
fn text_enriched_id_rows_are_trained_saved_and_served_alike_on_host_and_device() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(Preset::Recommended, 2);
    cfg.model.id_text = true;
    let run = train_and_load(dir.path(), &cfg);
    let map = run
        .model
        .items
        .as_ref()
        .and_then(|t| t.text_map.as_ref())
        .expect("the saved model has its text map");
    // [text width, q] of the tiny world (8-wide features, q = 16).
    assert_eq!(map.weight.dims(), [8, 16]);
    let weights: Vec<f32> = map.weight.val().into_data().try_to_vec::<f32>().unwrap();
    assert!(weights.iter().all(|w| w.is_finite()));
    assert_host_and_device_serve_alike(&run.into_recommender());

    // The learned rows' prior count fitted on the finished run (`llm-emf fit-weights --rows
    // --skip-weights`): one count for both domains, the best of the grid on the sum of the
    // validation MRRs (whole rows compete), kept beside the model file, applied when the run
    // is loaded, and served alike.
    let device = backend::from_env().unwrap();
    let only_rows = RunFits {
        weights: false,
        row_shrinkage: true,
        unseen_rows: false,
    };
    let refit = fit_run(dir.path(), &device, only_rows).unwrap();
    let fit = refit
        .row_shrinkage_fit
        .clone()
        .expect("a row-shrinkage fit");
    assert_eq!(fit.before, [None, None]);
    assert_eq!(fit.grid.len(), 9);
    let sum = |g: &(Option<f64>, [f64; 2])| g.1[0] + g.1[1];
    // Allowed: no domain more than 0.1 points below whole rows (the grid's first point).
    let whole = fit.grid[0];
    assert_eq!(whole.0, None);
    let allowed = |mrrs: &[f64; 2]| (0..2).all(|d| mrrs[d] >= whole.1[d] - 0.001);
    let best_shared = fit
        .grid
        .iter()
        .filter(|g| allowed(&g.1))
        .map(sum)
        .fold(f64::NEG_INFINITY, f64::max);
    // The choice is the grid's best allowed shared count, or the per-domain pair when,
    // validated as set, it is allowed and scores more.
    match &fit.pair {
        Some((pair, mrrs)) if fit.chosen == *pair => {
            assert!(allowed(mrrs) && mrrs[0] + mrrs[1] > best_shared, "{fit:?}");
        }
        _ => {
            assert_eq!(fit.chosen[0], fit.chosen[1]);
            let at = fit
                .grid
                .iter()
                .find(|g| g.0 == fit.chosen[0])
                .expect("the chosen count is a grid point (whole rows are one)");
            assert!(allowed(&at.1), "{fit:?}");
            assert_eq!(sum(at), best_shared, "{fit:?}");
        }
    }
    if let Some((pair, _)) = &fit.pair {
        assert_ne!(
            pair[0], pair[1],
            "a pair is tried only when the domains disagree"
        );
    }
    let run = TrainedRun::load(dir.path(), &device).unwrap();
    assert_eq!(
        DomainId::BOTH.map(|d| run.model.row_shrinkage(d)),
        fit.chosen
    );
    let test = run.evaluate(Split::Test, cfg.eval.protocol, None).unwrap();
    assert_eq!(test.domains, refit.test.domains);
    let mut shrunk = run;
    shrunk
        .model
        .set_row_shrinkage(DomainId::X, Some(0.0))
        .unwrap();
    shrunk
        .model
        .set_row_shrinkage(DomainId::Y, Some(2.0))
        .unwrap();
    assert_host_and_device_serve_alike(&shrunk.into_recommender());
    // Nothing asked for is an error naming the run, before anything is written.
    let none = RunFits {
        row_shrinkage: false,
        ..only_rows
    };
    let err = fit_run(dir.path(), &device, none).unwrap_err().to_string();
    assert!(err.contains("no fit asked for"), "{err}");

    // Scored again under its config as it stands: the metrics follow the config, the weights
    // and the fit records stay.
    let results = dir.path().join("results.json");
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap()
    };
    let before = read();
    let weights = std::fs::read(dir.path().join("model.bpk")).unwrap();
    let same = rescore_run(dir.path(), &device).unwrap();
    assert_eq!(read()["test"]["domains"], before["test"]["domains"]);
    assert_eq!(
        same.row_shrinkage_fit.is_some(),
        !before["row_shrinkage_fit"].is_null()
    );
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["eval"]["protocol"] = "full".into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let full = rescore_run(dir.path(), &device).unwrap();
    assert_eq!(full.test.protocol, llm_emf::data::Protocol::Full);
    let after = read();
    assert_eq!(after["test"]["protocol"], "full");
    assert_ne!(after["test"]["domains"], before["test"]["domains"]);
    assert_eq!(after["row_shrinkage_fit"], before["row_shrinkage_fit"]);
    assert_eq!(after["epochs"], before["epochs"]);
    assert_eq!(
        std::fs::read(dir.path().join("model.bpk")).unwrap(),
        weights
    );
}

#[test]
fn title_rows_get_fresh_unseen_rows_only_where_the_shrinkage_leaves_rows_whole() {
    use llm_emf::data::Candidates;
    use llm_emf::eval::Evaluator;
    use llm_emf::model::LlmEmf;
    use llm_emf::train::fit::{make_fits, unseen_row_domains, unseen_row_draws};

    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(Preset::Recommended, 2);
    cfg.model.id_text = true;
    let run = train_and_load(dir.path(), &cfg);
    let device = backend::from_env().unwrap();
    let dataset = &run.data.dataset;
    let features = run.data.features(&device).unwrap();
    let batcher = run.config.model.batcher(dataset);
    let ec = &run.config.eval;
    let candidates =
        Candidates::sample(dataset, Split::Valid, ec.protocol, ec.seed, ec.negatives).unwrap();
    let evaluator = Evaluator {
        features: &features,
        dataset,
        batcher: &batcher,
        batch_size: ec.batch_size,
        device: &device,
    };
    let validate = |m: &LlmEmf| evaluator.evaluate(m, Split::Valid, &candidates);
    let names = DomainId::BOTH.map(|d| dataset.domain(d).name.as_str());
    let counts = dataset.train_counts();
    let never_seen = DomainId::BOTH.map(|d| {
        dataset
            .domain(d)
            .items()
            .filter(|&i| counts[i as usize] == 0)
            .count()
    });
    let rows = |m: &LlmEmf| -> Vec<f32> {
        let table = m.items.as_ref().unwrap();
        table.rows.weight.val().into_data().try_to_vec().unwrap()
    };
    let q = cfg.model.id_dim;
    let draws = unseen_row_draws(cfg.model.id_row_init, true);
    // X shrinks (its never-seen items are placed by their titles), Y's rows are whole: only
    // Y's never-seen items get fresh learned parts.
    let mut model = run.model.clone();
    model.set_row_shrinkage(DomainId::X, Some(2.0)).unwrap();
    assert_eq!(unseen_row_domains(&model), [false, true]);
    let before = rows(&model);
    let only_unseen = RunFits {
        weights: false,
        row_shrinkage: false,
        unseen_rows: true,
    };
    let records = make_fits(&mut model, validate, names, only_unseen, &draws, 1, false).unwrap();
    let fit = records.unseen_rows.expect("the unseen-row fit");
    assert_eq!(fit.tried.len(), 11, "title rows add five mean draws");
    assert_eq!(fit.redrawn, never_seen[1], "{fit:?}");
    assert_eq!(fit.chosen[0], None, "{fit:?}");
    assert_eq!(model.row_shrinkage(DomainId::X), Some(2.0));
    let after = rows(&model);
    for (i, &count) in counts.iter().enumerate() {
        let at = i * q..(i + 1) * q;
        let y_unseen = count == 0 && dataset.domain(DomainId::Y).contains(i as u32);
        if y_unseen && fit.kept {
            assert_ne!(
                before[at.clone()],
                after[at],
                "item {i}: a fresh learned part"
            );
        } else {
            assert_eq!(before[at.clone()], after[at], "item {i}: its row stays");
        }
    }
    // With the shrinkage fitted too, the unseen-row fit comes after it and draws in exactly
    // the domains it left whole.
    let mut model = run.model.clone();
    let both = RunFits {
        row_shrinkage: true,
        ..only_unseen
    };
    let records = make_fits(&mut model, validate, names, both, &draws, 1, false).unwrap();
    let shrinkage = records.row_shrinkage.expect("the row-shrinkage fit");
    let whole = shrinkage.chosen.map(|k| k.is_none());
    assert_eq!(unseen_row_domains(&model), whole);
    // The two row fits share one allowance: no domain ends more than 0.1 points below whole
    // rows.
    let whole_mrr = shrinkage.grid[0].1;
    assert_eq!(shrinkage.grid[0].0, None, "whole rows first");
    let end = validate(&model).unwrap();
    for (d, name) in names.iter().enumerate() {
        let mrr = end.domains[*name].mrr;
        assert!(
            mrr >= whole_mrr[d] - llm_emf::train::fit::ROW_SHRINKAGE_MAX_LOSS - 1e-12,
            "{name}: {mrr} against whole rows' {}",
            whole_mrr[d]
        );
    }
    let Some(fit) = records.unseen_rows else {
        assert_eq!(
            whole,
            [false, false],
            "not made only when both domains shrink"
        );
        return;
    };
    let expected: usize = (0..2).filter(|&d| whole[d]).map(|d| never_seen[d]).sum();
    assert_eq!(fit.redrawn, expected, "{shrinkage:?} {fit:?}");
    assert_eq!(fit.reference_mrr, Some(whole_mrr), "{fit:?}");
    for (whole, chosen) in whole.iter().zip(fit.chosen) {
        assert!(*whole || chosen.is_none(), "{fit:?}");
    }
    assert_eq!(
        DomainId::BOTH.map(|d| model.row_shrinkage(d)),
        shrinkage.chosen
    );
}

#[test]
fn recommender_errors_name_the_problem() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let rec = trained(dir.path(), Preset::Paper);
    let err = |r: Request| rec.recommend_batch(&[r]).unwrap_err().to_string();
    let e = err(Request::new(vec![1, 9999], DomainId::X, 3));
    assert!(e.contains("request 0") && e.contains("9999"), "{e}");
    let e = err(Request::new(vec![1], DomainId::X, 0));
    assert!(e.contains("k must be at least 1"), "{e}");
    let e = err(Request {
        candidates: Some(vec![41]),
        ..Request::new(vec![1], DomainId::X, 3)
    });
    assert!(e.contains("candidate 41") && e.contains("domain X"), "{e}");
    // Nothing is scored when one request of a batch is bad.
    let e = rec
        .recommend_batch(&[
            Request::new(vec![1], DomainId::X, 3),
            Request::new(vec![1], DomainId::X, 0),
        ])
        .unwrap_err()
        .to_string();
    assert!(e.contains("request 1"), "{e}");
    let e = Recommender::load(&dir.path().join("missing"), &backend::cpu().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing"), "{e}");
}

#[test]
fn config_files_are_read_on_top_of_their_preset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.json");
    std::fs::write(&path, r#"{"model": {"id_dim": 24}}"#).unwrap();
    let rec = ExperimentConfig::load(&path).unwrap();
    assert_eq!(rec.preset, Preset::Recommended);
    assert_eq!(rec.model.id_dim, 24);
    assert!(rec.model.cross_domain_targets && rec.model.learned_domain_weights);
    let paper = ExperimentConfig::load_with(&path, Some(Preset::Paper)).unwrap();
    assert_eq!(paper.preset, Preset::Paper);
    assert!(!paper.model.cross_domain_targets && !paper.model.learned_domain_weights);
    assert_eq!(paper.model.id_dim, 24);
    // A tagged value of another kind replaces the preset's whole (no stray fields).
    std::fs::write(
        &path,
        r#"{"preset": "paper", "train": {"objective": {"kind": "sampled", "negatives": 7, "sampler": {"kind": "uniform"}}}}"#,
    )
    .unwrap();
    let c = ExperimentConfig::load(&path).unwrap();
    assert!(matches!(
        c.train.objective,
        Objective::Sampled { negatives: 7, .. }
    ));
    std::fs::write(&path, r#"{"train": {"objective": {"kind": "full"}}}"#).unwrap();
    assert_eq!(
        ExperimentConfig::load(&path).unwrap().train.objective,
        Objective::Full
    );
    // Errors name the file and the key.
    std::fs::write(&path, r#"{"preset": "best"}"#).unwrap();
    let e = ExperimentConfig::load(&path).unwrap_err().to_string();
    assert!(e.contains("c.json") && e.contains("best"), "{e}");
    std::fs::write(
        &path,
        r#"{"model": {"objective": "mixture", "cross_domain_targets": false}}"#,
    )
    .unwrap();
    let e = ExperimentConfig::load(&path)
        .unwrap()
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("cross_domain_targets"), "{e}");
    // A saved config.json reads back equal.
    let saved = dir.path().join("saved.json");
    paper.save(&saved).unwrap();
    assert_eq!(ExperimentConfig::load(&saved).unwrap(), paper);
}

/// Seeds can be added to an experiment folder (the finished ones are not trained again); a
/// list that leaves one out is refused, as it would drop that seed from the summary.
#[test]
fn experiments_take_added_seeds_and_refuse_dropped_ones() {
    let _turn = serial();
    let device = backend::from_env().unwrap();
    let cfg = tiny_config(Preset::Recommended, 1);
    let data = cfg.load_data().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    run_experiment(&cfg, &data, &[1], &out, &device, &quiet()).unwrap();
    let seed1_log = std::fs::read_to_string(out.join("seed-1/log.jsonl")).unwrap();
    let more = run_experiment(&cfg, &data, &[1, 2], &out, &device, &quiet()).unwrap();
    assert_eq!(more.seeds, vec![1, 2]);
    assert_eq!(more.per_seed["test"]["X"]["MRR"].len(), 2);
    assert_eq!(
        std::fs::read_to_string(out.join("seed-1/log.jsonl")).unwrap(),
        seed1_log,
        "seed 1 is not trained again"
    );
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("experiment.json")).unwrap())
            .unwrap();
    assert_eq!(spec["seeds"], serde_json::json!([1, 2]));
    let e = run_experiment(&cfg, &data, &[2], &out, &device, &quiet())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("leave out seed 1") && e.contains("[1, 2]"),
        "{e}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["seeds"],
        serde_json::json!([1, 2]),
        "nothing was rewritten"
    );
}

#[test]
fn experiments_resume_skip_finished_seeds_and_summarise() {
    let _turn = serial();
    let device = backend::from_env().unwrap();
    let cfg = tiny_config(Preset::Recommended, 2);
    let data = cfg.load_data().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp");
    let first = run_experiment(&cfg, &data, &[1, 2], &out, &device, &quiet()).unwrap();
    assert_eq!(first.seeds, vec![1, 2]);
    let mrr = &first.splits["test"]["X"]["MRR"];
    let values = &first.per_seed["test"]["X"]["MRR"];
    assert_eq!(values.len(), 2);
    assert!((mrr.mean - (values[0] + values[1]) / 2.0).abs() < 1e-12);
    for f in [
        "summary.json",
        "summary.md",
        "experiment.json",
        "seed-1/results.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let md = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(md.contains("| test | X |") && md.contains("±"), "{md}");

    // Interrupted: seed 2 lost its results (killed after its last checkpoint). Re-running
    // leaves seed 1 alone and finishes seed 2 to the same numbers.
    let seed1_log = std::fs::read_to_string(out.join("seed-1/log.jsonl")).unwrap();
    std::fs::remove_file(out.join("seed-2/results.json")).unwrap();
    std::fs::remove_file(out.join("summary.json")).unwrap();
    let again = run_experiment(&cfg, &data, &[1, 2], &out, &device, &quiet()).unwrap();
    // Equal up to the last bit JSON keeps (seed 1's values come back from results.json).
    for (split, domains) in &first.per_seed {
        for (domain, metrics) in domains {
            for (metric, values) in metrics {
                let other = &again.per_seed[split][domain][metric];
                for (a, b) in values.iter().zip(other) {
                    assert!(
                        (a - b).abs() < 1e-12,
                        "{split} {domain} {metric}: {a} vs {b}"
                    );
                }
            }
        }
    }
    assert_eq!(
        std::fs::read_to_string(out.join("seed-1/log.jsonl")).unwrap(),
        seed1_log
    );

    // Another configuration in the same folder is refused with a way out.
    let mut other = cfg.clone();
    other.train.epochs = 3;
    let e = run_experiment(&other, &data, &[1, 2], &out, &device, &quiet())
        .unwrap_err()
        .to_string();
    assert!(e.contains("another configuration"), "{e}");
    // The evaluation batch size changes no metric: a build with another default resumes.
    let mut rebatched = cfg.clone();
    rebatched.eval.batch_size += 7;
    let again = run_experiment(&rebatched, &data, &[1, 2], &out, &device, &quiet()).unwrap();
    assert_eq!(again.seeds, vec![1, 2]);
    let e = run_experiment(&cfg, &data, &[], &out, &device, &quiet())
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least one seed"), "{e}");

    // A report of the experiment (two seeds) and a single run.
    let single = dir.path().join("single");
    let mut one = tiny_config(Preset::Paper, 2);
    one.train.seed = 5;
    train(&one, &data, &single, &device, &quiet()).unwrap();
    let groups = vec![
        Group::load(&format!("recommended={}", out.display())).unwrap(),
        Group::load(single.to_str().unwrap()).unwrap(),
    ];
    assert_eq!(groups[0].runs.len(), 2);
    assert_eq!(groups[1].label, "single");
    let report = dir.path().join("report");
    let written = write_report(&groups, None, &report).unwrap();
    assert_eq!(written.len(), 4);
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("| recommended | X | 2 |") && md.contains("| single | Y | 1 |"),
        "{md}"
    );
    // Where the runs gain or lose, by how often their targets were seen in training.
    // The validation table leads (choices are made on it), the test table follows.
    let valid_at = md.find("Validation split").expect("a validation table");
    let test_at = md.find("Test split").expect("a test table");
    assert!(valid_at < test_at, "{md}");
    let (_, by_count) = md
        .split_once("Test MRR in % (examples)")
        .and_then(|(_, rest)| {
            rest.split_once("| model | domain | 0 | 1-4 | 5-19 | 20+ | a random order |")
        })
        .expect("a table of test MRR by training interactions");
    let rows: Vec<&str> = by_count
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with("| "))
        .collect();
    assert_eq!(rows.len(), 4, "two groups x two domains: {md}");
    assert!(
        rows.iter()
            .all(|r| r.matches(" (").count() == 4 && !r.ends_with(" - |")),
        "{md}"
    );
    for chart in ["loss.svg", "valid_mrr.svg", "test_metrics.svg"] {
        let svg = std::fs::read_to_string(report.join(chart)).unwrap();
        assert!(
            svg.starts_with("<svg") && svg.contains("recommended"),
            "{chart}"
        );
    }
    let bars = std::fs::read_to_string(report.join("test_metrics.svg")).unwrap();
    assert!(bars.contains("X MRR") && bars.contains("Y HR@10"));
    // Folders that are not runs are named in the error.
    let e = Group::load(dir.path().join("nope").to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = Group::load(empty.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no finished run"), "{e}");

    // Paired with the experiment seed by seed: the runs carry their training seeds, and a
    // group with no seed in common gets an empty row instead of a made-up difference.
    let seeds: Vec<_> = groups[0].runs.iter().map(|r| r.seed).collect();
    assert_eq!(seeds, vec![Some(1), Some(2)]);
    assert_eq!(groups[1].runs[0].seed, Some(5));
    let same = Group::load(&format!("again={}", out.display())).unwrap();
    let paired = vec![groups[0].clone(), groups[1].clone(), same];
    write_report(&paired, Some(0), &report).unwrap();
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    assert!(
        md.contains("Paired differences against recommended")
            && md.contains("| single | X | 0 | - |")
            && md.contains("| again | Y | 2 | +0.00 ± 0.00 (0/2) |"),
        "{md}"
    );
    // The differences of means count every run, paired or not: the single run's against the
    // experiment's two, without a spread for a group of one; the same runs again differ by
    // nothing, with the standard error of two unpaired means (the seeds' spread).
    assert!(
        md.contains("Differences of means against recommended")
            && md.contains("| single | X | 1 (2) | ")
            && md.contains("| again | Y | 2 (2) | +0.00 ± "),
        "{md}"
    );
    // A run whose config.json cannot be read is named.
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    for f in ["results.json", "log.jsonl"] {
        std::fs::copy(single.join(f), broken.join(f)).unwrap();
    }
    std::fs::write(broken.join("config.json"), "{").unwrap();
    let e = Group::load(broken.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.json"), "{e}");

    // The archive of the experiment: everything but the weights, read back by the report with
    // the same numbers, and finished again by the experiment command without training.
    let kept = dir.path().join("kept");
    let archive = kept.join("exp");
    let a = archive_experiment(&out, &archive, false).unwrap();
    assert_eq!(a.copied, vec![1, 2]);
    assert!(a.linked.is_empty() && !a.replaced);
    for f in [
        "experiment.json",
        "summary.json",
        "summary.md",
        "seed-1/config.json",
        "seed-1/results.json",
        "seed-2/log.jsonl",
    ] {
        assert!(archive.join(f).is_file(), "{f}");
    }
    for seed in ["seed-1", "seed-2"] {
        let score = Path::new(seed).join("model.score.json");
        assert_eq!(out.join(&score).is_file(), archive.join(&score).is_file());
        assert!(!archive.join(seed).join("model.bpk").exists());
        assert!(!archive.join(seed).join("checkpoint").exists());
    }
    let from_archive = Group::load(&format!("kept={}", archive.display())).unwrap();
    let mrr = |g: &Group| -> Vec<f64> {
        g.runs
            .iter()
            .map(|r| r.results.test.domains["X"].mrr)
            .collect()
    };
    assert_eq!(mrr(&from_archive), mrr(&groups[0]));
    let rewritten = run_experiment(&cfg, &data, &[1, 2], &archive, &device, &quiet()).unwrap();
    assert_eq!(rewritten.per_seed, again.per_seed);
    assert!(
        !archive.join("seed-1/model.bpk").exists(),
        "nothing was trained"
    );

    // An existing archive is replaced only when asked.
    let e = archive_experiment(&out, &archive, false)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("exists already") && e.contains("--replace"),
        "{e}"
    );
    assert!(archive_experiment(&out, &archive, true).unwrap().replaced);
    // Replacing never deletes the source or a folder that is not an archive.
    for (to, says) in [
        (out.clone(), "holds the experiment"),
        (dir.path().to_path_buf(), "holds the experiment"),
        (single.clone(), "not an experiment archive"),
    ] {
        let e = archive_experiment(&out, &to, true).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
    let e = archive_experiment(&out, &out.join("inside"), false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inside the experiment"), "{e}");
    assert!(out.join("seed-1/model.bpk").is_file() && single.join("model.bpk").is_file());
    assert!(archive.join("seed-2/results.json").is_file());

    // What is not a finished experiment is refused by name, and nothing is written.
    let copy = |from: &Path, to: &Path, names: &[&str]| {
        for f in names {
            std::fs::copy(from.join(f), to.join(f)).unwrap();
        }
    };
    let refusal = |src: &Path| {
        archive_experiment(src, &kept.join("refused"), false)
            .unwrap_err()
            .to_string()
    };
    let e = refusal(&single);
    assert!(
        e.contains("single") && e.contains("no experiment.json"),
        "{e}"
    );
    let unfinished = dir.path().join("unfinished");
    std::fs::create_dir_all(unfinished.join("seed-1")).unwrap();
    std::fs::create_dir_all(unfinished.join("seed-2")).unwrap();
    copy(&out, &unfinished, &["experiment.json"]);
    let e = refusal(&unfinished);
    assert!(
        e.contains("not finished") && e.contains("summary.json"),
        "{e}"
    );
    copy(&out, &unfinished, &["summary.json", "summary.md"]);
    copy(
        &out.join("seed-1"),
        &unfinished.join("seed-1"),
        &["config.json", "results.json"],
    );
    copy(
        &out.join("seed-2"),
        &unfinished.join("seed-2"),
        &["config.json"],
    );
    let e = refusal(&unfinished);
    assert!(e.contains("seed-2") && e.contains("results.json"), "{e}");
    std::fs::write(unfinished.join("seed-2/results.json"), "{\"valid\": 1}").unwrap();
    let e = refusal(&unfinished);
    assert!(e.contains("seed-2") && e.contains("results.json"), "{e}");
    let left: Vec<_> = std::fs::read_dir(&kept)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(left, vec!["exp".to_string()], "no partial archive is left");

    // Seeds gathered by links: a link to a run archived beside the destination stays a link,
    // any other seed folder is copied.
    #[cfg(unix)]
    {
        let gather = dir.path().join("gather");
        std::fs::create_dir(&gather).unwrap();
        copy(
            &out,
            &gather,
            &["experiment.json", "summary.json", "summary.md"],
        );
        std::os::unix::fs::symlink("../exp/seed-1", gather.join("seed-1")).unwrap();
        std::os::unix::fs::symlink(out.join("seed-2"), gather.join("seed-2")).unwrap();
        let a = archive_experiment(&gather, &kept.join("gather"), false).unwrap();
        assert_eq!((a.copied, a.linked), (vec![2], vec![1]));
        let linked = kept.join("gather/seed-1");
        assert!(std::fs::symlink_metadata(&linked).unwrap().is_symlink());
        assert!(linked.join("results.json").is_file());
        let g = Group::load(&format!("gathered={}", kept.join("gather").display())).unwrap();
        assert_eq!(mrr(&g), mrr(&groups[0]));
    }
}

#[test]
fn sub_sequence_weights_fitted_on_validation_are_recorded_saved_and_never_worse() {
    let _turn = serial();
    let device = backend::from_env().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_config(Preset::Recommended, 2);
    assert!(
        cfg.train.fit_domain_weights,
        "the recommended preset fits its weights"
    );
    let data = cfg.load_data().unwrap();
    let report = train(&cfg, &data, dir.path(), &device, &quiet()).unwrap();
    let fit = report
        .domain_weight_fit
        .clone()
        .expect("a fit in results.json");
    assert_eq!(fit.grid.len(), 12);
    for d in DomainId::BOTH {
        let name = &data.dataset.domain(d).name;
        let fitted = report.valid.domains[name].mrr;
        // The chosen weights are the best of the grid (and of the trained ones) on validation.
        for (share, mrr) in &fit.grid {
            assert!(
                fitted >= mrr[d.index()] - 1e-9,
                "{name}: fitted {fitted} below share {share}'s {}",
                mrr[d.index()]
            );
        }
        assert!((fit.chosen[d.index()].iter().sum::<f64>() - 1.0).abs() < 1e-6);
    }
    // The saved model scores with the chosen weights.
    let run = TrainedRun::load(dir.path(), &device).unwrap();
    for d in DomainId::BOTH {
        for (got, want) in run
            .model
            .domain_weights(d)
            .iter()
            .zip(fit.chosen[d.index()])
        {
            assert!((got - want).abs() < 1e-5, "{d:?}: {got} vs {want}");
        }
    }
    // The modality weights were fitted first (the synthetic data has image and text
    // features): the chosen weights are the best of their grid on the mean validation MRR, and
    // the saved model fuses with them.
    let mfit = report
        .modality_weight_fit
        .clone()
        .expect("a modality fit in results.json");
    assert_eq!(mfit.grid.len(), 11);
    assert!((mfit.chosen.iter().sum::<f64>() - 1.0).abs() < 1e-6);
    let best_grid = mfit
        .grid
        .iter()
        .map(|g| g.1)
        .fold(f64::NEG_INFINITY, f64::max);
    let chosen_share = mfit.chosen[1] + mfit.chosen[2];
    let chosen_mrr = mfit
        .grid
        .iter()
        .find(|g| (g.0 - chosen_share).abs() < 1e-6)
        .map(|g| g.1);
    // Either a grid point won, or the trained weights beat every grid point.
    assert!(
        chosen_mrr.is_none_or(|m| m >= best_grid - 1e-12) || mfit.chosen == mfit.trained,
        "{mfit:?}"
    );
    for (got, want) in run.model.modality_weights().iter().zip(mfit.chosen) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
    // The same fit applied to the finished run (`llm-emf fit-weights`) keeps the training
    // fields and reports a fit again.
    let weights = RunFits {
        weights: true,
        row_shrinkage: false,
        unseen_rows: false,
    };
    let refit = fit_run(dir.path(), &device, weights).unwrap();
    assert_eq!(refit.best_epoch, report.best_epoch);
    assert!(refit.domain_weight_fit.is_some() && refit.modality_weight_fit.is_some());

    // Fixed lambdas are shared by both target domains: one share is chosen for both.
    let fixed_dir = tempfile::tempdir().unwrap();
    let mut fixed = tiny_config(Preset::Recommended, 1);
    fixed.model.learned_domain_weights = false;
    let report = train(&fixed, &data, fixed_dir.path(), &device, &quiet()).unwrap();
    let fit = report
        .domain_weight_fit
        .expect("fixed weights are fitted too");
    assert_eq!(fit.chosen[0][2], fit.chosen[1][2], "{:?}", fit.chosen);
    // Fixed weights are constants, not parameters of the model file: the fitted ones are kept
    // beside it (model.score.json) and applied when it is loaded, so the loaded run scores as
    // the trained one did.
    let run = TrainedRun::load(fixed_dir.path(), &device).unwrap();
    let shares = |w: [f64; 3]| w.map(|x| x / w.iter().sum::<f64>());
    for d in DomainId::BOTH {
        let got = shares(run.model.domain_weights(d));
        let want = shares(fit.chosen[d.index()]);
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{d:?}: {got:?} vs {want:?}");
        }
    }
    let test = run
        .evaluate(Split::Test, fixed.eval.protocol, None)
        .unwrap();
    assert_eq!(test.domains, report.test.domains);

    // A single-sequence model has no weights to fit: a clear error naming the run.
    let base_dir = tempfile::tempdir().unwrap();
    let mut base = tiny_config(Preset::Recommended, 1);
    base.model.single_domain_sequences = false;
    base.model.modalities.image = false;
    base.model.modalities.text = false;
    let report = train(&base, &data, base_dir.path(), &device, &quiet()).unwrap();
    assert!(report.domain_weight_fit.is_none() && report.modality_weight_fit.is_none());
    let err = fit_run(base_dir.path(), &device, weights)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no weights to fit"), "{err}");
    assert!(
        err.contains(&base_dir.path().display().to_string()),
        "{err}"
    );
    // Untitled rows shrink towards their domain's mean trained row: the fit runs on an IDs-only
    // run, whole rows compete, and the choice is never worse on validation.
    let rows = RunFits {
        weights: false,
        row_shrinkage: true,
        unseen_rows: false,
    };
    let fitted = fit_run(base_dir.path(), &device, rows).unwrap();
    let fit = fitted.row_shrinkage_fit.expect("a row-shrinkage fit");
    assert_eq!(fit.grid.len(), 9);
    let sum = |g: &(Option<f64>, [f64; 2])| g.1[0] + g.1[1];
    let whole = fit.grid.iter().find(|g| g.0.is_none()).unwrap();
    let chosen = fit.grid.iter().find(|g| g.0 == fit.chosen[0]).unwrap();
    assert!(sum(chosen) >= sum(whole), "{fit:?}");
    // A model without ID rows has nothing to shrink: refused, naming the run.
    let features_only = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(Preset::Recommended, 1);
    cfg.model.modalities.id = false;
    train(&cfg, &data, features_only.path(), &device, &quiet()).unwrap();
    let err = fit_run(features_only.path(), &device, rows)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no ID rows"), "{err}");
    assert!(
        err.contains(&features_only.path().display().to_string()),
        "{err}"
    );
    // Fresh rows for the items never seen in training (`fit-weights --unseen-rows`): one per
    // such item, kept only when validation allows, and the same rows when fitted again.
    let unseen = RunFits {
        weights: false,
        row_shrinkage: false,
        unseen_rows: true,
    };
    let first = fit_run(base_dir.path(), &device, unseen)
        .unwrap()
        .unseen_row_fit
        .expect("an unseen-row fit");
    let never_seen = data
        .dataset
        .train_counts()
        .iter()
        .filter(|&&c| c == 0)
        .count();
    assert_eq!(first.redrawn, never_seen);
    // Every default draw was tried, and what was kept is the rule's pick: per domain, or
    // (when the two together fail on validation) one draw for both.
    assert_eq!(first.tried.len(), 6, "{first:?}"); // plain rows: no mean draws
    let choose = |domains: &[usize]| {
        llm_emf::train::fit::choose_unseen_draw(
            domains,
            first.mrr[0],
            first.unseen_mrr[0],
            first.chance_mrr,
            &first.tried,
        )
        .map(|i| first.tried[i].draw)
    };
    if first.redrawn == 0 {
        assert_eq!(first.chosen, [None, None], "{first:?}");
    } else {
        // One draw for both sets it in the domains that have such items.
        let counts = data.dataset.train_counts();
        let joint = DomainId::BOTH.map(|d| {
            let has_unseen = data
                .dataset
                .domain(d)
                .items()
                .any(|i| counts[i as usize] == 0);
            choose(&[0, 1]).filter(|_| has_unseen)
        });
        assert!(
            first.chosen == [choose(&[0]), choose(&[1])] || first.chosen == joint,
            "{first:?}"
        );
    }
    assert_eq!(first.kept, first.chosen != [None, None], "{first:?}");
    if first.kept {
        for d in 0..2 {
            assert!(first.mrr[1][d] >= first.mrr[0][d] - 0.001, "{first:?}");
            if let [Some(before), Some(after)] = [first.unseen_mrr[0][d], first.unseen_mrr[1][d]] {
                assert!(after >= before, "{first:?}");
            }
        }
    }
    // Fitting again starts from the initial draw (the rows as trained are gone), so what a
    // refit keeps does not depend on the draw kept before: the same every time.
    let refit = || {
        fit_run(base_dir.path(), &device, unseen)
            .unwrap()
            .unseen_row_fit
            .unwrap()
    };
    let again = refit();
    assert_eq!(again.redrawn, first.redrawn);
    assert_eq!(again.mrr[0], again.tried[0].mrr, "{again:?}");
    assert_eq!(again.unseen_mrr[0], again.tried[0].unseen_mrr, "{again:?}");
    let third = refit();
    assert_eq!(third.chosen, again.chosen);
    assert_eq!(third.mrr, again.mrr);
    let err = fit_run(features_only.path(), &device, unseen)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no ID rows"), "{err}");
    // The same fit at the end of training (`train.fit_unseen_rows`, as in the `ids` preset):
    // reported, and what it kept is what the saved model scores with.
    let fresh_dir = tempfile::tempdir().unwrap();
    let mut fresh = base.clone();
    fresh.train.fit_unseen_rows = true;
    let report = train(&fresh, &data, fresh_dir.path(), &device, &quiet()).unwrap();
    let fit = report
        .unseen_row_fit
        .expect("an unseen-row fit after training");
    assert_eq!(fit.redrawn, never_seen);
    let run = TrainedRun::load(fresh_dir.path(), &device).unwrap();
    let valid = run
        .evaluate(Split::Valid, fresh.eval.protocol, None)
        .unwrap();
    assert_eq!(valid.domains, report.valid.domains);
    // The validation MRR of the model kept: the new rows' when kept, the trained ones' if not.
    for d in DomainId::BOTH {
        let name = &data.dataset.domain(d).name;
        let got = report.valid.domains[name].mrr;
        assert_eq!(got, fit.mrr[usize::from(fit.kept)][d.index()], "{name}");
    }

    // A damaged settings file is an error that names it, never a silently different model.
    let settings = base_dir.path().join("model.score.json");
    std::fs::write(&settings, "{\"modality_weights\": [1").unwrap();
    let err = match TrainedRun::load(base_dir.path(), &device) {
        Ok(_) => panic!("a damaged model.score.json was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("model.score.json"), "{err}");
}

#[test]
fn held_out_items_leave_training_and_are_scored_alone() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let device = backend::from_env().unwrap();
    let mut cfg = tiny_config(Preset::Recommended, 1);
    cfg.hold_out = Some(HoldOut {
        domain: "Y".into(),
        share: 0.2,
        seed: 3,
        titled_only: false,
    });
    let data = cfg.load_data().unwrap();
    let full = ExperimentConfig {
        hold_out: None,
        ..cfg.clone()
    }
    .load_data()
    .unwrap();
    // A fifth of Y's trained items (Y is 40..90), the same draw every time, none in training
    // any more, all still in the catalogue and the evaluation splits.
    let trained_y = (40..90u32)
        .filter(|&i| full.dataset.train_counts()[i as usize] > 0)
        .count();
    assert_eq!(
        data.held_out.len(),
        (0.2 * trained_y as f64).round() as usize
    );
    assert_eq!(cfg.load_data().unwrap().held_out, data.held_out);
    let counts = data.dataset.train_counts();
    assert!(
        data.held_out
            .iter()
            .all(|&i| (40..90).contains(&i) && counts[i as usize] == 0)
    );
    assert_eq!(data.dataset.num_items(), full.dataset.num_items());
    assert_eq!(
        data.dataset.examples(Split::Test),
        full.dataset.examples(Split::Test)
    );
    train(&cfg, &data, dir.path(), &device, &quiet()).unwrap();
    let listed: Vec<u32> = std::fs::read_to_string(dir.path().join("held_out.txt"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(listed, data.held_out);
    // Scored alone: every target gives the whole evaluation, the held-out ones their own.
    let run = TrainedRun::load(dir.path(), &device).unwrap();
    let candidates = run
        .candidates(Split::Test, cfg.eval.protocol, None)
        .unwrap();
    let all: std::collections::HashSet<u32> = (0..90).collect();
    let whole = run.evaluate_with(Split::Test, &candidates).unwrap();
    let again = run
        .evaluate_targets(Split::Test, &candidates, &all)
        .unwrap();
    assert_eq!(again.domains, whole.domains);
    let held: std::collections::HashSet<u32> = data.held_out.iter().copied().collect();
    let alone = run
        .evaluate_targets(Split::Test, &candidates, &held)
        .unwrap();
    let n = data
        .dataset
        .examples(Split::Test)
        .iter()
        .filter(|e| held.contains(&e.target))
        .count();
    assert_eq!(alone.domains.values().map(|m| m.n).sum::<usize>(), n);
    assert_eq!(alone.domains["X"].n, 0);
    // The held-out items are never seen in training: the unseen-row fit redraws their rows,
    // Y's alone when X has none, chooses per domain by the rule, and the saved model scores
    // as the fit reported.
    let unseen = RunFits {
        weights: false,
        row_shrinkage: false,
        unseen_rows: true,
    };
    let fit = fit_run(dir.path(), &device, unseen)
        .unwrap()
        .unseen_row_fit
        .expect("an unseen-row fit");
    let never_seen = |d: std::ops::Range<usize>| d.filter(|&i| counts[i] == 0).count();
    assert_eq!(fit.redrawn, never_seen(0..90));
    assert!(fit.redrawn >= data.held_out.len());
    let choose = |domains: &[usize]| {
        llm_emf::train::fit::choose_unseen_draw(
            domains,
            fit.mrr[0],
            fit.unseen_mrr[0],
            fit.chance_mrr,
            &fit.tried,
        )
        .map(|i| fit.tried[i].draw)
    };
    let joint = choose(&[0, 1]);
    let mut per_domain = [choose(&[0]), choose(&[1])];
    if never_seen(0..40) == 0 {
        per_domain[0] = None;
    }
    assert!(
        fit.chosen == per_domain || fit.chosen == [joint, joint],
        "{fit:?}"
    );
    let run = TrainedRun::load(dir.path(), &device).unwrap();
    let valid = run.evaluate(Split::Valid, cfg.eval.protocol, None).unwrap();
    for d in DomainId::BOTH {
        let name = &data.dataset.domain(d).name;
        let expected = fit.mrr[usize::from(fit.kept)][d.index()];
        assert_eq!(valid.domains[name].mrr, expected, "{name}");
    }
    // A share outside (0, 1) and an unknown domain are refused by name.
    for (h, says) in [
        (
            HoldOut {
                share: 1.0,
                ..cfg.hold_out.clone().unwrap()
            },
            "hold_out.share",
        ),
        (
            HoldOut {
                domain: "Garden".into(),
                ..cfg.hold_out.clone().unwrap()
            },
            "Garden",
        ),
    ] {
        let bad = ExperimentConfig {
            hold_out: Some(h),
            ..cfg.clone()
        };
        let e = bad.load_data().unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
}
