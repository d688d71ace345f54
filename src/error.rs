//! The crate's one error type.
//!
//! Every error carries the context a user needs to fix the input: the file, the 1-based line where
//! one applies, and what was expected.

use std::path::{Path, PathBuf};

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `llm_emf`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// A line of a text file is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong and what was expected.
        message: String,
    },

    /// A file is malformed as a whole (empty, missing a header, inconsistent with another file).
    #[error("{}: {message}", path.display())]
    Format {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong and what was expected.
        message: String,
    },

    /// The dataset has no training data, and the operation needs it.
    #[error(
        "training file {} is missing: {hint}",
        path.display()
    )]
    MissingTrainingData {
        /// Where the file was expected.
        path: PathBuf,
        /// Where to get it.
        hint: String,
    },

    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// An argument of a library call is invalid (an unknown item, an empty history, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A JSON file could not be read or written.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: serde_json::Error,
    },

    /// A model checkpoint or optimizer state could not be saved or loaded.
    #[error("{}: {message}", path.display())]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A malformed line `line` (1-based) of `path`.
    pub fn parse(path: impl AsRef<Path>, line: usize, message: impl Into<String>) -> Self {
        Error::Parse {
            path: path.as_ref().to_path_buf(),
            line,
            message: message.into(),
        }
    }

    /// A malformed file as a whole.
    pub fn format(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.as_ref().to_path_buf(),
            message: message.into(),
        }
    }

    /// A JSON error on `path`.
    pub fn json(path: impl AsRef<Path>, source: serde_json::Error) -> Self {
        Error::Json {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A checkpoint error on `path`.
    pub fn checkpoint(path: impl AsRef<Path>, message: impl std::fmt::Display) -> Self {
        Error::Checkpoint {
            path: path.as_ref().to_path_buf(),
            message: message.to_string(),
        }
    }
}
