//! Evaluation: ranking metrics.

pub mod metrics;

pub use metrics::DomainMetrics;
