//! Ranking evaluation of a model on a split under a protocol.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::metrics::{DomainMetrics, rank};
use crate::data::batcher::SequenceBatcher;
use crate::data::{Candidates, Dataset, DomainId, Protocol, Split};
use crate::error::{Error, Result};
use crate::model::{ItemFeatures, LlmEmf};

/// Metrics of one evaluation, per target domain, with what produced them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The protocol.
    pub protocol: Protocol,
    /// The split.
    pub split: Split,
    /// Seed of the sampled negatives.
    pub seed: u64,
    /// Metrics per target domain, by domain name.
    pub domains: BTreeMap<String, DomainMetrics>,
    /// Examples scored per second (model and ranking), on this run's device.
    pub examples_per_second: f64,
}

impl Evaluation {
    /// The mean of the per-domain MRRs (the early-stopping criterion).
    pub fn mean_mrr(&self) -> f64 {
        if self.domains.is_empty() {
            return 0.0;
        }
        self.domains.values().map(|m| m.mrr).sum::<f64>() / self.domains.len() as f64
    }
}

impl std::fmt::Display for Evaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} split, {} protocol (seed {}), metrics in %",
            self.split, self.protocol, self.seed
        )?;
        writeln!(
            f,
            "{:<12} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
            "domain", "MRR", "NDCG@5", "NDCG@10", "HR@1", "HR@5", "HR@10", "n"
        )?;
        for (name, m) in &self.domains {
            writeln!(
                f,
                "{:<12} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>7}",
                name,
                100.0 * m.mrr,
                100.0 * m.ndcg5,
                100.0 * m.ndcg10,
                100.0 * m.hr1,
                100.0 * m.hr5,
                100.0 * m.hr10,
                m.n
            )?;
        }
        Ok(())
    }
}

/// Ranks every example of `split` and computes the metrics per target domain.
///
/// `candidates` must have been drawn for this dataset and split ([`Candidates::sample`]); under
/// [`Protocol::Full`] every item of the target domain is a candidate. `model` should be in
/// validation mode (`model.valid()`), on `device`, with `features` on the same device.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &LlmEmf,
    features: &ItemFeatures,
    dataset: &Dataset,
    split: Split,
    candidates: &Candidates,
    batcher: &SequenceBatcher,
    batch_size: usize,
    device: &Device,
) -> Result<Evaluation> {
    candidates.check(dataset, split)?;
    let start = Instant::now();
    let examples = dataset.examples(split);
    let protocol = candidates.info.protocol;
    let mut domains = BTreeMap::new();
    for d in DomainId::BOTH {
        let dom = dataset.domain(d);
        let indices: Vec<usize> = (0..examples.len())
            .filter(|&i| dom.contains(examples[i].target))
            .collect();
        // The output tables depend on the model only: normalised once per domain.
        let heads = model.heads(d, features);
        // Histories of similar lengths share a batch (less padding); ranks are put back in
        // example order, so the metrics do not depend on the batching.
        let mut order: Vec<usize> = (0..indices.len()).collect();
        order.sort_by_key(|&k| examples[indices[k]].history.len());
        let chunks: Vec<&[usize]> = order.chunks(batch_size.max(1)).collect();
        let rank_chunk = |chunk: &[usize]| -> Result<Vec<usize>> {
            let batch: Vec<_> = chunk.iter().map(|&k| &examples[indices[k]]).collect();
            let plan = batcher.plan_eval(&batch);
            let inputs = plan.inputs.clone().map(|p| p.to_tensors(device));
            let scores = model.score_with_heads(&plan, &inputs, features, d, &heads);
            let targets: Vec<i64> = batch.iter().map(|e| dom.local(e.target) as i64).collect();
            match protocol {
                Protocol::Full => full_ranks(scores, &targets, device),
                Protocol::C2dsr | Protocol::Abxi => {
                    let lists: Vec<&[u32]> = chunk
                        .iter()
                        .map(|&k| candidates.negatives[indices[k]].as_slice())
                        .collect();
                    sampled_ranks(scores, &targets, &lists, dom.start, device)
                }
            }
        };
        // Batches are independent: as many run at once as the thread pool has threads (the
        // CPU backends use about one core per operation at these sizes).
        let per_chunk = parallel_map(&chunks, rayon::current_num_threads(), |c| rank_chunk(c));
        let mut ranks = vec![0usize; indices.len()];
        for (chunk, chunk_ranks) in chunks.iter().zip(per_chunk) {
            for (&k, r) in chunk.iter().zip(chunk_ranks?) {
                ranks[k] = r;
            }
        }
        domains.insert(dom.name.clone(), DomainMetrics::from_ranks(&ranks));
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Evaluation {
        protocol,
        split,
        seed: candidates.info.seed,
        domains,
        examples_per_second: examples.len() as f64 / seconds.max(1e-9),
    })
}

/// `f` over `items` on up to `workers` threads (scoped), results in item order.
fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let workers = workers.clamp(1, items.len().max(1));
    if workers == 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut out: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

fn host_floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::InvalidInput(format!("reading scores back: {e:?}")))
}

/// Ranks against the target plus its negatives: scores are gathered on the device, ranked on
/// the host. Lists shorter than the longest are padded with the target itself, which never
/// outranks the target.
fn sampled_ranks(
    scores: Tensor<2>,
    targets: &[i64],
    negatives: &[&[u32]],
    domain_start: u32,
    device: &Device,
) -> Result<Vec<usize>> {
    let b = targets.len();
    let width = 1 + negatives.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut index = Vec::with_capacity(b * width);
    for (t, negs) in targets.iter().zip(negatives) {
        index.push(*t);
        index.extend(negs.iter().map(|&n| (n - domain_start) as i64));
        index.extend(std::iter::repeat_n(*t, width - 1 - negs.len()));
    }
    let index = Tensor::<2, Int>::from_data(TensorData::new(index, [b, width]), device);
    let gathered = host_floats(scores.gather(1, index))?;
    Ok(gathered
        .chunks(width)
        .map(|row| rank(row[0], &row[1..]))
        .collect())
}

/// Ranks against every item of the domain, counting on the device.
fn full_ranks(scores: Tensor<2>, targets: &[i64], device: &Device) -> Result<Vec<usize>> {
    let b = targets.len();
    let [_, n] = scores.dims();
    let index = Tensor::<2, Int>::from_data(TensorData::new(targets.to_vec(), [b, 1]), device);
    let target_scores = scores.clone().gather(1, index);
    let higher = scores
        .greater(target_scores.clone().expand([b, n]))
        .int()
        .sum_dim(1);
    let higher: Vec<i64> = higher
        .into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .map_err(|e| Error::InvalidInput(format!("reading ranks back: {e:?}")))?;
    let target_scores = host_floats(target_scores)?;
    Ok(higher
        .into_iter()
        .zip(target_scores)
        // A NaN target score ranks last, as in `metrics::rank`.
        .map(|(h, t)| if t.is_nan() { n } else { 1 + h as usize })
        .collect())
}
