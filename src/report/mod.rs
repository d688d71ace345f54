//! Results one can see: a markdown table of test metrics (mean ± standard deviation over the
//! runs of a group) and SVG charts of training loss, validation MRR per epoch and the test
//! metrics per model and domain, for one or more run folders or groups of run folders.
//!
//! A *run* is a folder written by [`crate::train::train`] (`log.jsonl`, `results.json`), or
//! one kept without its log (`results.json` and `config.json`, as `docs/experiments/` keeps
//! runs whose folders are gone): it counts in the tables and has no curve. A *group* is a
//! run, or a folder whose sub-folders are runs (the seeds of an experiment); its label is the
//! folder's name unless given as `LABEL=PATH`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::io::{read_text, write_atomic};
use crate::train::{EpochLog, RunPaths, TrainReport};

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

    /// Mean and standard deviation (sample, 0 for one run) of a test metric in a domain.
    pub fn test_stat(&self, domain: &str, metric: Metric) -> Option<(f64, f64)> {
        let values: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| r.results.test.domains.get(domain).map(|m| metric.of(m)))
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
fn all_domains(groups: &[Group]) -> Vec<String> {
    let mut domains: Vec<String> = groups.iter().flat_map(Group::domains).collect();
    domains.sort();
    domains.dedup();
    domains
}

/// A markdown table's header and separator lines: the `lead` columns, then `columns`.
fn table_header(lead: &[&str], columns: impl Iterator<Item = String>) -> String {
    let names: Vec<String> = lead.iter().map(|c| c.to_string()).chain(columns).collect();
    format!(
        "| {} |\n|{}\n",
        names.join(" | "),
        " --- |".repeat(names.len())
    )
}

