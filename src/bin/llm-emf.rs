//! The `llm-emf` command-line tool.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use llm_emf::data::{Candidates, DomainId, ItemId, Protocol, Split, SyntheticConfig, load_dataset};
use llm_emf::enrich::{self, ChatClient, ClientConfig, EnrichOptions, PromptTemplate};
use llm_emf::features::{EmbedReport, EmbedRequest, TextEncoderKind, TextSource, embed_dataset};
use llm_emf::recommend::{Exclude, Recommender, TrainedRun};
use llm_emf::report::{Group, group_index, markdown_table, paired_table, write_report};
use llm_emf::train::experiment::{run_experiment, summary_markdown};
use llm_emf::train::{
    Batching, DataSource, ExperimentConfig, Preset, TrainOptions, archive_experiment, train,
};
use llm_emf::{Error, Result, backend};
use serde_json::json;

/// LLM-EMF: cross-domain sequential recommendation with LLM-enriched multimodal item features.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What defines a training run, shared by `train` and `experiment`.
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Dataset directory, or `synthetic` for the built-in generator.
    #[arg(long)]
    data: Option<String>,
    /// Image feature file (`[items, dim]` float32, .npy or .safetensors).
    #[arg(long)]
    features_img: Option<PathBuf>,
    /// Text feature file (`[items, dim]` float32, .npy or .safetensors).
    #[arg(long)]
    features_tex: Option<PathBuf>,
    /// Experiment config (JSON), read on top of the preset; the flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Preset: `titles` (the best setting for data with item titles; needs --features-tex),
    /// `ids` (the best without titles), `recommended` (fast, any data; the default) or `paper`
    /// (the paper's model and recipe). Overrides the config file's own.
    #[arg(long, value_enum)]
    preset: Option<PresetArg>,
    /// Maximum number of epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Seed of training (initialisation, shuffling, dropout, sampling).
    #[arg(long)]
    seed: Option<u64>,
    /// Device: cpu, wgpu or cuda (the backend must be compiled in).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Batching of an epoch: `sorted` (length-sorted pools, the default) or `random`.
    #[arg(long)]
    batching: Option<BatchingArg>,
    /// Parts of each batch trained at the same time on their own threads (default 2; use 1
    /// on one core).
    #[arg(long)]
    shards: Option<usize>,
}

impl RunArgs {
    /// The configuration, its data and its device.
    fn resolve(
        &self,
    ) -> Result<(
        ExperimentConfig,
        llm_emf::train::LoadedData,
        burn::tensor::Device,
    )> {
        let mut cfg = match &self.config {
            Some(p) => ExperimentConfig::load_with(p, self.preset.map(Preset::from))?,
            None => ExperimentConfig::preset(self.preset.map(Preset::from).unwrap_or_default()),
        };
        if let Some(d) = &self.data {
            cfg.data = data_source(d);
        } else if self.config.is_none() {
            return Err(Error::Config(
                "give --data DIR (or --data synthetic) or --config FILE".into(),
            ));
        }
        if self.features_img.is_some() {
            cfg.features.image = self.features_img.clone();
        }
        if self.features_tex.is_some() {
            cfg.features.text = self.features_tex.clone();
        }
        if let Some(e) = self.epochs {
            cfg.train.epochs = e;
        }
        if let Some(s) = self.seed {
            cfg.train.seed = s;
        }
        if let Some(n) = self.shards {
            cfg.train.parallel_shards = n;
        }
        if let Some(b) = self.batching {
            cfg.train.batching = match b {
                BatchingArg::Random => Batching::Random,
                BatchingArg::Sorted => Batching::default(),
            };
        }
        cfg.validate()?;
        let device = backend::device(&self.device)?;
        let data = cfg.load_data()?;
        Ok((cfg, data, device))
    }
}

