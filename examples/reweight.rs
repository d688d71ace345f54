//! Re-weights a trained run's sub-sequences without retraining: for each weight `m` of the
//! merged sequence S^{X+Y} (the single-domain sub-sequences share `1 - m` in their trained
//! ratio), it evaluates the validation and test splits under the run's protocol and prints MRR
//! per domain. Choose `m` on the validation rows; the test rows show what that choice gives.
//!
//! ```text
//! cargo run --release --example reweight -- runs/food-kitchen/titles/seed-1 0.5 0.7 0.9 1.0
//! ```

use std::path::PathBuf;

use clap::Parser;

use llm_emf::backend;
use llm_emf::data::{DomainId, Split};
use llm_emf::recommend::TrainedRun;
use llm_emf::train::merged_share;

/// Re-weights a trained run's sub-sequences without retraining and prints MRR per weight.
#[derive(Debug, Parser)]
#[command(name = "reweight")]
struct Args {
    /// The trained run folder.
    run: PathBuf,
    /// Weights of the merged sequence to evaluate (each in [0, 1]).
    #[arg(value_parser = unit_weight)]
    merged: Vec<f64>,
}

/// A merged-sequence weight: a number in [0, 1].
fn unit_weight(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(w) if (0.0..=1.0).contains(&w) => Ok(w),
        Ok(w) => Err(format!("{w} is not in [0, 1]")),
        Err(e) => Err(format!("not a number: {e}")),
    }
}

fn main() {
    let args = Args::parse();
    backend::tune_allocator();
    if let Err(e) = reweight(&args.run, &args.merged) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn reweight(run: &std::path::Path, merged: &[f64]) -> llm_emf::Result<()> {
    let device = backend::from_env()?;
    let mut trained = TrainedRun::load(run, &device)?;
    let protocol = trained.config.eval.protocol;
    let learned = DomainId::BOTH.map(|d| trained.model.domain_weights(d));
    println!(
        "trained weights (X, Y, merged): target X {:?}, target Y {:?}",
        learned[0], learned[1]
    );
    let splits = [Split::Valid, Split::Test];
    let candidates = splits
        .iter()
        .map(|&s| trained.candidates(s, protocol, None))
        .collect::<llm_emf::Result<Vec<_>>>()?;
    let mut grid = vec![None];
    grid.extend(merged.iter().copied().map(Some));
    println!("| merged weight | split | {} |", domain_header(&trained));
    println!("| --- | --- | --- | --- |");
    for m in grid {
        if let Some(m) = m {
            for d in DomainId::BOTH {
                trained
                    .model
                    .domain_loss
                    .set_weights(d, merged_share(learned[d.index()], m))?;
            }
        }
        for (split, c) in splits.iter().zip(&candidates) {
            let e = trained.evaluate_with(*split, c)?;
            let mrr: Vec<String> = e
                .domains
                .values()
                .map(|v| format!("{:.2}", 100.0 * v.mrr))
                .collect();
            let label = m.map_or("trained".to_string(), |m| format!("{m}"));
            println!("| {label} | {split:?} | {} |", mrr.join(" | "));
        }
    }
    Ok(())
}

fn domain_header(trained: &TrainedRun) -> String {
    DomainId::BOTH
        .map(|d| format!("{} MRR", trained.data.dataset.domain(d).name))
        .join(" | ")
}