/// The markdown table of test metrics (in %), one row per group and domain.
pub fn markdown_table(groups: &[Group]) -> String {
    let mut out = String::new();
    let first = groups.first().and_then(|g| g.runs.first());
    if let Some(r) = first {
        out.push_str(&format!(
            "Test split, {} protocol, metrics in % (mean ± std over runs).\n\n",
            r.results.test.protocol
        ));
    }
    out.push_str(&table_header(
        &["model", "domain", "runs"],
        Metric::ALL.iter().map(|m| m.name().to_string()),
    ));
    let domains = all_domains(groups);
    for d in &domains {
        for g in groups {
            out.push_str(&format!("| {} | {d} | {} |", g.label, g.runs.len()));
            for m in Metric::ALL {
                let cell = match g.test_stat(d, m) {
                    Some((mean, _)) if g.runs.len() == 1 => format!("{:.2}", 100.0 * mean),
                    Some((mean, std)) => format!("{:.2} ± {:.2}", 100.0 * mean, 100.0 * std),
                    None => "-".into(),
                };
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
    }
    out
}

/// The markdown table of test MRR (in %) by the target's training interactions
/// ([`crate::eval::PopularitySlice`]), one row per group and domain, the mean over the group's
/// runs with the number of examples; `None` when no run has these slices (results written
/// before they existed). Groups or domains without them are left out.
pub fn popularity_table(groups: &[Group]) -> Option<String> {
    let slices_of = |r: &RunRecord, d: &str| r.results.test.popularity.get(d).cloned();
    let labels: Vec<String> = groups
        .iter()
        .flat_map(|g| &g.runs)
        .flat_map(|r| r.results.test.popularity.values())
        .next()?
        .iter()
        .map(crate::eval::PopularitySlice::label)
        .collect();
    let mut out =
        String::from("Test MRR in % (examples) by the target's interactions in training.\n\n");
    out.push_str(&table_header(&["model", "domain"], labels.iter().cloned()));
    let domains = all_domains(groups);
    for d in &domains {
        for g in groups {
            let per_run: Vec<_> = g.runs.iter().filter_map(|r| slices_of(r, d)).collect();
            if per_run.len() != g.runs.len() || per_run.iter().any(|s| s.len() != labels.len()) {
                continue;
            }
            out.push_str(&format!("| {} | {d} |", g.label));
            for k in 0..labels.len() {
                let mrrs: Vec<f64> = per_run.iter().map(|s| s[k].metrics.mrr).collect();
                let (mean, _) = mean_std(&mrrs)?;
                out.push_str(&format!(
                    " {:.2} ({}) |",
                    100.0 * mean,
                    per_run[0][k].metrics.n
                ));
            }
            out.push('\n');
        }
    }
    Some(out)
}

/// The markdown table of paired differences against the group `reference` (an index into
/// `groups`): for every other group and domain, the runs of the two groups are matched by
/// training seed, and each test metric shows the mean ± standard deviation of the per-seed
/// differences (in % points) and on how many of the paired seeds the group is above the
/// reference. Seeds differ more from one another than the groups often do, so a paired
/// difference over the same seeds shows an effect that the two groups' own means ± std hide.
/// Errors: a group with two runs of one seed (the pairing would be ambiguous).
pub fn paired_table(groups: &[Group], reference: usize) -> Result<String> {
    let by_seed = |g: &Group| -> Result<BTreeMap<u64, usize>> {
        let mut map = BTreeMap::new();
        for (i, r) in g.runs.iter().enumerate() {
            if let Some(seed) = r.seed
                && let Some(j) = map.insert(seed, i)
            {
                return Err(Error::InvalidInput(format!(
                    "{}: two runs of seed {seed} ({} and {}), so its runs cannot be paired with another group's by seed",
                    g.label,
                    g.runs[j].path.display(),
                    r.path.display()
                )));
            }
        }
        Ok(map)
    };
    let base = groups.get(reference).ok_or_else(|| {
        Error::InvalidInput(format!(
            "reference {reference} out of range ({} groups)",
            groups.len()
        ))
    })?;
    let seeds_of = groups.iter().map(by_seed).collect::<Result<Vec<_>>>()?;
    let base_seeds = &seeds_of[reference];
    let mut out = format!(
        "Paired differences against {}: test metric of the same training seed minus the reference's, in % points (mean ± std over the paired seeds; in brackets, on how many of them the row is above).\n\n",
        base.label
    );
    out.push_str(&table_header(
        &["model", "domain", "paired seeds"],
        Metric::ALL.iter().map(|m| m.name().to_string()),
    ));
    let domains = all_domains(groups);
    for d in &domains {
        for (gi, g) in groups.iter().enumerate() {
            if gi == reference {
                continue;
            }
            let pairs: Vec<(&RunRecord, &RunRecord)> = seeds_of[gi]
                .iter()
                .filter_map(|(s, &i)| base_seeds.get(s).map(|&j| (&g.runs[i], &base.runs[j])))
                .filter(|(a, b)| {
                    a.results.test.domains.contains_key(d) && b.results.test.domains.contains_key(d)
                })
                .collect();
            out.push_str(&format!("| {} | {d} | {} |", g.label, pairs.len()));
            for m in Metric::ALL {
                let diffs: Vec<f64> = pairs
                    .iter()
                    .map(|(a, b)| {
                        100.0
                            * (m.of(&a.results.test.domains[d]) - m.of(&b.results.test.domains[d]))
                    })
                    .collect();
                let cell = match mean_std(&diffs) {
                    Some((mean, std)) => format!(
                        "{mean:+.2} ± {std:.2} ({}/{})",
                        diffs.iter().filter(|&&x| x > 0.0).count(),
                        diffs.len()
                    ),
                    None => "-".into(),
                };
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
    }
    Ok(out)
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

/// Writes `report.md`, `loss.svg`, `valid_mrr.svg` and `test_metrics.svg` into `out_dir`;
/// returns their paths. With a `reference` (an index into `groups`), `report.md` also holds
/// the [`paired_table`] against it.
pub fn write_report(
    groups: &[Group],
    reference: Option<usize>,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    if groups.is_empty() {
        return Err(Error::InvalidInput("no run to report".into()));
    }
    // Everything that can fail on the inputs runs before the first file is written.
    let paired = reference
        .map(|r| paired_table(groups, r))
        .transpose()?
        .map(|t| format!("\n{t}"))
        .unwrap_or_default();
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, e))?;
    let mut written = Vec::new();
    let mut put = |name: &str, text: String| -> Result<()> {
        let path = out_dir.join(name);
        write_atomic(&path, text.as_bytes())?;
        written.push(path);
        Ok(())
    };
    let popularity = popularity_table(groups)
        .map(|t| format!("\n{t}"))
        .unwrap_or_default();
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
    let md = format!(
        "# Report\n\n{}{paired}{popularity}{without_log}\n![training loss](loss.svg)\n\n![validation MRR](valid_mrr.svg)\n\n![test metrics](test_metrics.svg)\n",
        markdown_table(groups)
    );
    put("report.md", md)?;
    put("loss.svg", loss_chart(groups)?)?;
    put("valid_mrr.svg", valid_chart(groups)?)?;
    put("test_metrics.svg", bar_chart(groups)?)?;
    Ok(written)
}

fn chart_error<E: std::fmt::Debug>(e: E) -> Error {
    Error::InvalidInput(format!("drawing a chart: {e:?}"))
}

/// One line per run: `(label, points)`.
type Lines = Vec<(String, Vec<(f64, f64)>)>;

fn run_label(g: &Group, i: usize) -> String {
    if g.runs.len() == 1 {
        g.label.clone()
    } else {
        let name = g.runs[i]
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{}", i + 1));
        format!("{} / {name}", g.label)
    }
}

fn color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    PALETTE[i % PALETTE.len()]
}

fn loss_chart(groups: &[Group]) -> Result<String> {
    let mut lines: Lines = Vec::new();
    for g in groups {
        for (i, r) in g.runs.iter().enumerate() {
            let pts = r.log.iter().map(|l| (l.epoch as f64, l.loss)).collect();
            lines.push((run_label(g, i), pts));
        }
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        draw_lines(&root, "Training loss per epoch", "loss", &lines)?;
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

fn valid_chart(groups: &[Group]) -> Result<String> {
    let domains = all_domains(groups);
    let mut svg = String::new();
    {
        let width = 520 * domains.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (width, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let panels = root.split_evenly((1, domains.len().max(1)));
        for (panel, d) in panels.iter().zip(&domains) {
            let mut lines: Lines = Vec::new();
            for g in groups {
                for (i, r) in g.runs.iter().enumerate() {
                    let pts = r
                        .log
                        .iter()
                        .filter_map(|l| {
                            let v = l.valid.as_ref()?.domains.get(d)?;
                            Some((l.epoch as f64, 100.0 * v.mrr))
                        })
                        .collect();
                    lines.push((run_label(g, i), pts));
                }
            }
            draw_lines(panel, &format!("Validation MRR, {d}"), "MRR (%)", &lines)?;
        }
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_desc: &str,
    lines: &Lines,
) -> Result<()> {
    let all = lines.iter().flat_map(|(_, p)| p.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in all {
        if y.is_finite() {
            x_max = x_max.max(x);
            y_min = y_min.min(y);
            y_max = y_max.max(y);
        }
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(1f64..x_max.max(2.0), (y_min - pad)..(y_max + pad))
        .map_err(chart_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(chart_error)?;
    for (i, (label, pts)) in lines.iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(chart_error)?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 2, c.filled())))
            .map_err(chart_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(chart_error)?;
    Ok(())
}

/// Grouped bars: one cluster per (domain, metric), one bar per group, with ± std whiskers.
fn bar_chart(groups: &[Group]) -> Result<String> {
    let metrics = [Metric::Mrr, Metric::Ndcg10, Metric::Hr10];
    let domains = all_domains(groups);
    let clusters: Vec<(String, Metric)> = domains
        .iter()
        .flat_map(|d| metrics.iter().map(move |&m| (d.clone(), m)))
        .collect();
    let mut values: BTreeMap<(usize, usize), (f64, f64)> = BTreeMap::new();
    let mut top = 1.0f64;
    for (c, (d, m)) in clusters.iter().enumerate() {
        for (g, group) in groups.iter().enumerate() {
            if let Some((mean, std)) = group.test_stat(d, *m) {
                values.insert((c, g), (100.0 * mean, 100.0 * std));
                top = top.max(100.0 * (mean + std));
            }
        }
    }
    let mut svg = String::new();
    {
        let width = (140 * clusters.len().max(1) as u32).max(600);
        let root = SVGBackend::with_string(&mut svg, (width, 440)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let n = clusters.len().max(1) as f64;
        let low = -top * 0.09;
        let mut chart = ChartBuilder::on(&root)
            .caption("Test metrics by model and domain", ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(10)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n, low..top * 1.25)
            .map_err(chart_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("%")
            .y_label_formatter(&|v| {
                if *v < 0.0 {
                    String::new()
                } else {
                    format!("{v:.0}")
                }
            })
            .draw()
            .map_err(chart_error)?;
        let slot = 0.8 / groups.len().max(1) as f64;
        for (g, group) in groups.iter().enumerate() {
            let c = color(g);
            let bars: Vec<_> = values
                .iter()
                .filter(|((_, gg), _)| *gg == g)
                .map(|(&(ci, _), &(mean, _))| {
                    let x0 = ci as f64 + 0.1 + g as f64 * slot;
                    Rectangle::new([(x0, 0.0), (x0 + slot * 0.92, mean)], c.filled())
                })
                .collect();
            chart
                .draw_series(bars)
                .map_err(chart_error)?
                .label(group.label.as_str())
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
            let whiskers: Vec<_> = values
                .iter()
                .filter(|((_, gg), (_, std))| *gg == g && *std > 0.0)
                .map(|(&(ci, _), &(mean, std))| {
                    let x = ci as f64 + 0.1 + (g as f64 + 0.46) * slot;
                    PathElement::new(
                        vec![(x, mean - std), (x, mean + std)],
                        BLACK.stroke_width(1),
                    )
                })
                .collect();
            chart.draw_series(whiskers).map_err(chart_error)?;
        }
        let labels: Vec<_> = clusters
            .iter()
            .enumerate()
            .map(|(c, (d, m))| {
                Text::new(
                    format!("{d} {}", m.name()),
                    (c as f64 + 0.12, low * 0.45),
                    ("sans-serif", 13),
                )
            })
            .collect();
        chart.draw_series(labels).map_err(chart_error)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(chart_error)?;
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A run of `seed` whose test MRR in domain X is `mrr` (every other metric `mrr / 2`).
    fn run(name: &str, seed: Option<u64>, mrr: f64) -> RunRecord {
        let metrics = json!({"mrr": mrr, "ndcg5": mrr / 2.0, "ndcg10": mrr / 2.0, "hr1": mrr / 2.0,
            "hr5": mrr / 2.0, "hr10": mrr / 2.0, "n": 10});
        let eval = |split: &str| {
            json!({"protocol": "abxi", "split": split, "seed": 1, "domains": {"X": metrics},
                "examples_per_second": 1.0})
        };
        let results = json!({"epochs": 1, "best_epoch": 1, "stopped_early": false,
            "valid": eval("valid"), "test": eval("test"), "train_sequences_per_second": 1.0,
            "parameters": 1});
        RunRecord {
            path: PathBuf::from(name),
            log: Vec::new(),
            results: serde_json::from_value(results).unwrap(),
            seed,
        }
    }

    fn group(label: &str, runs: Vec<RunRecord>) -> Group {
        Group {
            label: label.into(),
            runs,
        }
    }

    #[test]
    fn paired_differences_match_runs_by_seed() {
        let reference = group(
            "ref",
            vec![
                run("r1", Some(1), 0.10),
                run("r2", Some(2), 0.20),
                run("r3", Some(3), 0.30),
            ],
        );
        // Seeds 2 and 3 in another order, seed 9 without a partner.
        let other = group(
            "new",
            vec![
                run("n3", Some(3), 0.33),
                run("n9", Some(9), 0.90),
                run("n2", Some(2), 0.19),
            ],
        );
        let lone = group("lone", vec![run("l", None, 0.5)]);
        let table = paired_table(&[reference, other, lone], 0).unwrap();
        assert!(table.contains("against ref"), "{table}");
        // Differences +3 and -1 points: mean +1, sample std sqrt(8) = 2.83, above on 1 of 2.
        assert!(
            table.contains("| new | X | 2 | +1.00 ± 2.83 (1/2) | +0.50 ± 1.41 (1/2) |"),
            "{table}"
        );
        assert!(table.contains("| lone | X | 0 | - |"), "{table}");
        assert!(!table.contains("| ref |"), "{table}");
    }

    #[test]
    fn a_run_kept_without_its_log_counts_in_the_tables_and_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("exp");
        let kept = run("kept", Some(4), 0.25);
        for (seed, with_log) in [(4u64, false), (5, true)] {
            let run_dir = folder.join(format!("seed-{seed}"));
            std::fs::create_dir_all(&run_dir).unwrap();
            let results = serde_json::to_string(&kept.results).unwrap();
            std::fs::write(run_dir.join("results.json"), results).unwrap();
            let config = json!({"train": {"seed": seed}}).to_string();
            std::fs::write(run_dir.join("config.json"), config).unwrap();
            if with_log {
                let line = json!({"epoch": 1, "loss": 2.5, "train_seconds": 1.0,
                    "train_sequences_per_second": 1.0, "best": true, "temperatures": [1.0, 1.0, 1.0]});
                std::fs::write(run_dir.join("log.jsonl"), format!("{line}\n")).unwrap();
            }
        }
        let g = Group::load(&format!("exp={}", folder.display())).unwrap();
        assert_eq!(g.runs.len(), 2);
        assert_eq!((g.runs[0].seed, g.runs[0].log.len()), (Some(4), 0));
        assert_eq!((g.runs[1].seed, g.runs[1].log.len()), (Some(5), 1));
        let out = dir.path().join("report");
        write_report(&[g], None, &out).unwrap();
        let md = std::fs::read_to_string(out.join("report.md")).unwrap();
        let line = md
            .lines()
            .find(|l| l.starts_with("Runs without a training log"))
            .unwrap_or_else(|| panic!("{md}"));
        assert!(
            line.contains("seed-4") && !line.contains("seed-5"),
            "{line}"
        );
        // A log that is there but malformed is still an error naming the file and line.
        std::fs::write(folder.join("seed-4/log.jsonl"), "\nnot json\n").unwrap();
        let e = Group::load(folder.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("seed-4/log.jsonl:2"), "{e}");
    }

    #[test]
    fn two_runs_of_one_seed_cannot_be_paired() {
        let reference = group("ref", vec![run("r1", Some(1), 0.1)]);
        let twice = group(
            "twice",
            vec![run("a", Some(1), 0.1), run("b", Some(1), 0.2)],
        );
        let e = paired_table(&[reference, twice], 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("twice") && e.contains("seed 1") && e.contains('b'),
            "{e}"
        );
        let groups = [group("a", vec![run("x", Some(1), 0.1)])];
        let e = group_index(&groups, "b").unwrap_err().to_string();
        assert!(e.contains("\"b\"") && e.contains("the groups: a"), "{e}");
    }
}
