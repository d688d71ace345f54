//! End-to-end training on a tiny synthetic dataset: reproducibility, resuming an interrupted run,
//! the run folder, evaluation protocols, recommendation and the error paths around them.

mod common;

use std::path::Path;

use common::{quiet, tiny_config};

use llm_emf::backend;
use llm_emf::data::{DomainId, Protocol, Split};
use llm_emf::recommend::TrainedRun;
use llm_emf::train::{
    DataSource, ExperimentConfig, Objective, Plateau, Preset, Sampler, TrainState, train,
};

/// Burn's random generator is process-wide: trainings that must reproduce each other cannot run
/// beside another one in the same process, so the tests of this file take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(epochs: usize) -> ExperimentConfig {
    tiny_config(Preset::Recommended, epochs)
}

fn log_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn same_seed_gives_same_metrics_and_run_folder_is_complete() {
    let _turn = serial();
    let device = backend::from_env().unwrap();
    let cfg = config(2);
    let data = cfg.load_data().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = train(&cfg, &data, &dir.path().join("a"), &device, &quiet()).unwrap();
    let b = train(&cfg, &data, &dir.path().join("b"), &device, &quiet()).unwrap();
    assert_eq!(a.test.domains, b.test.domains);
    assert_eq!(a.valid.domains, b.valid.domains);
    let la = log_lines(&dir.path().join("a"));
    let lb = log_lines(&dir.path().join("b"));
    assert_eq!(la.len(), 2);
    assert_eq!(la[1]["loss"], lb[1]["loss"]);
    for name in [
        "config.json",
        "model.bpk",
        "log.jsonl",
        "results.json",
        "checkpoint/state.json",
    ] {
        assert!(dir.path().join("a").join(name).is_file(), "{name} missing");
    }
    let saved = ExperimentConfig::load(&dir.path().join("a/config.json")).unwrap();
    assert_eq!(saved, cfg);
    // The evaluation JSON has the documented keys per domain.
    let json = serde_json::to_value(&a.test).unwrap();
    for d in ["X", "Y"] {
        for key in ["mrr", "ndcg5", "ndcg10", "hr1", "hr5", "hr10", "n"] {
            assert!(json["domains"][d][key].is_number(), "{d}.{key}");
        }
    }
    // Another seed trains another model.
    let mut other = cfg.clone();
    other.train.seed = 7;
    let c = train(&other, &data, &dir.path().join("c"), &device, &quiet()).unwrap();
    assert_ne!(log_lines(&dir.path().join("c"))[0]["loss"], la[0]["loss"]);
    assert!(c.test.domains["X"].n > 0);
}

#[test]
fn interrupted_run_resumes_from_its_last_checkpoint() {
    resume_matches_uninterrupted_run(|_| {}, &[]);
}

#[test]
fn a_run_sparing_parameters_a_decay_resumes_with_its_parameter_groups() {
    // The optimizer's groups name parameter ids: rebuilt for the restored model, the spared
    // parameters stay spared after the resume, and the runs agree.
    resume_matches_uninterrupted_run(
        |c| {
            c.train.optimizer = llm_emf::train::Optimizer::AdamW { weight_decay: 0.5 };
            c.train.l2 = 0.0;
            c.train.decay_all = false;
        },
        &[],
    );
}

