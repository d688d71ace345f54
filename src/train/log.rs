//! The per-epoch record: one JSON line of `log.jsonl` and one human-readable line on stderr.

use serde::{Deserialize, Serialize};

use super::step::StepProfile;
use crate::eval::Evaluation;

/// One line of `log.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    /// Epoch, 1-based.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Seconds spent training (without validation).
    pub train_seconds: f64,
    /// Training sequences per second.
    pub train_sequences_per_second: f64,
    /// Padded items over real items in the epoch's batches (1.0 = no padding).
    #[serde(default)]
    pub padding: Option<f64>,
    /// Seconds per training phase (profiling runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<StepProfile>,
    /// Validation metrics, when evaluated this epoch.
    pub valid: Option<Evaluation>,
    /// Whether this epoch's model is the best so far.
    pub best: bool,
    /// Temperatures of the id, image and text heads.
    pub temperatures: [f64; 3],
    /// Modality weights (id, image, text) of Eq. 8, as used (learned or fixed).
    #[serde(default)]
    pub modality_weights: Option<[f64; 3]>,
    /// Sub-sequence weights (X, Y, merged) of the Eq. 11 score, per target domain (X, Y).
    #[serde(default)]
    pub domain_weights: Option<[[f64; 3]; 2]>,
}

impl EpochLog {
    /// The one-line summary printed after each epoch.
    pub fn summary(&self) -> String {
        let valid = self
            .valid
            .as_ref()
            .map(|v| {
                let per_domain = v
                    .domains
                    .iter()
                    .map(|(n, m)| format!("{n} MRR {:.2}%", 100.0 * m.mrr))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("{per_domain} ({:.0} ex/s)", v.examples_per_second)
            })
            .unwrap_or_else(|| "not evaluated".into());
        format!(
            "epoch {}: loss {:.4}, {:.1}s ({:.0} seq/s), valid: {valid}{}",
            self.epoch,
            self.loss,
            self.train_seconds,
            self.train_sequences_per_second,
            if self.best { " (best)" } else { "" }
        )
    }
}
