//! Evaluation: ranking metrics and the evaluator.

pub mod evaluator;
pub mod metrics;

pub use evaluator::{Evaluation, evaluate};
pub use metrics::{DomainMetrics, POPULARITY_BOUNDS, PopularitySlice, Rank};
