//! The `llm-emf` command-line tool.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use llm_emf::data::{Candidates, DomainId, ItemId, Protocol, Split, SyntheticConfig, load_dataset};
use llm_emf::features::HashingTextEncoder;
use llm_emf::recommend::TrainedRun;
use llm_emf::train::{DataSource, ExperimentConfig, TrainOptions, train};
use llm_emf::{Error, Result, backend};
use serde_json::json;

/// LLM-EMF: cross-domain sequential recommendation with LLM-enriched multimodal item features.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print per-domain counts of a dataset directory (C2DSR or RecBole format).
    Stats {
        /// Dataset directory, or `synthetic` for the built-in generator.
        #[arg(long)]
        data: String,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Train LLM-EMF and write a run folder.
    Train {
        /// Dataset directory, or `synthetic` for the built-in generator.
        #[arg(long)]
        data: Option<String>,
        /// Image feature file (`[items, dim]` float32, .npy or .safetensors).
        #[arg(long)]
        features_img: Option<PathBuf>,
        /// Text feature file (`[items, dim]` float32, .npy or .safetensors).
        #[arg(long)]
        features_tex: Option<PathBuf>,
        /// Experiment config (JSON); the flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Maximum number of epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Seed of training (initialisation, shuffling, dropout, sampling).
        #[arg(long)]
        seed: Option<u64>,
        /// Device: cpu, wgpu or cuda (the backend must be compiled in).
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Run folder to write (or to resume).
        #[arg(long)]
        out: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Evaluate the best model of a run folder.
    Evaluate {
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// Split.
        #[arg(long, value_enum, default_value_t = Split::Test)]
        split: Split,
        /// Protocol: c2dsr (999 uniform negatives), abxi (999 negatives unseen by the user) or
        /// full (all items of the target domain).
        #[arg(long, value_enum)]
        protocol: Option<Protocol>,
        /// Seed of the sampled negatives (default: the run's).
        #[arg(long)]
        seed: Option<u64>,
        /// Rank against candidates saved in this file instead of sampling them (written with
        /// --save-candidates).
        #[arg(long, conflicts_with_all = ["protocol", "seed"])]
        candidates: Option<PathBuf>,
        /// Save the sampled candidates to this file.
        #[arg(long)]
        save_candidates: Option<PathBuf>,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Embed item text into a feature matrix (`[items, dim]` float32 .npy, global id order) with
    /// the weight-free hashing encoder (TF-IDF of hashed words, randomly projected).
    Embed {
        /// Dataset directory.
        #[arg(long)]
        data: String,
        /// Text encoder. Only `hashing` is available so far (no model weights needed).
        #[arg(long, default_value = "hashing")]
        text_encoder: String,
        /// Width of the vectors.
        #[arg(long, default_value_t = 256)]
        dim: usize,
        /// Also embed the items' attributes (items.tsv's fourth column).
        #[arg(long)]
        with_attributes: bool,
        /// Seed of the hash and projection.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output file (.npy).
        #[arg(long)]
        out: PathBuf,
    },
    /// Recommend the top-k items of a domain for a history.
    Recommend {
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// Global item ids of the history, oldest first, comma-separated.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        history: Vec<ItemId>,
        /// Domain to recommend from (its name, or X / Y).
        #[arg(long)]
        domain: String,
        /// Number of items.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn data_source(data: &str) -> DataSource {
    if data == "synthetic" {
        DataSource::Synthetic(SyntheticConfig::default())
    } else {
        DataSource::Directory {
            path: PathBuf::from(data),
            max_history: llm_emf::data::recbole::DEFAULT_MAX_HISTORY,
        }
    }
}

/// Loads the dataset `--data` names: a directory, or `synthetic`.
fn load_any(data: &str) -> Result<llm_emf::data::Dataset> {
    match data_source(data) {
        DataSource::Directory { path, .. } => load_dataset(&path),
        DataSource::Synthetic(cfg) => Ok(cfg.generate()?.dataset),
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::InvalidInput(format!("serialising output: {e}")))?;
    println!("{text}");
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Stats { data, json } => {
            let dataset = load_any(&data)?;
            let stats = dataset.stats();
            if json {
                let domains: Vec<_> = stats
                    .domains
                    .iter()
                    .map(|d| {
                        json!({
                            "name": d.name,
                            "items": d.items,
                            "train_interactions": d.train_interactions,
                            "valid_targets": d.valid_targets,
                            "test_targets": d.test_targets,
                            "titled_items": d.titled_items,
                        })
                    })
                    .collect();
                print_json(&json!({
                    "name": stats.name,
                    "domains": domains,
                    "train_sequences": stats.train_sequences,
                    "avg_sequence_length": stats.avg_sequence_length,
                    "avg_length_of": stats.avg_length_of,
                }))?;
            } else {
                print!("{stats}");
            }
        }
        Command::Train {
            data,
            features_img,
            features_tex,
            config,
            epochs,
            seed,
            device,
            out,
            quiet,
        } => {
            let mut cfg = match &config {
                Some(p) => ExperimentConfig::load(p)?,
                None => ExperimentConfig::default(),
            };
            if let Some(d) = &data {
                cfg.data = data_source(d);
            } else if config.is_none() {
                return Err(Error::Config(
                    "give --data DIR (or --data synthetic) or --config FILE".into(),
                ));
            }
            if features_img.is_some() {
                cfg.features.image = features_img;
            }
            if features_tex.is_some() {
                cfg.features.text = features_tex;
            }
            if let Some(e) = epochs {
                cfg.train.epochs = e;
            }
            if let Some(s) = seed {
                cfg.train.seed = s;
            }
            cfg.validate()?;
            let device = backend::device(&device)?;
            let data = cfg.load_data()?;
            let options = TrainOptions {
                progress: !quiet,
                verbose: true,
            };
            let report = train(&cfg, &data, &out, &device, &options)?;
            println!(
                "best epoch {} of {} ({} parameters, {:.0} training sequences/s)",
                report.best_epoch,
                report.epochs,
                report.parameters,
                report.train_sequences_per_second
            );
            print!("{}", report.test);
            println!("run folder: {}", out.display());
        }
        Command::Evaluate {
            run,
            split,
            protocol,
            seed,
            candidates,
            save_candidates,
            device,
            json,
        } => {
            let device = backend::device(&device)?;
            let trained = TrainedRun::load(&run, &device)?;
            let candidates = match candidates {
                Some(path) => Candidates::load(&path)?,
                None => trained.candidates(
                    split,
                    protocol.unwrap_or(trained.config.eval.protocol),
                    seed,
                )?,
            };
            if let Some(path) = save_candidates {
                candidates.save(&path)?;
            }
            let evaluation = trained.evaluate_with(split, &candidates)?;
            if json {
                print_json(&evaluation)?;
            } else {
                print!("{evaluation}");
            }
        }
        Command::Embed {
            data,
            text_encoder,
            dim,
            with_attributes,
            seed,
            out,
        } => {
            if text_encoder != "hashing" {
                return Err(Error::Config(format!(
                    "unknown text encoder {text_encoder:?}: only `hashing` is available"
                )));
            }
            let dataset = load_any(&data)?;
            let encoder = HashingTextEncoder { dim, seed };
            let (matrix, summary) = encoder.encode_items(&dataset, with_attributes, None)?;
            matrix.save_npy(&out)?;
            println!(
                "{}: {} items embedded, {} without text (zero rows), [{}, {}] float32",
                out.display(),
                summary.embedded,
                summary.without_text,
                matrix.rows(),
                matrix.dim()
            );
        }
        Command::Recommend {
            run,
            history,
            domain,
            k,
            device,
            json,
        } => {
            let device = backend::device(&device)?;
            let trained = TrainedRun::load(&run, &device)?;
            let domain: DomainId = trained.data.dataset.domain_by_name(&domain)?;
            let recs = trained.recommend(&history, domain, k)?;
            if json {
                print_json(&recs)?;
            } else {
                println!("{:>4} {:>8} {:>10}  title", "rank", "item", "score");
                for (i, r) in recs.iter().enumerate() {
                    println!(
                        "{:>4} {:>8} {:>10.3e}  {}",
                        i + 1,
                        r.item,
                        r.score,
                        r.title.as_deref().unwrap_or("-")
                    );
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
