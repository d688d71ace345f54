//! The `llm-emf` command-line tool.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use llm_emf::data::{Candidates, DomainId, ItemId, Protocol, Split, load_dataset};
use llm_emf::enrich::{self, ChatClient, ClientConfig, EnrichOptions, PromptTemplate};
use llm_emf::features::{EmbedReport, EmbedRequest, TextEncoderKind, TextSource, embed_dataset};
use llm_emf::recommend::{Exclude, Recommender, TrainedRun};
use llm_emf::report::{
    Group, difference_table, group_index, markdown_table, paired_table, write_report,
};
use llm_emf::train::experiment::{run_experiment, summary_markdown};
use llm_emf::train::{DataSource, TrainOptions, archive_experiment, train};
use llm_emf::{Error, Result, backend};
use serde_json::json;

mod args;

use args::{Cli, Command, data_source};

/// The progress bar on a terminal; otherwise (logs of CI or a server) one line per epoch;
/// nothing with `--quiet`.
fn train_options(quiet: bool, profile: bool) -> TrainOptions {
    TrainOptions {
        progress: !quiet && std::io::stderr().is_terminal(),
        verbose: !quiet,
        profile,
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

/// The validation MRR of a refitted or rescored run, and its test MRR when `test` asks for it
/// (the test metrics are in its results.json either way).
fn valid_test_line(report: &llm_emf::train::TrainReport, test: bool) -> String {
    if test {
        format!(
            "valid MRR {}; test MRR {}",
            mrr_line(&report.valid),
            mrr_line(&report.test)
        )
    } else {
        format!(
            "valid MRR {} (test metrics in results.json; --test prints them)",
            mrr_line(&report.valid)
        )
    }
}

/// Each domain's MRR of an evaluation, in %, on one line: "Food 18.84, Kitchen 13.47".
fn mrr_line(e: &llm_emf::eval::Evaluation) -> String {
    e.domains
        .iter()
        .map(|(name, m)| format!("{name} {:.2}", 100.0 * m.mrr))
        .collect::<Vec<_>>()
        .join(", ")
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
        Command::Rescore { runs, test, device } => {
            let device = backend::device(&device)?;
            for run in runs {
                let report = llm_emf::train::rescore_run(&run, &device)?;
                println!("{}: {}", run.display(), valid_test_line(&report, test));
            }
        }
        Command::FitWeights {
            runs,
            rows,
            unseen_rows,
            skip_weights,
            test,
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
                    "{}: {}; {}",
                    run.display(),
                    fitted.join("; "),
                    valid_test_line(&report, test)
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
                    print!("\n{}", difference_table(&groups, r, split)?);
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
            frequency_penalty,
            timeout,
            retries,
            api_key_env,
            redo_unusable,
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
            if let Some(p) = frequency_penalty
                && !(-2.0..=2.0).contains(&p)
            {
                return Err(Error::Config(format!(
                    "--frequency-penalty must be between -2 and 2, got {p}"
                )));
            }
            config.frequency_penalty = frequency_penalty;
            config.timeout = Duration::from_secs_f64(timeout);
            config.max_retries = retries;
            let client = ChatClient::new(config);
            let options = EnrichOptions {
                concurrency,
                limit,
                progress: !quiet,
                redo_unusable,
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
