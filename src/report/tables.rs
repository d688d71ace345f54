//! Markdown tables of finished runs: metrics per model and domain (mean ± std over seeds) on
//! either split, test MRR by the target's popularity, and differences against a reference
//! model (paired by training seed, and of the means over all runs).

use std::collections::BTreeMap;

use super::{Group, Metric, RunRecord, all_domains, mean_std};
use crate::data::Split;
use crate::error::{Error, Result};

/// A markdown table's header and separator lines: the `lead` columns, then `columns`.
fn table_header(lead: &[&str], columns: impl Iterator<Item = String>) -> String {
    let names: Vec<String> = lead.iter().map(|c| c.to_string()).chain(columns).collect();
    format!(
        "| {} |\n|{}\n",
        names.join(" | "),
        " --- |".repeat(names.len())
    )
}

/// The markdown table of `split`'s metrics (in %), one row per group and domain.
pub fn markdown_table(groups: &[Group], split: Split) -> String {
    let mut out = String::new();
    let first = groups.first().and_then(|g| g.runs.first());
    if let Some(r) = first {
        out.push_str(&format!(
            "{} split, {} protocol, metrics in % (mean ± std over runs).\n\n",
            match split {
                Split::Valid => "Validation",
                Split::Test => "Test",
            },
            r.evaluation(split).protocol
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
                let cell = match g.stat(split, d, m) {
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

/// The markdown table of `split`'s MRR (in %) by the target's training interactions
/// ([`crate::eval::PopularitySlice`]), one row per group and domain, the mean over the group's
/// runs with the number of examples; `None` when no run has these slices (results written
/// before they existed). Groups or domains without them are left out. The first slice is the
/// targets never seen in training; the last column is the MRR a random order of the
/// candidates gives (`H(n) / n`: 0.75% among 1,000), where the results record it.
pub fn popularity_table(groups: &[Group], split: Split) -> Option<String> {
    let slices_of = |r: &RunRecord, d: &str| r.evaluation(split).popularity.get(d).cloned();
    let labels: Vec<String> = groups
        .iter()
        .flat_map(|g| &g.runs)
        .flat_map(|r| r.evaluation(split).popularity.values())
        .next()?
        .iter()
        .map(crate::eval::PopularitySlice::label)
        .collect();
    let mut out = format!(
        "{} MRR in % (examples) by the target's interactions in training.\n\n",
        match split {
            Split::Valid => "Validation",
            Split::Test => "Test",
        }
    );
    out.push_str(&table_header(
        &["model", "domain"],
        labels
            .iter()
            .cloned()
            .chain(std::iter::once("a random order".to_string())),
    ));
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
            let chances: Vec<f64> = g
                .runs
                .iter()
                .filter_map(|r| r.evaluation(split).chance_mrr.get(d).copied())
                .collect();
            match mean_std(&chances) {
                Some((chance, _)) => out.push_str(&format!(" {:.2} |", 100.0 * chance)),
                None => out.push_str(" - |"),
            }
            out.push('\n');
        }
    }
    Some(out)
}

/// The group `reference` (an index into `groups`), or an error naming the bad index.
fn reference_group(groups: &[Group], reference: usize) -> Result<&Group> {
    groups.get(reference).ok_or_else(|| {
        Error::InvalidInput(format!(
            "reference {reference} out of range ({} groups)",
            groups.len()
        ))
    })
}

/// One group's runs paired with the reference's by training seed, for one domain.
pub(super) fn pairs<'a>(
    groups: &'a [Group],
    reference: usize,
    group: usize,
    split: Split,
    domain: &str,
) -> Result<Vec<(&'a RunRecord, &'a RunRecord)>> {
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
    let base = reference_group(groups, reference)?;
    let g = &groups[group];
    let base_seeds = by_seed(base)?;
    Ok(by_seed(g)?
        .iter()
        .filter_map(|(s, &i)| base_seeds.get(s).map(|&j| (&g.runs[i], &base.runs[j])))
        .filter(|(a, b)| {
            a.evaluation(split).domains.contains_key(domain)
                && b.evaluation(split).domains.contains_key(domain)
        })
        .collect())
}

/// The per-seed differences (in % points) of `metric` between a group's runs and the
/// reference's.
pub(super) fn differences(
    pairs: &[(&RunRecord, &RunRecord)],
    split: Split,
    domain: &str,
    metric: Metric,
) -> Vec<f64> {
    pairs
        .iter()
        .map(|(a, b)| {
            100.0
                * (metric.of(&a.evaluation(split).domains[domain])
                    - metric.of(&b.evaluation(split).domains[domain]))
        })
        .collect()
}

/// The markdown table of paired differences against the group `reference` (an index into
/// `groups`) on `split`: for every other group and domain, the runs of the two groups are
/// matched by training seed, and each metric shows the mean ± standard deviation of the
/// per-seed differences (in % points) and on how many of the paired seeds the group is above
/// the reference. Where two runs of one seed stay alike to the end (the seed's draw counts
/// for more than the setting), a paired difference shows an effect that the groups' own
/// means ± std hide; where they drift apart during training, it is no more precise than the
/// [`difference_table`], and it reads the reference on the shared seeds only, so a reference
/// whose paired seeds are its best ones makes every other group look worse.
/// Errors: a group with two runs of one seed (the pairing would be ambiguous).
pub fn paired_table(groups: &[Group], reference: usize, split: Split) -> Result<String> {
    let base = reference_group(groups, reference)?;
    let mut out = format!(
        "Paired differences against {}, {split} split: metric of the same training seed minus the reference's, in % points (mean ± std over the paired seeds; in brackets, on how many of them the row is above).\n\n",
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
            let pairs = pairs(groups, reference, gi, split, d)?;
            out.push_str(&format!("| {} | {d} | {} |", g.label, pairs.len()));
            for m in Metric::ALL {
                let diffs = differences(&pairs, split, d, m);
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

/// The markdown table of differences of means against the group `reference` (an index into
/// `groups`) on `split`: for every other group and domain, each metric shows the group's mean
/// over all its runs minus the reference's mean over all of its runs (in % points), ± the
/// standard error of that difference, `sqrt(s_a^2 / n_a + s_b^2 / n_b)` with each group's
/// sample standard deviation (left out where a group has a single run, whose spread is
/// unknown). Unlike the [`paired_table`], it uses every run of both groups, whichever seeds
/// they share: the comparison to read when runs of one seed drift apart during training.
pub fn difference_table(groups: &[Group], reference: usize, split: Split) -> Result<String> {
    let base = reference_group(groups, reference)?;
    let mut out = format!(
        "Differences of means against {}, {split} split: the mean over a group's runs minus the reference's mean over all of its runs, in % points (± the standard error of the difference, where both groups have two runs or more).\n\n",
        base.label
    );
    out.push_str(&table_header(
        &["model", "domain", "runs (reference)"],
        Metric::ALL.iter().map(|m| m.name().to_string()),
    ));
    let values = |g: &Group, d: &str, m: Metric| -> Vec<f64> {
        g.runs
            .iter()
            .filter_map(|r| r.evaluation(split).domains.get(d).map(|e| 100.0 * m.of(e)))
            .collect()
    };
    for d in &all_domains(groups) {
        for (gi, g) in groups.iter().enumerate() {
            if gi == reference {
                continue;
            }
            let runs = values(g, d, Metric::Mrr).len();
            let base_runs = values(base, d, Metric::Mrr).len();
            out.push_str(&format!("| {} | {d} | {runs} ({base_runs}) |", g.label));
            for m in Metric::ALL {
                let (a, b) = (values(g, d, m), values(base, d, m));
                let cell = match (mean_std(&a), mean_std(&b)) {
                    (Some((ma, sa)), Some((mb, sb))) if a.len() > 1 && b.len() > 1 => {
                        let se = (sa * sa / a.len() as f64 + sb * sb / b.len() as f64).sqrt();
                        format!("{:+.2} ± {se:.2}", ma - mb)
                    }
                    (Some((ma, _)), Some((mb, _))) => format!("{:+.2}", ma - mb),
                    _ => "-".into(),
                };
                out.push_str(&format!(" {cell} |"));
            }
            out.push('\n');
        }
    }
    Ok(out)
}
