//! SVG charts of finished runs, drawn for reading rather than decoration:
//!
//! - per-epoch curves ([`loss_chart`], [`valid_chart`]) draw one curve per group, the mean over
//!   the group's seeds that logged the epoch, with a band from the lowest to the highest seed;
//! - [`metrics_chart`] draws each (domain, metric) in its own panel, a dot per group at the mean
//!   with a ± std whisker, on an axis fitted to the values (not from zero, where one-point
//!   differences would vanish);
//! - [`paired_chart`] draws the per-seed differences against a reference group, with the zero
//!   line, where the differences are the story.
//!
//! Each group keeps one colour in every chart (its index in the list), and the legend sits
//! beside the panels, never over the data.

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{Group, Metric, all_domains, mean_std, tables};
use crate::data::Split;
use crate::error::{Error, Result};
use crate::train::EpochLog;

/// The metrics of the per-metric panels.
const PANEL_METRICS: [Metric; 4] = [Metric::Mrr, Metric::Ndcg10, Metric::Hr5, Metric::Hr10];

/// Width of the legend column, in pixels.
const LEGEND_WIDTH: u32 = 230;

fn chart_error<E: std::fmt::Debug>(e: E) -> Error {
    Error::InvalidInput(format!("drawing a chart: {e:?}"))
}

/// Ten colours that stay apart on screen and in print (matplotlib's `tab10`).
fn color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 10] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
    ];
    PALETTE[i % PALETTE.len()]
}

/// One group's curve: per epoch, the mean, lowest and highest value over its runs.
struct Curve {
    group: usize,
    points: Vec<(f64, f64, f64, f64)>,
}

fn curves(groups: &[Group], value: impl Fn(&EpochLog) -> Option<f64>) -> Vec<Curve> {
    groups
        .iter()
        .enumerate()
        .map(|(group, g)| {
            let mut by_epoch: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
            for r in &g.runs {
                for l in &r.log {
                    if let Some(v) = value(l).filter(|v| v.is_finite()) {
                        by_epoch.entry(l.epoch).or_default().push(v);
                    }
                }
            }
            let points = by_epoch
                .into_iter()
                .map(|(epoch, vs)| {
                    let mean = vs.iter().sum::<f64>() / vs.len() as f64;
                    let lo = vs.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = vs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (epoch as f64, mean, lo, hi)
                })
                .collect();
            Curve { group, points }
        })
        .collect()
}

/// The legend column: a swatch and the label of each group, and a note on what is drawn.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    groups: &[Group],
    shown: &[usize],
    note: &str,
) -> Result<()> {
    let mut y = 40;
    for &g in shown {
        let c = color(g);
        area.draw(&Rectangle::new([(8, y - 6), (26, y + 6)], c.filled()))
            .map_err(chart_error)?;
        let runs = groups[g].runs.len();
        let label = format!(
            "{} ({runs} run{})",
            groups[g].label,
            if runs == 1 { "" } else { "s" }
        );
        area.draw(&Text::new(label, (32, y - 8), ("sans-serif", 14)))
            .map_err(chart_error)?;
        y += 24;
    }
    for (i, line) in note.lines().enumerate() {
        area.draw(&Text::new(
            line.to_string(),
            (8, y + 10 + 18 * i as i32),
            ("sans-serif", 12).into_font().color(&BLACK.mix(0.65)),
        ))
        .map_err(chart_error)?;
    }
    Ok(())
}

/// Pads a value range so that points do not sit on the frame (and an empty or flat range
/// still draws).
fn padded(lo: f64, hi: f64, min_span: f64) -> (f64, f64) {
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(min_span);
    let mid = (lo + hi) / 2.0;
    (mid - span * 0.6, mid + span * 0.6)
}

