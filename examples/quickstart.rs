//! Quickstart: trains LLM-EMF as the paper specifies it (`paper` preset), LLM-EMF as this library
//! recommends it (`recommended` preset) and the ID-only single-sequence baseline (SASRec-like:
//! only S^{X+Y}, ID embeddings only, with the recommended recipe) on the built-in synthetic
//! dataset, then prints their test metrics side by side. Runs on a fresh machine with no
//! download, in about three minutes on 2 CPU cores:
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! Options: `--device cpu|wgpu|cuda`, `--epochs N`, `--out DIR` (default `runs/quickstart`).
//! The run folders it writes work with `llm-emf evaluate` and `llm-emf recommend`.

use std::path::PathBuf;
use std::time::Instant;

use llm_emf::data::SyntheticConfig;
use llm_emf::eval::Evaluation;
use llm_emf::train::{DataSource, ExperimentConfig, Preset, TrainOptions, train};
use llm_emf::{Result, backend};

struct Args {
    device: String,
    epochs: usize,
    out: PathBuf,
}

fn parse_args() -> std::result::Result<Args, String> {
    let mut args = Args {
        device: "cpu".into(),
        epochs: 20,
        out: PathBuf::from("runs/quickstart"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => args.device = value()?,
            "--epochs" => {
                args.epochs = value()?
                    .parse()
                    .map_err(|_| "--epochs takes a positive integer".to_string())?
            }
            "--out" => args.out = PathBuf::from(value()?),
            "-h" | "--help" => {
                return Err(
                    "usage: quickstart [--device cpu|wgpu|cuda] [--epochs N] [--out DIR]".into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

/// The quickstart experiment: a small synthetic world and a small model, on top of a preset.
fn experiment(preset: Preset, epochs: usize) -> ExperimentConfig {
    let mut cfg = ExperimentConfig {
        data: DataSource::Synthetic(SyntheticConfig {
            users: 2000,
            items_x: 500,
            items_y: 700,
            topics: 20,
            min_len: 6,
            max_len: 20,
            feature_dim: 32,
            ..Default::default()
        }),
        ..ExperimentConfig::preset(preset)
    };
    cfg.model.id_dim = 64;
    cfg.model.layers = 1;
    cfg.model.dropout = 0.2;
    cfg.model.max_len = 20;
    cfg.train.epochs = epochs;
    cfg.train.batch_size = 128;
    cfg.train.learning_rate = 3e-3;
    cfg.train.patience = 3;
    cfg.train.eval_every = 2;
    cfg
}

fn row(name: &str, domain: &str, e: &Evaluation) -> String {
    let m = &e.domains[domain];
    format!(
        "{name:<28} {domain:<6} {:>7.2} {:>7.2} {:>7.2} {:>7.2}",
        100.0 * m.mrr,
        100.0 * m.ndcg5,
        100.0 * m.ndcg10,
        100.0 * m.hr10
    )
}

fn main() -> Result<()> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    backend::tune_allocator();
    let device = backend::device(&args.device)?;
    let paper = experiment(Preset::Paper, args.epochs);
    let recommended = experiment(Preset::Recommended, args.epochs);
    let baseline = {
        let mut cfg = experiment(Preset::Recommended, args.epochs);
        cfg.model = cfg.model.id_only_single_sequence();
        cfg
    };
    let data = paper.load_data()?;
    eprintln!("{}", data.dataset.stats());
    let options = TrainOptions::default();
    let mut results = Vec::new();
    for (name, cfg, dir) in [
        ("LLM-EMF, paper preset", &paper, "paper"),
        ("LLM-EMF, recommended preset", &recommended, "recommended"),
        ("SASRec-like baseline", &baseline, "baseline"),
    ] {
        let run = args.out.join(dir);
        // The quickstart owns its run folders: start afresh each time.
        if run.exists() {
            std::fs::remove_dir_all(&run).map_err(|e| llm_emf::Error::io(&run, e))?;
        }
        eprintln!("training {name} into {}", run.display());
        let start = Instant::now();
        let report = train(cfg, &data, &run, &device, &options)?;
        eprintln!(
            "{name}: best epoch {} of {}, {:.0}s",
            report.best_epoch,
            report.epochs,
            start.elapsed().as_secs_f64()
        );
        results.push((name, report.test));
    }
    println!(
        "\nTest metrics (%), C2DSR protocol: 999 sampled negatives, seed {}. Both LLM-EMF rows\n\
         use ids + image + text features; the baseline reads ids of the merged sequence only.",
        results[0].1.seed
    );
    println!(
        "{:<28} {:<6} {:>7} {:>7} {:>7} {:>7}",
        "model", "domain", "MRR", "NDCG@5", "NDCG@10", "HR@10"
    );
    for domain in ["X", "Y"] {
        for (name, e) in &results {
            println!("{}", row(name, domain, e));
        }
    }
    println!(
        "\nRun folders: {} (try `llm-emf recommend --run {}/recommended --history 0,700,5 --domain Y`\n\
         and `llm-emf report {0}/paper {0}/recommended {0}/baseline --out report`)",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}
