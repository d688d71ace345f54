//! The record of a finished experiment, without its weights: what a repository keeps so that
//! every table quoted from the experiment can be rebuilt after its run folder is gone.
//!
//! [`archive_experiment`] copies, from an experiment folder written by
//! [`run_experiment`](super::experiment::run_experiment):
//! - `experiment.json`, `summary.json`, `summary.md`;
//! - per seed, `seed-K/` with the run's `config.json`, `results.json` and, where the run has
//!   them, `log.jsonl` and `model.score.json` (no model, no checkpoint).
//!
//! The archive is a finished experiment folder: `llm-emf report` reads it (tables, paired
//! differences, curves) and `llm-emf experiment` with the same config and seeds over it skips
//! every seed and writes the summary again.
//!
//! A seed folder that is a relative link (the folders that gather seeds trained as separate
//! experiments) stays a link when its target, resolved from the destination, is itself an
//! archived run (so the copies are not duplicated); otherwise its files are copied.
//!
//! Nothing half-written is left behind: the archive is assembled in a hidden folder beside the
//! destination and renamed into place when complete; an existing destination is replaced only
//! when asked, and only once the new archive is whole.

use std::fs;
use std::path::{Path, PathBuf};

use std::path::Component;

use super::checkpoint::RunPaths;
use super::experiment::{ExperimentSpec, ExperimentSummary, seed_dir};
use super::trainer::TrainReport;
use crate::error::{Error, Result};
use crate::io::read_json;

/// The files of an experiment folder that an archive keeps (all required).
const EXPERIMENT_FILES: [&str; 3] = ["experiment.json", "summary.json", "summary.md"];

/// What [`archive_experiment`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// The archive folder.
    pub dest: PathBuf,
    /// Seeds whose files were copied.
    pub copied: Vec<u64>,
    /// Seeds kept as links to runs archived beside the destination.
    pub linked: Vec<u64>,
    /// Files copied, experiment files included.
    pub files: usize,
    /// Whether an earlier archive at `dest` was replaced.
    pub replaced: bool,
}

/// Copies the record of the finished experiment in `src` to `dest` (see the module docs).
///
/// Errors, each before anything is written: `src` is not an experiment folder (no
/// `experiment.json`), it is not finished (no `summary.json`, or one over other seeds), a seed
/// lacks its `config.json` or `results.json` or has an unreadable one, `dest` exists and
/// `replace` is false, `dest` is or holds `src`, lies inside it, or exists and is not an
/// archive (no `summary.json`: replacing deletes it).
pub fn archive_experiment(src: &Path, dest: &Path, replace: bool) -> Result<Archived> {
    let spec_path = src.join("experiment.json");
    if !spec_path.is_file() {
        return Err(Error::format(
            src,
            "not an experiment folder (no experiment.json): `llm-emf experiment --out DIR` writes one",
        ));
    }
    let spec = ExperimentSpec::read(&spec_path)?;
    let summary_path = src.join("summary.json");
    if !summary_path.is_file() {
        return Err(Error::format(
            src,
            "the experiment is not finished (no summary.json): re-run the same `llm-emf experiment` command to finish it",
        ));
    }
    let summary: ExperimentSummary = read_json(&summary_path)?;
    if summary.seeds != spec.seeds {
        return Err(Error::format(
            &summary_path,
            format!(
                "summarises seeds {:?} but experiment.json lists {:?}: re-run the same `llm-emf experiment` command to rewrite it",
                summary.seeds, spec.seeds
            ),
        ));
    }
    if dest.exists() {
        if !replace {
            return Err(Error::format(
                dest,
                "exists already: choose another destination, or replace it (--replace)",
            ));
        }
        // Replacing deletes the folder: only an earlier archive (or experiment) that neither
        // is nor holds the source.
        let (s, d) = (canonical(src)?, canonical(dest)?);
        if s.starts_with(&d) {
            return Err(Error::format(
                dest,
                format!(
                    "holds the experiment being archived ({}): not replaced",
                    src.display()
                ),
            ));
        }
        if !dest.join("summary.json").is_file() {
            return Err(Error::format(
                dest,
                "is not an experiment archive (no summary.json): not replaced",
            ));
        }
    } else if let (Ok(s), Some(d)) = (
        canonical(src),
        dest.parent().and_then(|p| canonical(p).ok()),
    ) && d.starts_with(&s)
    {
        return Err(Error::format(
            dest,
            format!(
                "is inside the experiment being archived ({})",
                src.display()
            ),
        ));
    }
    let name = dest
        .file_name()
        .ok_or_else(|| Error::format(dest, "the destination needs a folder name"))?
        .to_string_lossy()
        .into_owned();
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };

    // Check every seed before writing anything.
    let mut plan = Vec::with_capacity(spec.seeds.len());
    for &seed in &spec.seeds {
        let run = seed_dir(src, seed);
        plan.push((seed, plan_seed(&run, dest)?));
    }

    fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let staging = parent.join(format!(".{name}.archive-{}", std::process::id()));
    let old = parent.join(format!(".{name}.replaced-{}", std::process::id()));
    let replaced = dest.exists();
    let archived = assemble(src, &staging, &plan).and_then(|(files, copied, linked)| {
        install(&staging, dest, replaced.then_some(old.as_path()))?;
        Ok(Archived {
            dest: dest.to_path_buf(),
            copied,
            linked,
            files,
            replaced,
        })
    });
    if archived.is_err() {
        // Nothing half-written stays behind (gone already when the rename succeeded).
        let _ = fs::remove_dir_all(&staging);
    }
    archived
}