fn draw_curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    curves: &[Curve],
) -> Result<()> {
    let all = curves.iter().flat_map(|c| c.points.iter());
    let (mut x_max, mut y_min, mut y_max) = (2.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, _, lo, hi) in all {
        x_max = x_max.max(x);
        y_min = y_min.min(lo);
        y_max = y_max.max(hi);
    }
    let (y0, y1) = padded(y_min, y_max, 1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(1f64..x_max, y0..y1)
        .map_err(chart_error)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(y_desc)
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(chart_error)?;
    for c in curves {
        let col = color(c.group);
        if c.points.iter().any(|&(_, _, lo, hi)| hi > lo) {
            let band: Vec<(f64, f64)> = c
                .points
                .iter()
                .map(|&(x, _, _, hi)| (x, hi))
                .chain(c.points.iter().rev().map(|&(x, _, lo, _)| (x, lo)))
                .collect();
            chart
                .draw_series(std::iter::once(Polygon::new(band, col.mix(0.18).filled())))
                .map_err(chart_error)?;
        }
        chart
            .draw_series(LineSeries::new(
                c.points.iter().map(|&(x, mean, _, _)| (x, mean)),
                col.stroke_width(2),
            ))
            .map_err(chart_error)?;
    }
    Ok(())
}

/// The frame of a chart: a grid of panels under a title, and a legend column.
struct Layout<'a> {
    rows: usize,
    cols: usize,
    /// One panel's size in pixels.
    panel: (u32, u32),
    title: &'a str,
    /// What the marks mean, under the legend.
    note: &'a str,
}

/// A chart of panels in a grid with the legend of the groups `shown` on the right; `draw`
/// fills panel `i` (row-major).
fn panels_chart(
    groups: &[Group],
    shown: &[usize],
    layout: Layout<'_>,
    mut draw: impl FnMut(usize, &DrawingArea<SVGBackend, Shift>) -> Result<()>,
) -> Result<String> {
    let Layout {
        rows,
        cols,
        panel,
        title,
        note,
    } = layout;
    let mut svg = String::new();
    {
        let width = panel.0 * cols.max(1) as u32 + LEGEND_WIDTH;
        let height = panel.1 * rows.max(1) as u32 + 40;
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_error)?;
        let root = root
            .titled(title, ("sans-serif", 20))
            .map_err(chart_error)?;
        let (plots, legend) = root.split_horizontally(width - LEGEND_WIDTH);
        for (i, area) in plots
            .split_evenly((rows.max(1), cols.max(1)))
            .iter()
            .enumerate()
        {
            draw(i, area)?;
        }
        draw_legend(&legend, groups, shown, note)?;
        root.present().map_err(chart_error)?;
    }
    Ok(svg)
}

const CURVE_NOTE: &str =
    "line: mean over the seeds\nthat logged the epoch;\nband: lowest to highest seed";

/// Training loss per epoch, one curve per group.
pub fn loss_chart(groups: &[Group]) -> Result<String> {
    let curves = curves(groups, |l| Some(l.loss));
    let shown: Vec<usize> = (0..groups.len()).collect();
    panels_chart(
        groups,
        &shown,
        Layout {
            rows: 1,
            cols: 1,
            panel: (760, 420),
            title: "Training loss per epoch",
            note: CURVE_NOTE,
        },
        |_, area| draw_curves(area, "", "loss", &curves),
    )
}

/// Validation MRR per epoch, one panel per domain, one curve per group.
pub fn valid_chart(groups: &[Group]) -> Result<String> {
    let domains = all_domains(groups);
    let shown: Vec<usize> = (0..groups.len()).collect();
    panels_chart(
        groups,
        &shown,
        Layout {
            rows: 1,
            cols: domains.len(),
            panel: (520, 420),
            title: "Validation MRR per epoch",
            note: CURVE_NOTE,
        },
        |i, area| {
            let Some(d) = domains.get(i) else {
                return Ok(());
            };
            let c = curves(groups, |l| {
                Some(100.0 * l.valid.as_ref()?.domains.get(d)?.mrr)
            });
            draw_curves(area, d, "MRR (%)", &c)
        },
    )
}

