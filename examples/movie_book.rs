//! Trains and evaluates LLM-EMF on the C2DSR Movie-Book directory with the paper's
//! hyper-parameters (q = 256, batch 256, dropout 0.3, lambda1 = 0.3, lambda2 = 0.1, Adam with
//! L2, up to 100 epochs, patience 10, full softmax, C2DSR protocol), then prints Table 3's layout
//! next to the paper's own numbers.
//!
//! ```text
//! cargo run --release --example movie_book -- --data ../shared/data/movie-book \
//!     [--features-img img.npy] [--features-tex tex.npy] [--preset paper|recommended] [--epochs N] [--device cpu|wgpu|cuda] \
//!     [--out runs/movie-book]
//! ```
//!
//! Movie-Book's `traindata_new.txt` is not redistributed with the C2DSR data mirrors: the example
//! says where to get it when it is missing.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::Parser;

use llm_emf::data::{Format, detect_format, load_dataset};
use llm_emf::eval::Evaluation;
use llm_emf::train::{DataSource, ExperimentConfig, Preset, TrainOptions, train};
use llm_emf::{Error, Result, backend};

/// Table 3 of the paper: LLM-EMF on Movie-Book (%): MRR, NDCG@5, NDCG@10 per domain.
const PAPER: [(&str, [f64; 3]); 2] = [("Movie", [6.32, 5.35, 5.78]), ("Book", [2.86, 2.53, 2.79])];
/// SASRec's row of Table 3 (%), the single-sequence baseline the paper compares with.
const PAPER_SASREC: [(&str, [f64; 3]); 2] =
    [("Movie", [3.79, 3.23, 3.69]), ("Book", [1.81, 1.41, 1.71])];

/// Trains and evaluates LLM-EMF on the C2DSR Movie-Book directory and prints Table 3's layout
/// next to the paper's numbers.
#[derive(Debug, Parser)]
#[command(name = "movie_book")]
struct Args {
    /// The C2DSR Movie-Book directory.
    #[arg(long, default_value = "../shared/data/movie-book")]
    data: PathBuf,
    /// Frozen image features (`.npy`, one row per item).
    #[arg(long = "features-img")]
    image: Option<PathBuf>,
    /// Frozen text features (`.npy`, one row per item).
    #[arg(long = "features-tex")]
    text: Option<PathBuf>,
    /// The preset: `paper` (Table 3's model), `recommended`, `ids` or `titles`.
    #[arg(long, default_value = "paper")]
    preset: Preset,
    /// Epochs (default: the preset's).
    #[arg(long)]
    epochs: Option<NonZeroUsize>,
    /// The device to train on: cpu, wgpu or cuda (the last two need their cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The run folder.
    #[arg(long, default_value = "runs/movie-book")]
    out: PathBuf,
}

fn print_table(result: &Evaluation) {
    println!(
        "\n{:<24} {:>7} {:>7} {:>7}   {:>7} {:>7} {:>7}",
        "Model (Movie-Book, %)", "MRR", "NDCG@5", "NDCG@10", "MRR", "NDCG@5", "NDCG@10"
    );
    println!("{:<24} {:^23}   {:^23}", "", "Movie", "Book");
    let paper_row = |name: &str, table: &[(&str, [f64; 3]); 2]| {
        let [m, b] = table.map(|(_, v)| v);
        println!(
            "{name:<24} {:>7.2} {:>7.2} {:>7.2}   {:>7.2} {:>7.2} {:>7.2}",
            m[0], m[1], m[2], b[0], b[1], b[2]
        );
    };
    paper_row("SASRec (paper)", &PAPER_SASREC);
    paper_row("LLM-EMF (paper)", &PAPER);
    let ours = |d: &str| {
        result
            .domains
            .get(d)
            .map(|m| [100.0 * m.mrr, 100.0 * m.ndcg5, 100.0 * m.ndcg10])
            .unwrap_or([f64::NAN; 3])
    };
    let (m, b) = (ours("Movie"), ours("Book"));
    println!(
        "{:<24} {:>7.2} {:>7.2} {:>7.2}   {:>7.2} {:>7.2} {:>7.2}",
        "LLM-EMF (this run)", m[0], m[1], m[2], b[0], b[1], b[2]
    );
}

fn main() {
    let args = Args::parse();
    // The library's per-epoch lines on stderr.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_level(false)
        .init();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        if matches!(e, Error::MissingTrainingData { .. }) {
            eprintln!(
                "\nThe Movie-Book directory loads for evaluation only: its validation and test files \
                 are here, its training file is not. Put traindata_new.txt into {} and run again.",
                args.data.display()
            );
        }
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<()> {
    if detect_format(&args.data)? != Format::C2dsr {
        return Err(Error::format(
            &args.data,
            "expected a C2DSR directory (Alist.txt, Blist.txt, ...)",
        ));
    }
    // Fail before anything else when the training file is missing.
    let dataset = load_dataset(&args.data)?;
    dataset.train()?;
    eprintln!("{}", dataset.stats());

    let mut cfg = ExperimentConfig {
        data: DataSource::Directory {
            path: args.data.clone(),
            max_history: llm_emf::data::recbole::DEFAULT_MAX_HISTORY,
        },
        // The paper's setting by default (Table 3 is the paper's model); `--preset recommended`
        // trains the library's.
        ..ExperimentConfig::preset(args.preset)
    };
    cfg.features.image = args.image.clone();
    cfg.features.text = args.text.clone();
    if let Some(e) = args.epochs {
        cfg.train.epochs = e.get();
    }
    let device = backend::device(&args.device)?;
    let data = cfg.load_data()?;
    let report = train(&cfg, &data, &args.out, &device, &TrainOptions::default())?;
    eprintln!(
        "best epoch {} of {}; run folder {}",
        report.best_epoch,
        report.epochs,
        args.out.display()
    );
    print_table(&report.test);
    Ok(())
}
