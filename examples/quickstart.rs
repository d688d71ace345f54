//! Quickstart: trains LLM-EMF as the paper specifies it (`paper` preset), LLM-EMF as this library
//! recommends it (`recommended` preset) and the ID-only single-sequence baseline (SASRec-like:
//! only S^{X+Y}, ID embeddings only, with the recommended recipe) on the built-in synthetic
//! dataset, then prints their test metrics side by side, and exports the recommended model as a
//! self-contained model folder that it serves from. Runs on a fresh machine with no
//! download, in about two minutes on 2 CPU cores (after the build):
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! Options: `--device cpu|wgpu|cuda`, `--epochs N` (default 40: at 20 both the preset and the
//! baseline were still climbing), `--out DIR` (default `runs/quickstart`).
//! The run folders it writes work with `llm-emf evaluate` and `llm-emf recommend`; the model
//! folder (`OUT/recommended-model`) with `llm-emf recommend --model` and the serve example.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use llm_emf::data::SyntheticConfig;
use llm_emf::eval::Evaluation;
use llm_emf::train::{DataSource, ExperimentConfig, Preset, TrainOptions, train};
use llm_emf::{Result, backend};

/// Trains the paper preset, the recommended preset and the SASRec-like baseline on synthetic
/// data and prints their test metrics side by side.
#[derive(Debug, Parser)]
#[command(name = "quickstart")]
struct Args {
    /// The device to train on: cpu, wgpu or cuda (the last two need their cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Epochs per model.
    #[arg(long, default_value = "40")]
    epochs: NonZeroUsize,
    /// Where the three run folders go.
    #[arg(long, default_value = "runs/quickstart")]
    out: PathBuf,
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
    let args = Args::parse();
    backend::tune_allocator();
    // The library's per-epoch lines on stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_level(false)
        .init();
    let device = backend::device(&args.device)?;
    let paper = experiment(Preset::Paper, args.epochs.get());
    let recommended = experiment(Preset::Recommended, args.epochs.get());
    let baseline = {
        let mut cfg = experiment(Preset::Recommended, args.epochs.get());
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
    // The recommended model as a service would take it: a self-contained model folder, loaded
    // without the run or the data.
    let model = args.out.join("recommended-model");
    let trained = llm_emf::recommend::TrainedRun::load(&args.out.join("recommended"), &device)?;
    let saved = trained.export(&model)?;
    let served = llm_emf::recommend::Recommender::load(&model, &device)?;
    let top = served.recommend(
        &[0, 700, 5],
        llm_emf::data::DomainId::Y,
        3,
        llm_emf::recommend::Exclude::History,
    )?;
    println!(
        "\nModel folder {} ({:.1} MB, {} items): after items 0, 700, 5 it recommends {:?} in Y.",
        model.display(),
        saved.bytes() as f64 / 1e6,
        saved.items,
        top.iter().map(|r| r.item).collect::<Vec<_>>()
    );
    println!(
        "\nRun folders: {} (try `llm-emf recommend --model {} --history 0,700,5 --domain Y`\n\
         and `llm-emf report {0}/paper {0}/recommended {0}/baseline --out report`)",
        args.out.display(),
        model.display()
    );
    Ok(())
}
