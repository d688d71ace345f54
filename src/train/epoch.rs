//! One pass over the training sequences: the epoch's batches ([`super::batching`]), a step per
//! batch ([`super::step`]), a progress bar, and the mean loss read back once at the end.

use std::time::Instant;

use burn::optim::ModuleOptimizer;
use burn::tensor::Tensor;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::batching::{Batching, epoch_batches, padding_ratio};
use super::step::{StepContext, StepProfile, train_step};
use super::stopping::learning_rate;
use crate::data::{Domain, Sequence};
use crate::error::{Error, Result};
use crate::model::LlmEmf;

/// What an epoch of training measured.
#[derive(Debug, Clone)]
pub(super) struct EpochStats {
    pub loss: f64,
    pub seconds: f64,
    pub sequences: usize,
    pub padding: f64,
    pub profile: Option<StepProfile>,
}

/// The random stream of epoch `epoch` (0-based): shuffling and negative sampling.
pub(super) fn epoch_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64 + 1);
    rng
}

/// How to run an epoch.
pub(super) struct EpochPlan<'a> {
    pub epoch: usize,
    pub epochs: usize,
    pub seed: u64,
    pub batch_size: usize,
    pub batching: Batching,
    pub domain_x: &'a Domain,
    pub progress: bool,
    pub profile: bool,
    /// Base learning rate, plateau scale and warm-up epochs.
    pub learning_rate: f64,
    pub lr_scale: f64,
    pub warmup_epochs: usize,
    /// Parts of a batch that run at the same time.
    pub shards: usize,
}

/// Trains one epoch over `sequences`, returning the updated model and its statistics. A
/// non-finite mean loss is an error that names the epoch.
pub(super) fn run_epoch(
    mut model: LlmEmf,
    optim: &mut ModuleOptimizer,
    sequences: &[&Sequence],
    plan: &EpochPlan<'_>,
    ctx: &StepContext<'_>,
) -> Result<(LlmEmf, EpochStats)> {
    let mut rng = epoch_rng(plan.seed, plan.epoch);
    let batches = epoch_batches(
        sequences,
        plan.batch_size,
        plan.batching,
        plan.domain_x,
        &mut rng,
    );
    let bar = crate::progress::Bar::epoch(
        plan.progress,
        batches.len() as u64,
        plan.epoch + 1,
        plan.epochs,
    );
    let mut profile = plan.profile.then(StepProfile::default);
    let start = Instant::now();
    let mut loss_sum: Option<Tensor<1>> = None;
    let mut steps = 0usize;
    for (b, batch) in batches.iter().enumerate() {
        let lr = learning_rate(
            plan.learning_rate,
            plan.lr_scale,
            plan.warmup_epochs,
            batches.len(),
            plan.epoch * batches.len() + b,
        );
        let (next, loss) = train_step(
            model,
            optim,
            batch,
            ctx,
            lr,
            plan.shards,
            &mut rng,
            profile.as_mut(),
        );
        model = next;
        if let Some(loss) = loss {
            loss_sum = Some(match loss_sum {
                Some(sum) => sum + loss,
                None => loss,
            });
            steps += 1;
        }
        bar.inc(1);
    }
    // One read of the loss per epoch: the steps never wait for the device.
    let loss = match loss_sum {
        Some(sum) => sum.into_scalar::<f32>() as f64 / steps as f64,
        None => 0.0,
    };
    let seconds = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if !loss.is_finite() {
        return Err(Error::InvalidInput(format!(
            "the training loss became {loss} in epoch {}: lower the learning rate",
            plan.epoch + 1
        )));
    }
    let stats = EpochStats {
        loss,
        seconds,
        sequences: sequences.len(),
        padding: padding_ratio(&batches, plan.domain_x),
        profile,
    };
    Ok((model, stats))
}