/// One panel of dots with whiskers: `(group, mean, std)`, on an axis fitted to the values
/// (and to zero, with `zero_line`).
fn draw_dots<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    slots: usize,
    values: &[(usize, usize, f64, f64)],
    zero_line: bool,
) -> Result<()> {
    let mut lo = values
        .iter()
        .map(|&(_, _, m, s)| m - s)
        .fold(f64::INFINITY, f64::min);
    let mut hi = values
        .iter()
        .map(|&(_, _, m, s)| m + s)
        .fold(f64::NEG_INFINITY, f64::max);
    if zero_line {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    let (y0, y1) = padded(lo, hi, 0.2);
    let n = slots.max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 15))
        .margin(10)
        .x_label_area_size(8)
        .y_label_area_size(46)
        .build_cartesian_2d(-0.6f64..(n - 0.4), y0..y1)
        .map_err(chart_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        // Rounded to one decimal without a "-0.0".
        .y_label_formatter(&|v| format!("{:.1}", if v.abs() < 0.05 { 0.0 } else { *v }))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(chart_error)?;
    if zero_line {
        chart
            .draw_series(LineSeries::new(
                [(-0.6, 0.0), (n - 0.4, 0.0)],
                BLACK.mix(0.6).stroke_width(1),
            ))
            .map_err(chart_error)?;
    }
    for &(slot, group, mean, std) in values {
        let c = color(group);
        let x = slot as f64;
        if std > 0.0 {
            chart
                .draw_series([
                    PathElement::new(vec![(x, mean - std), (x, mean + std)], c.stroke_width(2)),
                    PathElement::new(
                        vec![(x - 0.15, mean - std), (x + 0.15, mean - std)],
                        c.stroke_width(2),
                    ),
                    PathElement::new(
                        vec![(x - 0.15, mean + std), (x + 0.15, mean + std)],
                        c.stroke_width(2),
                    ),
                ])
                .map_err(chart_error)?;
        }
        chart
            .draw_series(std::iter::once(Circle::new((x, mean), 5, c.filled())))
            .map_err(chart_error)?;
    }
    Ok(())
}

/// `split`'s metrics per domain (rows) and metric (columns): a dot per group at the mean over
/// its runs with a ± std whisker, each panel on its own fitted axis.
pub fn metrics_chart(groups: &[Group], split: Split) -> Result<String> {
    let domains = all_domains(groups);
    let shown: Vec<usize> = (0..groups.len()).collect();
    let title = match split {
        Split::Valid => "Validation metrics (%)",
        Split::Test => "Test metrics (%)",
    };
    panels_chart(
        groups,
        &shown,
        Layout {
            rows: domains.len(),
            cols: PANEL_METRICS.len(),
            panel: (240, 250),
            title,
            note: "dot: mean over runs;\nwhisker: ± sample std;\neach axis fitted to its panel\n(not from zero)",
        },
        |i, area| {
            let Some(d) = domains.get(i / PANEL_METRICS.len()) else {
                return Ok(());
            };
            let m = PANEL_METRICS[i % PANEL_METRICS.len()];
            let values: Vec<_> = groups
                .iter()
                .enumerate()
                .filter_map(|(g, group)| {
                    let (mean, std) = group.stat(split, d, m)?;
                    Some((g, g, 100.0 * mean, 100.0 * std))
                })
                .collect();
            draw_dots(
                area,
                &format!("{d} {}", m.name()),
                groups.len(),
                &values,
                false,
            )
        },
    )
}

/// The paired per-seed differences of `split`'s metrics against the group `reference`, in %
/// points: a dot per other group at the mean difference with a ± std whisker, and the zero
/// line. Errors as [`tables::paired_table`].
pub fn paired_chart(groups: &[Group], reference: usize, split: Split) -> Result<String> {
    let domains = all_domains(groups);
    let others: Vec<usize> = (0..groups.len()).filter(|&g| g != reference).collect();
    let mut values: Vec<Vec<(usize, usize, f64, f64)>> = Vec::new();
    for d in &domains {
        for m in PANEL_METRICS {
            let mut panel = Vec::new();
            for (slot, &g) in others.iter().enumerate() {
                let pairs = tables::pairs(groups, reference, g, split, d)?;
                let diffs = tables::differences(&pairs, split, d, m);
                if let Some((mean, std)) = mean_std(&diffs) {
                    panel.push((slot, g, mean, std));
                }
            }
            values.push(panel);
        }
    }
    let base = groups
        .get(reference)
        .map(|g| g.label.as_str())
        .unwrap_or("");
    let title = format!(
        "{} metrics minus the same seeds' of {base} (% points)",
        match split {
            Split::Valid => "Validation",
            Split::Test => "Test",
        }
    );
    panels_chart(
        groups,
        &others,
        Layout {
            rows: domains.len(),
            cols: PANEL_METRICS.len(),
            panel: (240, 250),
            title: &title,
            note: "dot: mean paired difference;\nwhisker: ± sample std\nover the paired seeds",
        },
        |i, area| {
            let (Some(d), Some(panel)) = (domains.get(i / PANEL_METRICS.len()), values.get(i))
            else {
                return Ok(());
            };
            let m = PANEL_METRICS[i % PANEL_METRICS.len()];
            draw_dots(
                area,
                &format!("{d} {}", m.name()),
                others.len(),
                panel,
                true,
            )
        },
    )
}