/// Moves the assembled archive `staging` to `dest`; with `old`, the existing `dest` is moved
/// there first and deleted once the new archive is in place (put back if it cannot be).
fn install(staging: &Path, dest: &Path, old: Option<&Path>) -> Result<()> {
    let Some(old) = old else {
        return fs::rename(staging, dest).map_err(|e| Error::io(dest, e));
    };
    fs::rename(dest, old).map_err(|e| Error::io(dest, e))?;
    if let Err(e) = fs::rename(staging, dest) {
        // Put the old archive back: the destination is never left empty.
        let _ = fs::rename(old, dest);
        return Err(Error::io(dest, e));
    }
    fs::remove_dir_all(old).map_err(|e| Error::io(old, e))
}

fn canonical(path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).map_err(|e| Error::io(path, e))
}

/// How one seed is archived.
enum SeedPlan {
    /// Copy these files of the run folder.
    Copy(Vec<PathBuf>),
    /// Recreate this relative link (its target, and the run folder it resolves to from the
    /// destination).
    Link(PathBuf, PathBuf),
}

/// Checks one seed's run folder and decides how to archive it. A relative link is resolved
/// from `dest`, the archive folder (which need not exist yet).
fn plan_seed(run: &Path, dest: &Path) -> Result<SeedPlan> {
    let meta = fs::symlink_metadata(run).map_err(|e| Error::io(run, e))?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(run).map_err(|e| Error::io(run, e))?;
        if let Some(resolved) = resolve_from(dest, &target)
            && is_archived_run(&resolved)
        {
            return Ok(SeedPlan::Link(target, resolved));
        }
    }
    let paths = RunPaths::new(run);
    let mut files = Vec::new();
    for (path, required) in paths.record_files() {
        if path.is_file() {
            files.push(path);
        } else if required {
            return Err(Error::format(
                run,
                format!(
                    "the run has no {}: only finished runs are archived",
                    file_name(&path).to_string_lossy()
                ),
            ));
        }
    }
    // The results must be a run's results (the report reads them back).
    let _: TrainReport = read_json(&paths.results())?;
    Ok(SeedPlan::Copy(files))
}

/// `target`, a relative link inside `dir`, resolved without touching the file system (`dir`
/// may not exist yet); `None` for an absolute target or one that climbs above `dir`'s root.
fn resolve_from(dir: &Path, target: &Path) -> Option<PathBuf> {
    if !target.is_relative() {
        return None;
    }
    let mut path = dir.to_path_buf();
    for part in target.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !path.pop() {
                    return None;
                }
            }
            Component::Normal(p) => path.push(p),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(path)
}

/// Whether `dir` holds an archived (or finished) run.
fn is_archived_run(dir: &Path) -> bool {
    RunPaths::new(dir)
        .record_files()
        .iter()
        .all(|(path, required)| !required || path.is_file())
}

/// The last component of a path built by [`RunPaths`] (always a file name).
fn file_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name().unwrap_or(path.as_os_str())
}

/// Writes the archive into `staging`; returns (files copied, seeds copied, seeds linked).
fn assemble(
    src: &Path,
    staging: &Path,
    plan: &[(u64, SeedPlan)],
) -> Result<(usize, Vec<u64>, Vec<u64>)> {
    if staging.exists() {
        fs::remove_dir_all(staging).map_err(|e| Error::io(staging, e))?;
    }
    fs::create_dir_all(staging).map_err(|e| Error::io(staging, e))?;
    let mut files = 0;
    for file in EXPERIMENT_FILES {
        copy(&src.join(file), &staging.join(file))?;
        files += 1;
    }
    let (mut copied, mut linked) = (Vec::new(), Vec::new());
    for (seed, how) in plan {
        let to = seed_dir(staging, *seed);
        match how {
            SeedPlan::Copy(paths) => {
                fs::create_dir_all(&to).map_err(|e| Error::io(&to, e))?;
                for path in paths {
                    copy(path, &to.join(file_name(path)))?;
                    files += 1;
                }
                copied.push(*seed);
            }
            SeedPlan::Link(target, resolved) => {
                link(target, resolved, &to)?;
                linked.push(*seed);
            }
        }
    }
    Ok((files, copied, linked))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to).map_err(|e| Error::io(from, e))?;
    Ok(())
}

#[cfg(unix)]
fn link(target: &Path, _resolved: &Path, at: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, at).map_err(|e| Error::io(at, e))
}

#[cfg(not(unix))]
fn link(_target: &Path, from: &Path, at: &Path) -> Result<()> {
    // Without symbolic links, copy the linked run's files.
    fs::create_dir_all(at).map_err(|e| Error::io(at, e))?;
    for (path, _) in RunPaths::new(from).record_files() {
        if path.is_file() {
            copy(&path, &at.join(file_name(&path)))?;
        }
    }
    Ok(())
}
