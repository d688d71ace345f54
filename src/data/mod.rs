//! Data layer: the in-memory dataset, readers for the C2DSR and RecBole formats, the synthetic
//! generator, batching and evaluation candidates.

pub mod batcher;
pub mod c2dsr;
pub mod dataset;
pub mod mask;
pub mod recbole;
pub mod sampling;
pub mod synthetic;

use std::path::Path;

pub use batcher::{SequenceBatcher, SubSequence};
pub use c2dsr::{C2dsrOptions, load_c2dsr};
pub use dataset::{
    Dataset, DatasetStats, Domain, DomainId, DomainStats, Example, Item, ItemId, Sequence, Split,
    TrainingData,
};
pub use recbole::{RecboleOptions, load_recbole};
pub use sampling::{Candidates, Protocol};
pub use synthetic::{SyntheticConfig, SyntheticData};

use crate::error::{Error, Result};

/// The on-disk formats [`load_dataset`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `Alist.txt`, `Blist.txt`, `*data_new.txt` (and `items.tsv`).
    C2dsr,
    /// `NAME.inter` + `NAME.item`.
    Recbole,
}

/// Detects the format of `dir` from its files.
pub fn detect_format(dir: &Path) -> Result<Format> {
    if !dir.is_dir() {
        return Err(Error::format(dir, "not a directory"));
    }
    if c2dsr::is_c2dsr_dir(dir) {
        return Ok(Format::C2dsr);
    }
    if recbole::find_inter_file(dir)?.is_some() {
        return Ok(Format::Recbole);
    }
    Err(Error::format(
        dir,
        "no dataset found: expected Alist.txt and Blist.txt (C2DSR format) or NAME.inter and NAME.item (RecBole atomic files)",
    ))
}

/// Loads a dataset directory in either format with default options (for RecBole files: histories
/// of at most [`recbole::DEFAULT_MAX_HISTORY`] items).
pub fn load_dataset(dir: &Path) -> Result<Dataset> {
    match detect_format(dir)? {
        Format::C2dsr => load_c2dsr(dir, &C2dsrOptions::default()),
        Format::Recbole => load_recbole(dir, &RecboleOptions::default()),
    }
}
