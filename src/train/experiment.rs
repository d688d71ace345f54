//! Multi-seed experiments: one configuration trained with several seeds, each in its own run
//! folder, summarised as mean and standard deviation of every metric per domain and split.
//!
//! Folder layout of `llm-emf experiment --out DIR`:
//! - `experiment.json`: the configuration (its `train.seed` is replaced per seed) and the seeds;
//! - `seed-N/`: a run folder per seed ([`super::train`]);
//! - `summary.json`, `summary.md`: written when every seed has finished.
//!
//! Resumable: re-running the same command skips finished seeds (those with `results.json`) and
//! resumes an interrupted one from its last checkpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use super::checkpoint::RunPaths;
use super::config::{ExperimentConfig, LoadedData};
use super::trainer::{TrainOptions, TrainReport, train};
use crate::error::{Error, Result};
use crate::eval::Evaluation;
use crate::io::{read_json, write_atomic, write_json};
use crate::report::{Metric, mean_std};

/// `experiment.json`: what the folder is an experiment of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// The configuration (seed aside).
    pub config: ExperimentConfig,
    /// The seeds, in training order.
    pub seeds: Vec<u64>,
}

impl ExperimentSpec {
    /// Reads `experiment.json` at `path`; its configuration is read as a config file is: a
    /// switch removed since the experiment was written is dropped when off and refused when on
    /// ([`ExperimentConfig::load`]).
    pub fn read(path: &Path) -> Result<Self> {
        let value = super::config::read_config_json(path, Some("config"))?;
        serde_json::from_value(value).map_err(|e| Error::json(path, e))
    }
}

/// Mean and standard deviation of one metric over the seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (0 for one seed).
    pub std: f64,
}

/// `summary.json`: per split (`valid`, `test`), domain and metric, the mean and standard
/// deviation over the seeds, with the per-seed values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentSummary {
    /// The seeds summarised.
    pub seeds: Vec<u64>,
    /// `splits[split][domain][metric]`.
    pub splits: BTreeMap<String, BTreeMap<String, BTreeMap<String, Stat>>>,
    /// `per_seed[split][domain][metric]`: the values, in seed order.
    pub per_seed: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>>,
    /// Best epoch of each seed.
    pub best_epochs: Vec<usize>,
    /// Mean training throughput of each seed (sequences/s).
    pub train_sequences_per_second: Vec<f64>,
}

/// The run folder of `seed` inside an experiment folder.
pub fn seed_dir(out: &Path, seed: u64) -> PathBuf {
    out.join(format!("seed-{seed}"))
}

/// Runs (or resumes) the experiment: `config` once per seed, then writes the summary.
pub fn run_experiment(
    config: &ExperimentConfig,
    data: &LoadedData,
    seeds: &[u64],
    out: &Path,
    device: &Device,
    options: &TrainOptions,
) -> Result<ExperimentSummary> {
    if seeds.is_empty() {
        return Err(Error::Config(
            "an experiment needs at least one seed".into(),
        ));
    }
    config.validate()?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let spec = ExperimentSpec {
        config: config.clone(),
        seeds: seeds.to_vec(),
    };
    let spec_path = out.join("experiment.json");
    if spec_path.is_file() {
        let saved = ExperimentSpec::read(&spec_path)?;
        if !saved.config.same_results(&spec.config) {
            return Err(Error::Config(format!(
                "{} holds an experiment with another configuration: re-run it with its own, or choose another folder",
                out.display()
            )));
        }
        // Seeds may be added to an experiment, never dropped from it.
        if let Some(dropped) = saved.seeds.iter().find(|s| !seeds.contains(s)) {
            return Err(Error::Config(format!(
                "{} holds an experiment over seeds {:?}: the seeds given leave out seed {dropped}; give every seed it has (more may be added), or choose another folder",
                out.display(),
                saved.seeds
            )));
        }
        if saved.seeds != spec.seeds {
            write_json(&spec_path, &spec)?;
        }
    } else {
        write_json(&spec_path, &spec)?;
    }
    let mut reports = Vec::with_capacity(seeds.len());
    for &seed in seeds {
        let dir = seed_dir(out, seed);
        let results = RunPaths::new(&dir).results();
        let report: TrainReport = if results.is_file() {
            if options.verbose {
                tracing::info!("seed {seed}: finished before, skipped");
            }
            read_json(&results)?
        } else {
            if options.verbose {
                tracing::info!("seed {seed}: training in {}", dir.display());
            }
            let mut c = config.clone();
            c.train.seed = seed;
            train(&c, data, &dir, device, options)?
        };
        reports.push(report);
    }
    let summary = summarise(seeds, &reports);
    write_json(&out.join("summary.json"), &summary)?;
    write_atomic(
        &out.join("summary.md"),
        summary_markdown(config, &summary, true).as_bytes(),
    )?;
    Ok(summary)
}

