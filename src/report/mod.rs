//! Results one can see, for one or more run folders or groups of run folders: markdown tables
//! of the validation and test metrics (mean ± standard deviation over the runs of a group,
//! validation first: it is what choices are made on), and SVG charts ([`charts`]) of the
//! training loss and validation MRR per epoch (one curve per group: the mean over its seeds
//! with a band for their spread), the test metrics per model and domain, and, against a
//! reference group, the paired per-seed differences.
//!
//! A *run* is a folder written by [`crate::train::train`] (`log.jsonl`, `results.json`), or
//! one kept without its log (`results.json` and `config.json`, as `docs/experiments/` keeps
//! runs whose folders are gone): it counts in the tables and has no curve. A *group* is a
//! run, or a folder whose sub-folders are runs (the seeds of an experiment); its label is the
//! folder's name unless given as `LABEL=PATH`.

use std::path::{Path, PathBuf};

use crate::data::Split;
use crate::error::{Error, Result};
use crate::eval::Evaluation;
use crate::io::read_text;
use crate::train::{EpochLog, RunPaths, TrainReport};

#[cfg(feature = "report")]
pub mod charts;
mod tables;
#[cfg(test)]
mod tests;

pub use tables::{difference_table, markdown_table, paired_table, popularity_table};

/// One finished run: its per-epoch log and its results.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The run folder.
    pub path: PathBuf,
    /// `log.jsonl`, one entry per epoch; empty for a run kept without its log (its results
    /// count in every table; it has no curve).
    pub log: Vec<EpochLog>,
    /// `results.json`.
    pub results: TrainReport,
    /// The training seed (`train.seed` of the run's `config.json`); `None` when the folder
    /// has no `config.json`. Runs of two groups are paired by it.
    pub seed: Option<u64>,
}

/// Runs of one model (one run, or several seeds).
#[derive(Debug, Clone)]
pub struct Group {
    /// The label shown in tables and legends.
    pub label: String,
    /// Its runs.
    pub runs: Vec<RunRecord>,
}

impl RunRecord {
    /// Reads a run folder; errors name the missing or malformed file (and line).
    pub fn load(path: &Path) -> Result<Self> {
        let paths = RunPaths::new(path);
        let results: TrainReport = crate::io::read_json(&paths.results()).map_err(|e| {
            Error::InvalidInput(format!(
                "{}: not a finished run ({e}); train it to the end first",
                path.display()
            ))
        })?;
        // An archived run (results and config kept, training log not) loads without curves.
        let log_path = paths.log();
        let text = if log_path.exists() {
            read_text(&log_path)?
        } else {
            String::new()
        };
        let mut log = Vec::new();
        for (no, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            log.push(serde_json::from_str(line).map_err(|e| {
                Error::InvalidInput(format!("{}:{}: {e}", log_path.display(), no + 1))
            })?);
        }
        let config = paths.config();
        let seed = if config.is_file() {
            let value: serde_json::Value = crate::io::read_json(&config)?;
            Some(
                value
                    .pointer("/train/seed")
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(|| {
                        Error::InvalidInput(format!(
                            "{}: no train.seed (a non-negative integer)",
                            config.display()
                        ))
                    })?,
            )
        } else {
            None
        };
        Ok(Self {
            path: path.to_path_buf(),
            log,
            results,
            seed,
        })
    }

    /// The run's evaluation of `split`.
    pub fn evaluation(&self, split: Split) -> &Evaluation {
        match split {
            Split::Valid => &self.results.valid,
            Split::Test => &self.results.test,
        }
    }
}

impl Group {
    /// Reads `LABEL=PATH` or `PATH`: a run folder, or a folder of run folders (sorted by name).
    pub fn load(spec: &str) -> Result<Self> {
        let (label, path) = match spec.split_once('=') {
            Some((l, p)) if !l.is_empty() => (Some(l.to_string()), PathBuf::from(p)),
            _ => (None, PathBuf::from(spec)),
        };
        if !path.is_dir() {
            return Err(Error::InvalidInput(format!(
                "{}: no such run or experiment folder",
                path.display()
            )));
        }
        let label = label.unwrap_or_else(|| {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string())
        });
        let runs = if RunPaths::new(&path).results().is_file() {
            vec![RunRecord::load(&path)?]
        } else {
            let mut dirs: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| Error::io(&path, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| RunPaths::new(p).results().is_file())
                .collect();
            dirs.sort();
            dirs.iter()
                .map(|p| RunRecord::load(p))
                .collect::<Result<Vec<_>>>()?
        };
        if runs.is_empty() {
            return Err(Error::InvalidInput(format!(
                "{}: holds no finished run (no results.json in it or in its sub-folders)",
                path.display()
            )));
        }
        Ok(Self { label, runs })
    }

    /// Mean and standard deviation (sample, 0 for one run) of a metric of `split` in a
    /// domain.
    pub fn stat(&self, split: Split, domain: &str, metric: Metric) -> Option<(f64, f64)> {
        let values: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| {
                r.evaluation(split)
                    .domains
                    .get(domain)
                    .map(|m| metric.of(m))
            })
            .collect();
        mean_std(&values)
    }

    /// The domain names of the group's test results.
    pub fn domains(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .runs
            .iter()
            .flat_map(|r| r.results.test.domains.keys().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// A ranking metric of [`crate::eval::metrics::DomainMetrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// MRR.
    Mrr,
    /// NDCG@5.
    Ndcg5,
    /// NDCG@10.
    Ndcg10,
    /// HR@1.
    Hr1,
    /// HR@5.
    Hr5,
    /// HR@10.
    Hr10,
}

impl Metric {
    /// Every metric, in table order.
    pub const ALL: [Metric; 6] = [
        Metric::Mrr,
        Metric::Ndcg5,
        Metric::Ndcg10,
        Metric::Hr1,
        Metric::Hr5,
        Metric::Hr10,
    ];

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Mrr => "MRR",
            Metric::Ndcg5 => "NDCG@5",
            Metric::Ndcg10 => "NDCG@10",
            Metric::Hr1 => "HR@1",
            Metric::Hr5 => "HR@5",
            Metric::Hr10 => "HR@10",
        }
    }

    /// Its value in `m`.
    pub fn of(self, m: &crate::eval::metrics::DomainMetrics) -> f64 {
        match self {
            Metric::Mrr => m.mrr,
            Metric::Ndcg5 => m.ndcg5,
            Metric::Ndcg10 => m.ndcg10,
            Metric::Hr1 => m.hr1,
            Metric::Hr5 => m.hr5,
            Metric::Hr10 => m.hr10,
        }
    }
}