/// Trains `config(3)` (changed by `change`) straight through, and again stopped after two
/// epochs and resumed: the two runs must agree. `checkpoint_files` must exist after the cut.
fn resume_matches_uninterrupted_run(
    change: impl Fn(&mut ExperimentConfig),
    checkpoint_files: &[&str],
) {
    let _turn = serial();
    let device = backend::from_env().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let full_run = dir.path().join("full");
    let mut cfg = config(3);
    change(&mut cfg);
    let data = cfg.load_data().unwrap();
    let full = train(&cfg, &data, &full_run, &device, &quiet()).unwrap();

    // The same run stopped after two epochs, as if killed during the third: its checkpoint says
    // two epochs are done and not finished.
    let cut_run = dir.path().join("cut");
    let mut two = config(2);
    change(&mut two);
    train(&two, &data, &cut_run, &device, &quiet()).unwrap();
    for name in checkpoint_files {
        assert!(cut_run.join(name).is_file(), "{name} missing");
    }
    let state_path = cut_run.join("checkpoint/state.json");
    let mut state: TrainState =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    assert_eq!(state.epochs_done, 2);
    state.finished = false;
    std::fs::write(&state_path, serde_json::to_string(&state).unwrap()).unwrap();
    cfg.save(&cut_run.join("config.json")).unwrap();
    std::fs::remove_file(cut_run.join("results.json")).unwrap();
    // A half-written file of the killed epoch is ignored.
    std::fs::write(cut_run.join("checkpoint/model-3.bpk.tmp"), b"partial").unwrap();

    let resumed = train(&cfg, &data, &cut_run, &device, &quiet()).unwrap();
    assert_eq!(resumed.epochs, 3);
    assert_eq!(resumed.test.domains, full.test.domains);
    let lines = log_lines(&cut_run);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2]["loss"], log_lines(&full_run)[2]["loss"]);

    // A finished run is not trained again, and another config cannot reuse the folder.
    let err = train(&cfg, &data, &cut_run, &device, &quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("finished"), "{err}");
    let mut changed = cfg.clone();
    changed.train.learning_rate = 0.01;
    let err = train(&changed, &data, &cut_run, &device, &quiet())
        .unwrap_err()
        .to_string();
    assert!(err.contains("another configuration"), "{err}");
}

/// With `plateau.restore_best`, the epoch whose validation stalls ends on the best weights:
/// its checkpoint scores exactly as the saved best model; without the switch it does not.
#[test]
fn a_plateau_decay_with_restore_best_goes_back_to_the_best_weights() {
    let _turn = serial();
    let device = backend::from_env().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let with_plateau = |epochs: usize, restore_best: bool| {
        let mut c = config(epochs);
        // A rate high enough that validation stalls within a few epochs; every stall decays.
        c.train.learning_rate = 0.05;
        c.train.warmup_epochs = 0;
        c.train.patience = 100;
        c.train.fit_domain_weights = false;
        c.train.plateau = Some(Plateau {
            patience: 1,
            factor: 0.5,
            min_scale: 0.01,
            restore_best,
        });
        c
    };
    let data = with_plateau(1, true).load_data().unwrap();
    // The first epoch whose validation is not the best so far, in an 8-epoch run of
    // `config_for(8)` (the run is deterministic, so a run of exactly that many epochs ends on
    // it).
    let first_stall = |config_for: &dyn Fn(usize) -> ExperimentConfig, name: &str| {
        let probe = dir.path().join(name);
        train(&config_for(8), &data, &probe, &device, &quiet()).unwrap();
        let stall = log_lines(&probe)
            .iter()
            .position(|l| l["best"] == false)
            .unwrap_or_else(|| {
                panic!("{name}: validation never stalled in 8 epochs: raise the learning rate of this test")
            })
            + 1;
        assert!(stall >= 2);
        stall
    };
    let stall = first_stall(&|epochs| with_plateau(epochs, true), "probe");
    let checkpoint_scores_as_best = |restore_best: bool| {
        let run = dir.path().join(format!("stall-{restore_best}"));
        let cfg = with_plateau(stall, restore_best);
        train(&cfg, &data, &run, &device, &quiet()).unwrap();
        let best = TrainedRun::load(&run, &device)
            .unwrap()
            .evaluate(Split::Valid, Protocol::C2dsr, None)
            .unwrap();
        std::fs::copy(
            run.join(format!("checkpoint/model-{stall}.bpk")),
            run.join("model.bpk"),
        )
        .unwrap();
        let last = TrainedRun::load(&run, &device)
            .unwrap()
            .evaluate(Split::Valid, Protocol::C2dsr, None)
            .unwrap();
        best.domains == last.domains
    };
    assert!(checkpoint_scores_as_best(true));
    assert!(!checkpoint_scores_as_best(false));
}