/// Mean and standard deviation of every metric per split and domain over `reports`.
pub fn summarise(seeds: &[u64], reports: &[TrainReport]) -> ExperimentSummary {
    let mut per_seed: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>> =
        BTreeMap::new();
    for r in reports {
        for (split, eval) in [("valid", &r.valid), ("test", &r.test)] {
            add(&mut per_seed, split, eval);
        }
    }
    let splits = per_seed
        .iter()
        .map(|(split, domains)| {
            let d = domains
                .iter()
                .map(|(domain, metrics)| {
                    let m = metrics
                        .iter()
                        .map(|(name, v)| {
                            let (mean, std) = mean_std(v).unwrap_or((f64::NAN, f64::NAN));
                            (name.clone(), Stat { mean, std })
                        })
                        .collect();
                    (domain.clone(), m)
                })
                .collect();
            (split.clone(), d)
        })
        .collect();
    ExperimentSummary {
        seeds: seeds.to_vec(),
        splits,
        per_seed,
        best_epochs: reports.iter().map(|r| r.best_epoch).collect(),
        train_sequences_per_second: reports
            .iter()
            .map(|r| r.train_sequences_per_second)
            .collect(),
    }
}

fn add(
    into: &mut BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>>,
    split: &str,
    eval: &Evaluation,
) {
    for (domain, m) in &eval.domains {
        let slot = into
            .entry(split.to_string())
            .or_default()
            .entry(domain.clone())
            .or_default();
        for metric in Metric::ALL {
            slot.entry(metric.name().to_string())
                .or_default()
                .push(metric.of(m));
        }
    }
}

/// The summary as a markdown table (metrics in %): the validation rows, then, with
/// `with_test`, the test rows.
pub fn summary_markdown(
    config: &ExperimentConfig,
    s: &ExperimentSummary,
    with_test: bool,
) -> String {
    let mut out = format!(
        "# Experiment summary\n\nPreset `{}`, protocol {}, seeds {:?} (best epochs {:?}). Metrics in %, mean ± sample std over seeds.\n\n",
        config.preset, config.eval.protocol, s.seeds, s.best_epochs
    );
    out.push_str("| split | domain |");
    for m in Metric::ALL {
        out.push_str(&format!(" {} |", m.name()));
    }
    out.push_str("\n| --- | --- |");
    out.push_str(&" --- |".repeat(Metric::ALL.len()));
    out.push('\n');
    let splits: &[&str] = if with_test {
        &["valid", "test"]
    } else {
        &["valid"]
    };
    for &split in splits {
        let Some(domains) = s.splits.get(split) else {
            continue;
        };
        for (domain, metrics) in domains {
            out.push_str(&format!("| {split} | {domain} |"));
            for m in Metric::ALL {
                match metrics.get(m.name()) {
                    Some(st) => out.push_str(&format!(
                        " {:.2} ± {:.2} |",
                        100.0 * st.mean,
                        100.0 * st.std
                    )),
                    None => out.push_str(" - |"),
                }
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::ExperimentSpec;
    use crate::train::{ExperimentConfig, Preset};

    #[test]
    fn an_experiment_written_before_a_switch_was_removed_reads_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("experiment.json");
        let titles = ExperimentConfig::preset(Preset::Titles);
        // As an older build wrote it: the removed switch off, the values over another preset.
        let write = |item_bias: bool| {
            let mut config = serde_json::to_value(&titles).unwrap();
            config["model"]["item_bias"] = item_bias.into();
            config["preset"] = serde_json::to_value(Preset::Recommended).unwrap();
            let spec = serde_json::json!({"config": config, "seeds": [1, 2]});
            std::fs::write(&path, spec.to_string()).unwrap();
        };
        write(false);
        let spec = ExperimentSpec::read(&path).unwrap();
        assert_eq!(spec.seeds, [1, 2]);
        assert!(spec.config.same_results(&titles));
        assert!(
            !spec
                .config
                .same_results(&ExperimentConfig::preset(Preset::Ids))
        );
        write(true);
        let err = ExperimentSpec::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("model.item_bias was removed") && err.contains("experiment.json"),
            "{err}"
        );
    }
}