/// Mean and sample standard deviation; `None` for no values.
pub fn mean_std(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    Some((mean, var.sqrt()))
}

/// The domain names of every group's test results, sorted, each once.
pub(crate) fn all_domains(groups: &[Group]) -> Vec<String> {
    let mut domains: Vec<String> = groups.iter().flat_map(Group::domains).collect();
    domains.sort();
    domains.dedup();
    domains
}

/// The index of the group labelled `label`; the error lists the labels there are.
pub fn group_index(groups: &[Group], label: &str) -> Result<usize> {
    groups.iter().position(|g| g.label == label).ok_or_else(|| {
        let labels: Vec<&str> = groups.iter().map(|g| g.label.as_str()).collect();
        Error::InvalidInput(format!(
            "no group labelled {label:?} to compare against (the groups: {})",
            labels.join(", ")
        ))
    })
}

/// Writes `report.md` (the validation table, then the test table; with a `reference`, an index
/// into `groups`, the [`paired_table`]s and [`difference_table`]s against it on both splits),
/// `loss.svg`, `valid_mrr.svg`, `test_metrics.svg` and, with a reference, `paired.svg` into
/// `out_dir`; returns their paths. Every file is written whole or not at all, and everything
/// that can fail on the inputs is checked before the first one is written.
#[cfg(feature = "report")]
pub fn write_report(
    groups: &[Group],
    reference: Option<usize>,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    if groups.is_empty() {
        return Err(Error::InvalidInput("no run to report".into()));
    }
    let paired = match reference {
        Some(r) => format!(
            "\n{}\n{}\n{}\n{}",
            paired_table(groups, r, Split::Valid)?,
            difference_table(groups, r, Split::Valid)?,
            paired_table(groups, r, Split::Test)?,
            difference_table(groups, r, Split::Test)?
        ),
        None => String::new(),
    };
    let popularity = [Split::Valid, Split::Test]
        .into_iter()
        .filter_map(|s| popularity_table(groups, s))
        .map(|t| format!("\n{t}"))
        .collect::<String>();
    let without_log: Vec<String> = groups
        .iter()
        .flat_map(|g| &g.runs)
        .filter(|r| r.log.is_empty())
        .map(|r| format!("`{}`", r.path.display()))
        .collect();
    let without_log = if without_log.is_empty() {
        String::new()
    } else {
        format!(
            "\nRuns without a training log (in the tables, not in the curves): {}.\n",
            without_log.join(", ")
        )
    };
    let mut charts = vec![
        ("loss.svg", "training loss", charts::loss_chart(groups)?),
        (
            "valid_mrr.svg",
            "validation MRR",
            charts::valid_chart(groups)?,
        ),
        (
            "test_metrics.svg",
            "test metrics",
            charts::metrics_chart(groups, Split::Test)?,
        ),
    ];
    if let Some(r) = reference {
        charts.push((
            "paired.svg",
            "paired differences",
            charts::paired_chart(groups, r, Split::Test)?,
        ));
    }
    let images: String = charts
        .iter()
        .map(|(file, alt, _)| format!("\n![{alt}]({file})\n"))
        .collect();
    let md = format!(
        "# Report\n\n{}\n{}{paired}{popularity}{without_log}{images}",
        markdown_table(groups, Split::Valid),
        markdown_table(groups, Split::Test),
    );
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut written = Vec::new();
    for (name, text) in
        std::iter::once(("report.md", md)).chain(charts.into_iter().map(|(f, _, svg)| (f, svg)))
    {
        let path = out_dir.join(name);
        crate::io::write_atomic(&path, text.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