#[test]
fn trained_run_evaluates_under_every_protocol_and_recommends() {
    let _turn = serial();
    let device = backend::from_env().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(2);
    cfg.train.objective = Objective::Sampled {
        negatives: 16,
        sampler: Sampler::Popularity { power: 0.75 },
        seen_only: false,
    };
    let data = cfg.load_data().unwrap();
    let report = train(&cfg, &data, dir.path(), &device, &quiet()).unwrap();
    let run = TrainedRun::load(dir.path(), &device).unwrap();
    // Reloading the run reproduces the reported test metrics.
    let again = run.evaluate(Split::Test, Protocol::C2dsr, None).unwrap();
    assert_eq!(again.domains, report.test.domains);
    for protocol in [Protocol::Abxi, Protocol::Full] {
        let e = run.evaluate(Split::Test, protocol, None).unwrap();
        assert_eq!(e.protocol, protocol);
        let m = &e.domains["Y"];
        assert!(m.n > 0 && m.mrr > 0.0 && m.mrr <= 1.0);
        assert!(m.hr1 <= m.hr5 && m.hr5 <= m.hr10);
    }

    let history = [0, 41, 3];
    let recs = run.recommend(&history, DomainId::Y, 5).unwrap();
    assert_eq!(recs.len(), 5);
    assert!(
        recs.iter()
            .all(|r| (40..90).contains(&r.item) && !history.contains(&r.item))
    );
    assert!(recs.windows(2).all(|w| w[0].score >= w[1].score));
    assert!(recs[0].title.is_some());
    let err = run
        .recommend(&[1000], DomainId::X, 5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("item 1000"), "{err}");
    assert!(run.recommend(&history, DomainId::X, 0).is_err());
    // An empty history still gets recommendations (the "no history" preference).
    assert_eq!(run.recommend(&[], DomainId::X, 3).unwrap().len(), 3);
}

#[test]
fn missing_run_folder_and_missing_training_file_are_clear_errors() {
    let _turn = serial();
    let device = backend::from_env().unwrap();
    let err = TrainedRun::load(Path::new("/nonexistent/run"), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/run/config.json"), "{err}");

    // A C2DSR directory without its training file loads, but training names the file.
    let movie_book = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/movie-book");
    if movie_book.is_dir() {
        let cfg = ExperimentConfig {
            data: DataSource::Directory {
                path: movie_book,
                max_history: 50,
            },
            ..config(1)
        };
        let data = cfg.load_data().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = train(&cfg, &data, dir.path(), &device, &quiet())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("traindata_new.txt") && err.contains("C2DSR"),
            "{err}"
        );
    }
}

#[test]
fn the_contrastive_term_trains_and_is_part_of_the_loss() {
    let _turn = serial();
    let device = backend::from_env().unwrap();
    let plain = config(1);
    let data = plain.load_data().unwrap();
    let mut with = plain.clone();
    with.train.contrastive = Some(llm_emf::train::Contrastive {
        weight: 0.5,
        temperature: 1.0,
    });
    let dir = tempfile::tempdir().unwrap();
    let a = train(&plain, &data, &dir.path().join("plain"), &device, &quiet()).unwrap();
    let b = train(&with, &data, &dir.path().join("with"), &device, &quiet()).unwrap();
    let loss = |run: &str| {
        log_lines(&dir.path().join(run))[0]["loss"]
            .as_f64()
            .unwrap()
    };
    // The term is a positive InfoNCE added to the same next-item loss.
    assert!(loss("with").is_finite() && loss("with") > loss("plain"));
    assert!(b.test.domains["X"].n > 0 && a.test.domains["X"].n == b.test.domains["X"].n);
    // Saved and read back with the run.
    let saved = ExperimentConfig::load(&dir.path().join("with/config.json")).unwrap();
    assert_eq!(saved.train.contrastive, with.train.contrastive);
}