/// The progress bar on a terminal; otherwise (logs of CI or a server) one line per epoch;
/// nothing with `--quiet`.
fn train_options(quiet: bool, profile: bool) -> TrainOptions {
    TrainOptions {
        progress: !quiet && std::io::stderr().is_terminal(),
        verbose: !quiet,
        profile,
    }
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
        #[command(flatten)]
        run: RunArgs,
        /// Run folder to write (or to resume).
        #[arg(long)]
        out: PathBuf,
        /// Time the phases of every training step and write them to log.jsonl.
        #[arg(long)]
        profile: bool,
        /// Print nothing while training (no progress bar, no per-epoch line).
        #[arg(long)]
        quiet: bool,
    },
    /// Train one configuration with several seeds (resumable) and summarise them.
    Experiment {
        #[command(flatten)]
        run: RunArgs,
        /// Seeds, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        seeds: Vec<u64>,
        /// Experiment folder (one run folder per seed, summary.json, summary.md).
        #[arg(long)]
        out: PathBuf,
        /// Print nothing while training.
        #[arg(long)]
        quiet: bool,
        /// Also print the test rows of the summary (summary.md always holds both splits).
        /// Choices are made on validation; test numbers report a finished setting once.
        #[arg(long)]
        test: bool,
    },
    /// Copy the record of a finished experiment, everything but its weights (experiment.json,
    /// the summary, and each seed's config.json, results.json, log.jsonl and
    /// model.score.json), to a folder that `report` and `experiment` read: what a repository
    /// keeps after the run folder is gone. Seed folders that link to runs archived beside the
    /// destination stay links.
    Archive {
        /// Experiment folder (`experiment --out`).
        src: PathBuf,
        /// Archive folder to write (written whole or not at all).
        #[arg(long)]
        to: PathBuf,
        /// Replace an existing archive at --to.
        #[arg(long)]
        replace: bool,
    },
    /// Fit the score's weights of finished runs on their validation split (what
    /// `train.fit_domain_weights` does after training: the feature modalities' share beside
    /// the IDs, then the sub-sequence weights) and rewrite their best model and results.json;
    /// an experiment folder's summary is rewritten by re-running `experiment`.
    FitWeights {
        /// Run folders.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Also fit the prior count of the learned ID rows (what `train.fit_row_shrinkage`
        /// does after training; models with title rows).
        #[arg(long)]
        rows: bool,
        /// Also draw fresh rows for the items never seen in training, kept when validation
        /// allows (what `train.fit_unseen_rows` does after training; models with plain ID rows).
        #[arg(long)]
        unseen_rows: bool,
        /// Leave the score's weights as they are (fit only what --rows / --unseen-rows ask).
        #[arg(long)]
        skip_weights: bool,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Tables and charts (SVG) of one or more runs or experiments.
    Report {
        /// Run folders or experiment folders, each optionally as LABEL=PATH.
        #[arg(required = true)]
        runs: Vec<String>,
        /// Where to write report.md and the charts.
        #[arg(long, default_value = "report")]
        out: PathBuf,
        /// The label of a group to compare the others with, seed by seed: adds the tables of
        /// paired differences (runs matched by their training seed) and their chart to
        /// report.md, and prints the validation one.
        #[arg(long)]
        reference: Option<String>,
        /// Also print the test tables (report.md always holds both splits). Choices are made
        /// on validation; test numbers are for reporting a finished setting once.
        #[arg(long)]
        test: bool,
    },
    /// Evaluate the best model of a run folder.
    Evaluate {
        /// Run folder.
        #[arg(long)]
        run: PathBuf,
        /// Split.
        #[arg(long, value_enum, default_value_t = SplitArg::Test)]
        split: SplitArg,
        /// Protocol: c2dsr (999 uniform negatives), abxi (999 negatives unseen by the user) or
        /// full (all items of the target domain).
        #[arg(long, value_enum)]
        protocol: Option<ProtocolArg>,
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
        /// Score only the examples whose target is listed in this file (global item ids, one
        /// per line), such as the `held_out.txt` a run with `hold_out` writes.
        #[arg(long)]
        targets: Option<PathBuf>,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Embed item text (and images) into feature matrices (`[items, dim]` float32 .npy, global
    /// item-id order) with a frozen encoder: CLIP (the paper's), all-MiniLM-L6-v2, or the
    /// weight-free hashing encoder. Resumable: re-run the same command after an interruption.
    Embed {
        /// Dataset directory.
        #[arg(long)]
        data: String,
        /// Text encoder: `clip`, `minilm` (both need --weights) or `hashing` (no weights).
        #[arg(long, default_value = "hashing")]
        text_encoder: String,
        /// Weights folder: a Hugging Face CLIP snapshot (config.json, model.safetensors,
        /// tokenizer.json) or the all-MiniLM-L6-v2 folder (scripts/fetch-weights.sh).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Item text: `titles`, `none` (images only), or a JSON-lines file written by `llm-emf
        /// enrich` (title + enriched text, the paper's "LLM-enhanced" text).
        #[arg(long, default_value = "titles")]
        text_source: String,
        /// Also embed the items' attributes (items.tsv's fourth column).
        #[arg(long)]
        with_attributes: bool,
        /// Image folder (`{item_id}.jpg|png|webp|...`), embedded with CLIP's vision tower.
        #[arg(long)]
        images: Option<PathBuf>,
        /// Output of the image matrix (.npy); required with --images.
        #[arg(long)]
        image_out: Option<PathBuf>,
        /// Items per encoder call.
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Width of the hashing encoder's vectors.
        #[arg(long, default_value_t = 256)]
        dim: usize,
        /// Seed of the hashing encoder.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Output of the text matrix (.npy).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Enrich item titles with an LLM through an OpenAI-compatible chat endpoint (the paper's
    /// Section 3.3), appending one JSON line per item; re-running resumes.
    Enrich {
        /// Dataset directory.
        #[arg(long)]
        data: String,
        /// Base URL of the endpoint (`http://127.0.0.1:8088`, `https://api.deepseek.com`).
        #[arg(long)]
        endpoint: String,
        /// Model name (`deepseek-reasoner`, the served model's name...).
        #[arg(long)]
        model: String,
        /// Output JSON-lines file (appended to).
        #[arg(long)]
        out: PathBuf,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Most items to request in this run.
        #[arg(long)]
        limit: Option<usize>,
        /// Prompt template file with {domain}, {title} and {attributes} (default: the paper's).
        #[arg(long)]
        template: Option<PathBuf>,
        /// Sampling temperature.
        #[arg(long, default_value_t = 0.6)]
        temperature: f64,
        /// Most tokens generated per item.
        #[arg(long, default_value_t = 1024)]
        max_tokens: usize,
        /// Seconds before a request times out.
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
        /// Retries per item (timeouts, connection errors, 429, 5xx).
        #[arg(long, default_value_t = 5)]
        retries: usize,
        /// Environment variable holding the API key (sent as a bearer token, never printed).
        #[arg(long, default_value = "LLM_EMF_API_KEY")]
        api_key_env: String,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Check an enrichment file as a reviewer would: the share of usable answers (non-empty,
    /// at least ten words besides the title's, not looping, not the prompt echoed), the lengths
    /// of the answers and, given the text encoder's weights, how much of each the encoder reads.
    EnrichCheck {
        /// Enrichment file (`llm-emf enrich --out`).
        file: PathBuf,
        /// Prompt template file the answers were asked with (default: the paper's).
        #[arg(long)]
        template: Option<PathBuf>,
        /// Folder of all-MiniLM-L6-v2 (its `tokenizer.json`), to count the encoder's tokens.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Fail (exit status 1) when fewer than this share of the items is usable.
        #[arg(long)]
        min_usable: Option<f64>,
    },
    /// Recommend the top-k items of a domain for a history.
    /// Write a run's best model as a self-contained model folder (configuration, score
    /// settings, weights in safetensors, the item catalogue and the frozen feature rows, with
    /// a manifest of checksums) that `recommend --model` and services load without the
    /// training data. An existing model folder at --out is replaced whole.
    Export {
        /// Run folder.
        run: PathBuf,
        /// Model folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Add items to a model folder after training, recommendable at once by their text: a
    /// JSON-lines file of `{"domain": NAME, "key": ID, "title": "...", "text": [floats]}`,
    /// `text` the item's vector from the encoder the model was trained with, or left out with
    /// --weights to embed the title with all-MiniLM-L6-v2. The folder is rewritten whole.
    AddItems {
        /// Model folder (`llm-emf export`).
        #[arg(long)]
        model: PathBuf,
        /// The new items (JSON lines).
        #[arg(long)]
        items: PathBuf,
        /// all-MiniLM-L6-v2 weights folder, to embed titles of lines without `text`.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Device: cpu, wgpu or cuda.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    Recommend {
        /// Model folder (`llm-emf export`) or run folder.
        #[arg(long, alias = "run")]
        model: PathBuf,
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

fn print_report(what: &str, path: &std::path::Path, r: &EmbedReport) {
    println!(
        "{what} -> {}: [{}, {}] float32; {} embedded, {} without input (zero rows), {} unreadable (zero rows); {:.1} items/s{}",
        path.display(),
        r.rows,
        r.dim,
        r.embedded,
        r.without_input,
        r.failed.len(),
        r.rows_per_second,
        if r.resumed_rows > 0 {
            format!(" (resumed after {} rows)", r.resumed_rows)
        } else {
            String::new()
        }
    );
    for (item, why) in r.failed.iter().take(10) {
        println!("  item {item}: {why}");
    }
    if r.failed.len() > 10 {
        println!("  ... and {} more", r.failed.len() - 10);
    }
}

/// `llm-emf embed`'s arguments as the library's request.
#[allow(clippy::too_many_arguments)]
fn embed_request(
    text_encoder: &str,
    weights: Option<PathBuf>,
    text_source: &str,
    with_attributes: bool,
    images: Option<PathBuf>,
    image_out: Option<PathBuf>,
    batch_size: usize,
    dim: usize,
    seed: u64,
    quiet: bool,
    out: Option<PathBuf>,
) -> Result<EmbedRequest> {
    let encoder = match text_encoder {
        "hashing" => TextEncoderKind::Hashing { dim, seed },
        "minilm" => TextEncoderKind::Minilm,
        "clip" => TextEncoderKind::Clip,
        other => {
            return Err(Error::Config(format!(
                "unknown text encoder {other:?}: expected clip, minilm or hashing"
            )));
        }
    };
    let text = match text_source {
        "titles" => Some(TextSource::Titles),
        "none" => None,
        path => Some(TextSource::Enriched(PathBuf::from(path))),
    };
    let images = match (images, image_out) {
        (Some(dir), Some(out)) => Some((dir, out)),
        (None, None) => None,
        _ => return Err(Error::Config("--images and --image-out go together".into())),
    };
    Ok(EmbedRequest {
        encoder,
        weights,
        text,
        with_attributes,
        text_out: out,
        images,
        batch_size,
        progress: !quiet,
    })
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
            run,
            out,
            profile,
            quiet,
        } => {
            let (cfg, data, device) = run.resolve()?;
            let options = train_options(quiet, profile);
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
        Command::Experiment {
            run,
            seeds,
            out,
            quiet,
            test,
        } => {
            let (cfg, data, device) = run.resolve()?;
            let options = train_options(quiet, false);
            let summary = run_experiment(&cfg, &data, &seeds, &out, &device, &options)?;
            print!("{}", summary_markdown(&cfg, &summary, test));
            println!("experiment folder: {}", out.display());
        }
        Command::Archive { src, to, replace } => {
            let a = archive_experiment(&src, &to, replace)?;
            let mut how = format!("{} files, seeds {:?} copied", a.files, a.copied);
            if !a.linked.is_empty() {
                how.push_str(&format!(", seeds {:?} linked", a.linked));
            }
            println!(
                "{} {} ({how})",
                if a.replaced {
                    "replaced"
                } else {
                    "archived to"
                },
                a.dest.display()
            );
        }
        Command::FitWeights {
            runs,
            rows,
            unseen_rows,
            skip_weights,
            device,
        } => {
            let device = backend::device(&device)?;
            let fits = llm_emf::train::RunFits {
                weights: !skip_weights,
                row_shrinkage: rows,
                unseen_rows,
            };
            for run in runs {
                let report = llm_emf::train::fit_run(&run, &device, fits)?;
                let mrr = |e: &llm_emf::eval::Evaluation| {
                    e.domains
                        .iter()
                        .map(|(name, m)| format!("{name} {:.2}", 100.0 * m.mrr))
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut fitted = Vec::new();
                if let Some(fit) = report
                    .modality_weight_fit
                    .as_ref()
                    .filter(|_| !skip_weights)
                {
                    fitted.push(format!(
                        "modality weights (id, image, text) {:?}",
                        fit.chosen
                    ));
                }
                if let Some(fit) = report.domain_weight_fit.as_ref().filter(|_| !skip_weights) {
                    fitted.push(format!(
                        "weights (X, Y, merged) target X {:?}, target Y {:?}",
                        fit.chosen[0], fit.chosen[1]
                    ));
                }
                if let Some(fit) = report.unseen_row_fit.as_ref().filter(|_| unseen_rows) {
                    fitted.push(llm_emf::train::fit::describe_unseen_row_fit(fit));
                }
                if let Some(fit) = report.row_shrinkage_fit.as_ref().filter(|_| rows) {
                    fitted.push(format!(
                        "learned rows' prior counts (X, Y; None: whole) {:?}",
                        fit.chosen
                    ));
                }
                println!(
                    "{}: {}; valid MRR {}; test MRR {}",
                    run.display(),
                    fitted.join("; "),
                    mrr(&report.valid),
                    mrr(&report.test)
                );
            }
        }
        Command::Report {
            runs,
            out,
            reference,
            test,
        } => {
            let groups = runs
                .iter()
                .map(|r| Group::load(r))
                .collect::<Result<Vec<_>>>()?;
            let reference = reference
                .map(|label| group_index(&groups, &label))
                .transpose()?;
            let written = write_report(&groups, reference, &out)?;
            let splits: &[Split] = if test {
                &[Split::Valid, Split::Test]
            } else {
                &[Split::Valid]
            };
            for &split in splits {
                print!("{}", markdown_table(&groups, split));
                if let Some(r) = reference {
                    print!("\n{}", paired_table(&groups, r, split)?);
                }
                println!();
            }
            for p in written {
                println!("wrote {}", p.display());
            }
        }
        Command::Evaluate {
            run,
            split,
            protocol,
            seed,
            candidates,
            save_candidates,
            targets,
            device,
            json,
        } => {
            let device = backend::device(&device)?;
            let trained = TrainedRun::load(&run, &device)?;
            let candidates = match candidates {
                Some(path) => Candidates::load(&path)?,
                None => trained.candidates(
                    split.into(),
                    protocol
                        .map(Protocol::from)
                        .unwrap_or(trained.config.eval.protocol),
                    seed,
                )?,
            };
            if let Some(path) = save_candidates {
                candidates.save(&path)?;
            }
            let evaluation = match targets {
                Some(path) => {
                    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                    let mut items = std::collections::HashSet::new();
                    for (no, line) in text
                        .lines()
                        .enumerate()
                        .filter(|(_, l)| !l.trim().is_empty())
                    {
                        let id: ItemId = line.trim().parse().map_err(|e| {
                            Error::parse(&path, no + 1, format!("not an item id: {e}"))
                        })?;
                        items.insert(id);
                    }
                    trained.evaluate_targets(split.into(), &candidates, &items)?
                }
                None => trained.evaluate_with(split.into(), &candidates)?,
            };
            if json {
                print_json(&evaluation)?;
            } else {
                print!("{evaluation}");
            }
        }
        Command::Embed {
            data,
            text_encoder,
            weights,
            text_source,
            with_attributes,
            images,
            image_out,
            batch_size,
            device,
            dim,
            seed,
            quiet,
            out,
        } => {
            let request = embed_request(
                &text_encoder,
                weights,
                &text_source,
                with_attributes,
                images,
                image_out,
                batch_size,
                dim,
                seed,
                quiet,
                out,
            )?;
            let dataset = load_any(&data)?;
            let device = backend::device(&device)?;
            let outcome = embed_dataset(&dataset, &request, &device)?;
            if let Some((path, n)) = &outcome.enriched {
                println!(
                    "{}: enriched text for {n} of {} items",
                    path.display(),
                    dataset.num_items()
                );
            }
            if let Some((path, report)) = &outcome.text {
                print_report("text", path, report);
            }
            if let Some((path, report)) = &outcome.images {
                print_report("images", path, report);
            }
        }
        Command::Enrich {
            data,
            endpoint,
            model,
            out,
            concurrency,
            limit,
            template,
            temperature,
            max_tokens,
            timeout,
            retries,
            api_key_env,
            quiet,
        } => {
            let dataset = load_any(&data)?;
            let template = match template {
                Some(path) => PromptTemplate::from_file(&path)?,
                None => PromptTemplate::paper(),
            };
            if !(timeout.is_finite() && timeout > 0.0) {
                return Err(Error::Config(format!(
                    "--timeout must be positive, got {timeout}"
                )));
            }
            let mut config = ClientConfig::new(endpoint, model).with_api_key_from_env(&api_key_env);
            config.temperature = temperature;
            config.max_tokens = max_tokens;
            config.timeout = Duration::from_secs_f64(timeout);
            config.max_retries = retries;
            let client = ChatClient::new(config);
            let options = EnrichOptions {
                concurrency,
                limit,
                progress: !quiet,
                ..EnrichOptions::default()
            };
            let summary = enrich::enrich(&dataset, &template, &client, &out, &options)?;
            print!("{summary}");
            println!("output: {}", out.display());
            if let Some(why) = summary.stopped {
                return Err(Error::InvalidInput(format!(
                    "enrichment stopped early ({why}); re-run the same command to resume"
                )));
            }
        }
        Command::EnrichCheck {
            file,
            template,
            weights,
            min_usable,
        } => {
            let template = match template {
                Some(path) => PromptTemplate::from_file(&path)?,
                None => PromptTemplate::paper(),
            };
            if !file.is_file() {
                return Err(Error::InvalidInput(format!(
                    "{}: no such enrichment file",
                    file.display()
                )));
            }
            let records = enrich::read_records(&file)?;
            let counter = weights
                .map(|dir| enrich::quality::EncoderTokens::load(&dir))
                .transpose()?;
            let counter = counter
                .as_ref()
                .map(|c| c as &dyn enrich::quality::TokenCount);
            let report = enrich::quality::check(&records, &template, counter);
            print!("{report}");
            if let Some(min) = min_usable
                && report.usable_share() < min
            {
                return Err(Error::InvalidInput(format!(
                    "{}: {:.1}% of the items are usable, below the required {:.1}%",
                    file.display(),
                    100.0 * report.usable_share(),
                    100.0 * min
                )));
            }
        }
        Command::Export { run, out, device } => {
            let device = backend::device(&device)?;
            let report = TrainedRun::load(&run, &device)?.export(&out)?;
            println!(
                "model folder {}: {} items, {} files, {:.1} MB",
                report.dir.display(),
                report.items,
                report.files.len(),
                report.bytes() as f64 / 1e6
            );
        }
        Command::AddItems {
            model,
            items,
            weights,
            device,
        } => {
            let device = backend::device(&device)?;
            let catalogue = llm_emf::model_dir::read_parts(&model)?.catalogue;
            let encoder = match &weights {
                Some(w) => Some(llm_emf::features::SentenceEncoder::load(w, &device)?),
                None => None,
            };
            let new = llm_emf::recommend::read_new_items(
                &items,
                &catalogue,
                encoder
                    .as_ref()
                    .map(|e| e as &dyn llm_emf::features::TextEmbed),
            )?;
            let report = llm_emf::model_dir::add_items(&model, &new, &device)?;
            println!(
                "{} items added to {} ({} in the catalogue)",
                new.len(),
                report.dir.display(),
                report.items
            );
        }
        Command::Recommend {
            model,
            history,
            domain,
            k,
            device,
            json,
        } => {
            let device = backend::device(&device)?;
            let recommender = Recommender::load(&model, &device)?;
            let domain: DomainId = recommender.dataset().domain_by_name(&domain)?;
            let recs = recommender.recommend(&history, domain, k, Exclude::History)?;
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

/// `--preset` values ([`Preset`]).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PresetArg {
    /// The paper's model and recipe, implemented faithfully (Eq. 10 loss, fixed alpha/beta and
    /// lambdas, Adam with L2, full softmax).
    Paper,
    /// The library's general setting: fast, for any data (q = 64, IDs and whatever features
    /// are given).
    Recommended,
    /// The best measured setting for data without item titles (q = 256, IDs only).
    Ids,
    /// The best measured setting for data with item titles: title vectors in the ID rows and
    /// the rows shrunk towards them by a count chosen on validation. Needs --features-tex.
    Titles,
}

impl From<PresetArg> for Preset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Paper => Preset::Paper,
            PresetArg::Recommended => Preset::Recommended,
            PresetArg::Ids => Preset::Ids,
            PresetArg::Titles => Preset::Titles,
        }
    }
}

/// `--split` values ([`Split`]).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SplitArg {
    /// The validation split.
    Valid,
    /// The test split.
    Test,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::Valid => Split::Valid,
            SplitArg::Test => Split::Test,
        }
    }
}

/// `--protocol` values ([`Protocol`]).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ProtocolArg {
    /// 999 uniform negatives from the target domain (C2DSR, the paper).
    C2dsr,
    /// 999 negatives from the target domain that the user never interacted with (ABXI).
    Abxi,
    /// Every item of the target domain.
    Full,
}

impl From<ProtocolArg> for Protocol {
    fn from(p: ProtocolArg) -> Self {
        match p {
            ProtocolArg::C2dsr => Protocol::C2dsr,
            ProtocolArg::Abxi => Protocol::Abxi,
            ProtocolArg::Full => Protocol::Full,
        }
    }
}

/// `--batching` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BatchingArg {
    /// Length-sorted pools of 16 batches.
    Sorted,
    /// Batches of a shuffled epoch.
    Random,
}

fn main() -> ExitCode {
    backend::tune_allocator();
    // The library's events (one line per epoch, fits, early stops) on stderr, as plain lines.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .with_level(false)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
