//! One training step: batch to device, encoders forward, heads and loss, backward, optimizer.
//!
//! With profiling on, the device is synchronised after each phase and the phase's wall time is
//! added to a [`StepProfile`]; off, nothing waits for the device (the loss stays there until
//! the epoch ends).

use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use rand::RngCore;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::Contrastive;
use super::sampler::NegativeSampler;
use crate::data::batcher::{SequenceBatcher, TargetCounts, TrainPlan};
use crate::data::{DomainId, Sequence};
use crate::model::dropout::seed_dropout;
use crate::model::{DomainNegatives, ItemFeatures, LlmEmf};

/// Seconds spent in each phase of the training steps of an epoch (profiling runs only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepProfile {
    /// Steps timed.
    pub steps: usize,
    /// Planning the batch on the host, moving it to the device, drawing negatives.
    pub batching: f64,
    /// The sub-sequence encoders' forward pass.
    pub encoders_forward: f64,
    /// Cosine heads, softmax, fusion and the lambda-weighted loss (forward).
    pub heads_and_loss: f64,
    /// Backward pass.
    pub backward: f64,
    /// Gradient collection and the optimizer update.
    pub optimizer: f64,
}

impl StepProfile {
    /// Total seconds.
    pub fn total(&self) -> f64 {
        self.batching + self.encoders_forward + self.heads_and_loss + self.backward + self.optimizer
    }
}

/// What a step needs besides the model and optimizer.
pub(super) struct StepContext<'a> {
    pub batcher: &'a SequenceBatcher,
    /// The frozen tables on the training (autodiff) device.
    pub features: &'a ItemFeatures,
    /// The same tables on the plain device (parts of a batch make their own leaves of them).
    pub base_features: &'a ItemFeatures,
    pub sampler: Option<&'a NegativeSampler>,
    pub target_domains: &'a [DomainId],
    /// The auxiliary contrastive term, if any.
    pub contrastive: Option<Contrastive>,
    pub device: &'a Device,
}

/// A phase timer that synchronises the device before reading the clock (profiling only).
struct Phases<'a> {
    device: &'a Device,
    profile: Option<&'a mut StepProfile>,
    last: Instant,
}

impl Phases<'_> {
    fn mark(&mut self, slot: fn(&mut StepProfile) -> &mut f64) {
        if let Some(p) = self.profile.as_deref_mut() {
            // A failed sync shows up again at the next read of a tensor; timing just goes on.
            let _ = self.device.sync();
            let now = Instant::now();
            *slot(p) += (now - self.last).as_secs_f64();
            self.last = now;
        }
    }
}

/// Marks the end of a phase when profiling.
fn mark(phases: &mut Option<&mut Phases<'_>>, slot: fn(&mut StepProfile) -> &mut f64) {
    if let Some(p) = phases.as_deref_mut() {
        p.mark(slot);
    }
}

/// Runs one step on `chunk`, returning the updated model and the batch loss (on the device,
/// detached), or `None` when the batch has no target.
///
/// The batch is cut into `shards` parts that run forward and backward at the same time on
/// their own threads (the CPU backends use about one core per operation at these sizes); each
/// part normalises its loss by the whole batch's target counts, so the parts' gradients add up
/// to the whole batch's. Each part draws its dropout masks from a generator seeded by the step
/// and the part's index, so a run is reproducible for a given number of shards. Profiling runs
/// the parts one after the other.
#[allow(clippy::too_many_arguments)]
pub(super) fn train_step(
    model: LlmEmf,
    optim: &mut ModuleOptimizer,
    chunk: &[&Sequence],
    ctx: &StepContext<'_>,
    learning_rate: f64,
    shards: usize,
    rng: &mut ChaCha8Rng,
    profile: Option<&mut StepProfile>,
) -> (LlmEmf, Option<Tensor<1>>) {
    let mut phases = Phases {
        device: ctx.device,
        profile,
        last: Instant::now(),
    };
    let shards = shards.clamp(1, chunk.len().max(1));
    let size = chunk.len().div_ceil(shards);
    let plans: Vec<TrainPlan> = chunk
        .chunks(size.max(1))
        .map(|part| ctx.batcher.plan_train(part))
        .collect();
    let counts = TargetCounts::of(&plans);
    if counts.is_empty() {
        // Nothing to predict (cannot happen with sequences of two or more items).
        return (model, None);
    }
    let sequences = chunk.len();
    let negatives = ctx.sampler.map(|s| s.sample(rng, ctx.device));
    let step_seed = rng.next_u64();
    phases.mark(|p| &mut p.batching);

    let shard = |k: usize, phases: Option<&mut Phases<'_>>| -> (GradientsParams, Tensor<1>) {
        seed_dropout(step_seed.wrapping_add(k as u64));
        let mut phases = phases;
        // Parts that run at the same time must not share autodiff nodes (a backward consumes
        // the nodes it reaches): each gets fresh leaves of the parameters (same ids, same
        // values), of the frozen tables and of the negatives' log-Q.
        let (model, features, negatives) = if plans.len() == 1 {
            (model.clone(), ctx.features.clone(), negatives.clone())
        } else {
            (
                model.clone().fork(ctx.device),
                ctx.base_features.for_autodiff(),
                negatives.as_ref().map(|n| {
                    n.clone().map(|d| DomainNegatives {
                        ids: d.ids,
                        log_q: d.log_q.detach(),
                    })
                }),
            )
        };
        let batch = plans[k].to_tensors(ctx.device);
        mark(&mut phases, |p| &mut p.batching);
        let hidden = model.encode_train(&batch, &features);
        mark(&mut phases, |p| &mut p.encoders_forward);
        let loss = model.loss_from(
            &hidden,
            &batch,
            &features,
            ctx.target_domains,
            negatives.as_ref(),
            Some(&counts),
        );
        let loss = match ctx.contrastive {
            Some(c) if c.weight > 0.0 => {
                // A second encoding of the same part: the dropout stream has moved on, so its
                // masks differ. The part's sum over its sequences, over the whole batch's.
                let other = model.encode_train(&batch, &features);
                match model.contrastive_loss(&hidden, &other, &plans[k].inputs, c.temperature) {
                    Some(term) => loss + term.mul_scalar(c.weight / sequences as f64),
                    None => loss,
                }
            }
            _ => loss,
        };
        mark(&mut phases, |p| &mut p.heads_and_loss);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        mark(&mut phases, |p| &mut p.backward);
        (grads, loss.detach())
    };
    let results: Vec<(GradientsParams, Tensor<1>)> = if plans.len() == 1 || phases.profile.is_some()
    {
        (0..plans.len())
            .map(|k| shard(k, Some(&mut phases)))
            .collect()
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (1..plans.len())
                .map(|k| scope.spawn(move || shard(k, None)))
                .collect();
            let mut out = vec![shard(0, None)];
            for h in handles {
                // A panic in a shard is a bug: propagate it as the panic it was.
                out.push(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
            }
            out
        })
    };
    let mut accumulator = GradientsAccumulator::<LlmEmf>::new();
    let mut loss: Option<Tensor<1>> = None;
    for (grads, l) in results {
        accumulator.accumulate(&model, grads);
        loss = Some(match loss {
            Some(t) => t + l,
            None => l,
        });
    }
    let model = optim.step(learning_rate, model, accumulator.grads());
    phases.mark(|p| &mut p.optimizer);
    if let Some(p) = phases.profile {
        p.steps += 1;
    }
    (model, loss)
}
