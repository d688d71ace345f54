//! Evaluation: ranking metrics and the evaluator.

pub mod evaluator;
pub mod metrics;

pub use evaluator::{Evaluation, Evaluator, evaluate};
pub use metrics::{DomainMetrics, POPULARITY_BOUNDS, PopularitySlice, Rank};
