//! Ranking evaluation of a model on a split under a protocol.

use std::collections::BTreeMap;
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::metrics::{DomainMetrics, PopularitySlice, Rank, rank, rank_in_row};
use crate::data::batcher::{SequenceBatcher, SubSequence};
use crate::data::{Candidates, Dataset, DomainId, ItemId, Protocol, Split};
use crate::error::{Error, Result};
use crate::model::host::HostParts;
use crate::model::{ItemFeatures, LlmEmf, Modality, ScoreQueries, readable_history};

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
    /// Per target domain, the metrics of the examples split by how many training interactions
    /// their target has ([`PopularitySlice`]: cold items, rare ones, popular ones). Empty when
    /// the dataset has no training sequences (and in results written before it existed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub popularity: BTreeMap<String, Vec<PopularitySlice>>,
    /// Per target domain, the MRR of a uniformly random order of each example's candidates
    /// (`H(c) / c` for `c` candidates, averaged over the examples): the chance level that a
    /// slice of [`Evaluation::popularity`] (items never seen in training above all) should
    /// clear. Empty in results written before it existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub chance_mrr: BTreeMap<String, f64>,
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
        // A domain or slice without examples has no metrics: "-", not a zero.
        let pct = |v: f64, n: usize| match n {
            0 => "-".to_string(),
            _ => format!("{:.2}", 100.0 * v),
        };
        for (name, m) in &self.domains {
            writeln!(
                f,
                "{:<12} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
                name,
                pct(m.mrr, m.n),
                pct(m.ndcg5, m.n),
                pct(m.ndcg10, m.n),
                pct(m.hr1, m.n),
                pct(m.hr5, m.n),
                pct(m.hr10, m.n),
                m.n
            )?;
        }
        if let Some(slices) = self.popularity.values().next() {
            writeln!(
                f,
                "MRR in % (examples) by the target's training interactions"
            )?;
            write!(f, "{:<12}", "domain")?;
            for s in slices {
                write!(f, " {:>15}", s.label())?;
            }
            writeln!(f)?;
            for (name, slices) in &self.popularity {
                write!(f, "{name:<12}")?;
                for s in slices {
                    let cell = format!("{} ({})", pct(s.metrics.mrr, s.metrics.n), s.metrics.n);
                    write!(f, " {cell:>15}")?;
                }
                if let Some(chance) = self.chance_mrr.get(name) {
                    write!(f, "   (a random order: {:.2})", 100.0 * chance)?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

/// What [`evaluate`] reads besides the model, the split and the candidates, gathered once for
/// the many evaluations of a run (each epoch's validation, each trial of a fit).
#[derive(Clone, Copy)]
pub struct Evaluator<'a> {
    /// The frozen item features, on `device`.
    pub features: &'a ItemFeatures,
    /// The dataset whose examples are ranked.
    pub dataset: &'a Dataset,
    /// Builds the histories' batches.
    pub batcher: &'a SequenceBatcher,
    /// Examples per batch.
    pub batch_size: usize,
    /// Where the model runs.
    pub device: &'a Device,
}

impl Evaluator<'_> {
    /// [`evaluate`] of `model` on `split` against `candidates`.
    pub fn evaluate(
        &self,
        model: &LlmEmf,
        split: Split,
        candidates: &Candidates,
    ) -> Result<Evaluation> {
        evaluate(
            model,
            self.features,
            self.dataset,
            split,
            candidates,
            self.batcher,
            self.batch_size,
            self.device,
        )
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
    let counts = dataset.has_train().then(|| dataset.train_counts());
    let readable = model.readable_items()?;
    let mut domains = BTreeMap::new();
    let mut popularity = BTreeMap::new();
    let mut chance_mrr = BTreeMap::new();
    for d in DomainId::BOTH {
        let dom = dataset.domain(d);
        let indices: Vec<usize> = (0..examples.len())
            .filter(|&i| dom.contains(examples[i].target))
            .collect();
        // The output tables depend on the model only: normalised once per domain.
        let heads = model.heads(d, features);
        let read: Vec<std::borrow::Cow<[ItemId]>> = indices
            .iter()
            .map(|&i| readable_history(&examples[i].history, readable.as_deref()))
            .collect();
        let histories: Vec<&[ItemId]> = read.iter().map(|h| h.as_ref()).collect();
        let queries = EvalQueries::encode(
            model, features, batcher, d, &histories, &heads, batch_size, device,
        )?;
        // Eq. 11's parts on the device (the matrix products with the output tables), read
        // back once and mixed on the host: under a sampled protocol only the candidates'
        // columns are mixed, each softmax still normalised over the whole domain.
        let per_batch = batch_size.max(1);
        let chunks: Vec<std::ops::Range<usize>> = (0..indices.len())
            .step_by(per_batch)
            .map(|start| start..(start + per_batch).min(indices.len()))
            .collect();
        let rank_chunk = |rows: &std::ops::Range<usize>| -> Result<Vec<Rank>> {
            let parts = HostParts::score(
                model,
                model.fuse_queries(queries.rows(rows.clone(), device)),
                &heads,
            )?;
            let n = dom.len as usize;
            Ok(rows
                .clone()
                .enumerate()
                .map(|(row, k)| {
                    let target = dom.local(examples[indices[k]].target);
                    match protocol {
                        Protocol::Full => {
                            let scores = parts.mix_row(row, n);
                            rank_in_row(&scores, target as usize)
                        }
                        Protocol::C2dsr | Protocol::Abxi => {
                            let columns: Vec<u32> = std::iter::once(target)
                                .chain(
                                    candidates.negatives[indices[k]]
                                        .iter()
                                        .map(|&neg| neg - dom.start),
                                )
                                .collect();
                            let scores = parts.mix_columns(row, n, &columns);
                            rank(scores[0], &scores[1..])
                        }
                    }
                })
                .collect())
        };
        let ranks: Vec<Rank> = parallel_map(&chunks, rayon::current_num_threads(), rank_chunk)
            .into_iter()
            .collect::<Result<Vec<_>>>()?
            .concat();
        domains.insert(dom.name.clone(), DomainMetrics::from_ranks(&ranks));
        let candidates_of = |k: usize| match protocol {
            Protocol::Full => dom.len as usize,
            Protocol::C2dsr | Protocol::Abxi => 1 + candidates.negatives[indices[k]].len(),
        };
        // E[1/rank] of a target tied with all of its c - 1 candidates, once per distinct c.
        let mut by_count: BTreeMap<usize, usize> = BTreeMap::new();
        for k in 0..indices.len() {
            *by_count.entry(candidates_of(k)).or_default() += 1;
        }
        let total: f64 = by_count
            .iter()
            .map(|(&c, &times)| {
                let all_tied = Rank {
                    higher: 0,
                    tied: c.saturating_sub(1),
                };
                all_tied.reciprocal() * times as f64
            })
            .sum();
        if !indices.is_empty() {
            chance_mrr.insert(dom.name.clone(), total / indices.len() as f64);
        }
        if let Some(counts) = &counts {
            let target_counts: Vec<u32> = indices
                .iter()
                .map(|&i| counts[examples[i].target as usize])
                .collect();
            popularity.insert(
                dom.name.clone(),
                PopularitySlice::split(&ranks, &target_counts),
            );
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    Ok(Evaluation {
        protocol,
        split,
        seed: candidates.info.seed,
        domains,
        popularity,
        chance_mrr,
        examples_per_second: examples.len() as f64 / seconds.max(1e-9),
    })
}

/// The normalised queries of every example of one target domain, per scored sub-sequence and
/// modality, on the host. Each sub-sequence is encoded in batches of similar lengths of its
/// own (sorting by the history's length alone pads S^X and S^Y of a batch to very different
/// lengths); rows whose single-domain sub-sequence is empty are not encoded (they take no
/// part in the score).
struct EvalQueries {
    /// The target domain.
    domain: DomainId,
    /// Per scored sub-sequence: the sub-sequence, its weight, whether each row has it.
    parts: Vec<(SubSequence, f64, Vec<bool>)>,
    /// Per scored modality: the modality, its weight, the query width.
    modalities: Vec<(Modality, f64, usize)>,
    /// `values[part][modality]`: `[rows * width]` queries (zeros where a row lacks the part).
    values: Vec<Vec<Vec<f32>>>,
}

impl EvalQueries {
    #[allow(clippy::too_many_arguments)]
    fn encode(
        model: &LlmEmf,
        features: &ItemFeatures,
        batcher: &SequenceBatcher,
        d: DomainId,
        histories: &[&[ItemId]],
        heads: &[Option<Tensor<2>>; 3],
        batch_size: usize,
        device: &Device,
    ) -> Result<Self> {
        let modalities: Vec<(Modality, f64, usize)> = model
            .scored_modalities(d)
            .into_iter()
            .filter_map(|(m, w)| Some((m, w, heads[m.index()].as_ref()?.dims()[1])))
            .collect();
        let mut parts = Vec::new();
        let mut values = Vec::new();
        for (s, weight) in model.scored_sub_sequences(d) {
            let lengths: Vec<usize> = histories
                .iter()
                .map(|h| batcher.sub_sequence(s, h).len())
                .collect();
            let present: Vec<bool> = lengths
                .iter()
                .map(|&l| s == SubSequence::Merged || l > 0)
                .collect();
            let mut order: Vec<usize> = (0..histories.len()).filter(|&i| present[i]).collect();
            order.sort_by_key(|&i| lengths[i]);
            let chunks: Vec<&[usize]> = order.chunks(batch_size.max(1)).collect();
            let per_chunk = parallel_map(&chunks, rayon::current_num_threads(), |chunk| {
                let rows: Vec<&[ItemId]> = chunk.iter().map(|&i| histories[i]).collect();
                let input = batcher.plan_sub_sequence(s, &rows).to_tensors(device);
                modalities
                    .iter()
                    .map(|&(m, _, _)| {
                        let q = model.sub_sequence_queries(s, m, &input, features).expect(
                            "a scored modality has an encoder for every scored sub-sequence",
                        );
                        host_floats(q)
                    })
                    .collect::<Result<Vec<Vec<f32>>>>()
            });
            let mut part_values: Vec<Vec<f32>> = modalities
                .iter()
                .map(|&(_, _, width)| vec![0.0; histories.len() * width])
                .collect();
            for (chunk, chunk_values) in chunks.iter().zip(per_chunk) {
                for ((values, &(_, _, width)), q) in
                    part_values.iter_mut().zip(&modalities).zip(chunk_values?)
                {
                    for (&i, row) in chunk.iter().zip(q.chunks_exact(width)) {
                        values[i * width..(i + 1) * width].copy_from_slice(row);
                    }
                }
            }
            parts.push((s, weight, present));
            values.push(part_values);
        }
        Ok(Self {
            domain: d,
            parts,
            modalities,
            values,
        })
    }

    /// Rows `rows` in [`LlmEmf::score_queries`]'s layout (sub-sequence-major per modality).
    fn rows(&self, rows: std::ops::Range<usize>, device: &Device) -> ScoreQueries {
        let b = rows.len();
        ScoreQueries {
            domain: self.domain,
            parts: self
                .parts
                .iter()
                .map(|(s, w, present)| (*s, *w, present[rows.clone()].to_vec()))
                .collect(),
            modalities: self
                .modalities
                .iter()
                .enumerate()
                .map(|(j, &(m, w, width))| {
                    let mut stacked = Vec::with_capacity(self.parts.len() * b * width);
                    for part in &self.values {
                        stacked.extend_from_slice(&part[j][rows.start * width..rows.end * width]);
                    }
                    let shape = [self.parts.len() * b, width];
                    (
                        m,
                        w,
                        Tensor::from_data(TensorData::new(stacked, shape), device),
                    )
                })
                .collect(),
        }
    }
}

fn host_floats(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::InvalidInput(format!("reading queries back: {e:?}")))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use crate::test_device;

    /// The ranks of `split` from [`LlmEmf::score`] of whole examples, one at a time (every
    /// sub-sequence batched with its example, the full score row mixed, then the candidates'
    /// columns read), each history read as the model reads it ([`LlmEmf::readable_items`]).
    fn device_ranks(
        model: &LlmEmf,
        features: &ItemFeatures,
        dataset: &Dataset,
        split: Split,
        candidates: &Candidates,
        batcher: &SequenceBatcher,
    ) -> BTreeMap<String, Vec<Rank>> {
        let device = test_device();
        let examples = dataset.examples(split);
        let readable = model.readable_items().unwrap();
        let mut out = BTreeMap::new();
        for d in DomainId::BOTH {
            let dom = dataset.domain(d);
            let mut ranks = Vec::new();
            for (i, e) in examples.iter().enumerate() {
                if !dom.contains(e.target) {
                    continue;
                }
                let history = readable_history(&e.history, readable.as_deref());
                let plan = batcher.plan_histories(&[history.as_ref()]);
                let inputs = plan.inputs.clone().map(|p| p.to_tensors(&device));
                let row: Vec<f32> = model
                    .score(&plan, &inputs, features, d)
                    .unwrap()
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                let target = row[dom.local(e.target) as usize];
                ranks.push(match candidates.info.protocol {
                    Protocol::Full => rank_in_row(&row, dom.local(e.target) as usize),
                    _ => {
                        let negs: Vec<f32> = candidates.negatives[i]
                            .iter()
                            .map(|&n| row[dom.local(n) as usize])
                            .collect();
                        rank(target, &negs)
                    }
                });
            }
            out.insert(dom.name.clone(), ranks);
        }
        out
    }

    /// The test split scored both ways: [`device_ranks`] per domain, and [`evaluate`] in
    /// batches of `batch_size`.
    fn device_and_evaluator(
        model: &LlmEmf,
        features: &ItemFeatures,
        dataset: &Dataset,
        candidates: &Candidates,
        batcher: &SequenceBatcher,
        batch_size: usize,
    ) -> (BTreeMap<String, Vec<Rank>>, Evaluation) {
        let ranks = device_ranks(model, features, dataset, Split::Test, candidates, batcher);
        let evaluation = evaluate(
            model,
            features,
            dataset,
            Split::Test,
            candidates,
            batcher,
            batch_size,
            &test_device(),
        )
        .unwrap();
        (ranks, evaluation)
    }

    #[test]
    fn evaluation_ranks_equal_the_device_score_of_whole_examples() {
        let device = test_device();
        let data = crate::test_data(60, 30, 40);
        let dataset = &data.dataset;
        let features = crate::test_features(&data, &device);
        let batcher = SequenceBatcher::new(dataset, 12);
        // The paper's model (three sub-sequences, three modalities, fixed weights), the
        // mixture objective with learned weights, and the same with the queries fused.
        for (joint, fused) in [(false, false), (true, false), (true, true)] {
            let config = ModelConfig {
                id_dim: 8,
                max_len: 12,
                dropout: 0.0,
                cross_domain_targets: joint,
                objective: if joint {
                    crate::model::DomainObjective::Mixture
                } else {
                    crate::model::DomainObjective::default()
                },
                learned_domain_weights: joint,
                learned_modality_weights: joint,
                query_fusion: fused,
                ..Default::default()
            };
            let model = LlmEmf::new(&config, dataset, &features, &device).unwrap();
            for protocol in [Protocol::C2dsr, Protocol::Abxi, Protocol::Full] {
                let candidates = Candidates::sample(dataset, Split::Test, protocol, 7, 20).unwrap();
                // Batches of 5: several batches per sub-sequence, each sorted by its own lengths.
                let (want, got) =
                    device_and_evaluator(&model, &features, dataset, &candidates, &batcher, 5);
                // The chance level: E[1/rank] of a random order of each example's candidates.
                let harmonic = |c: usize| (1..=c).map(|k| 1.0 / k as f64).sum::<f64>() / c as f64;
                for d in DomainId::BOTH {
                    let dom = dataset.domain(d);
                    let of_domain: Vec<f64> = dataset
                        .examples(Split::Test)
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| dom.contains(e.target))
                        .map(|(i, _)| {
                            harmonic(match protocol {
                                Protocol::Full => dom.len as usize,
                                _ => 1 + candidates.negatives[i].len(),
                            })
                        })
                        .collect();
                    let want = of_domain.iter().sum::<f64>() / of_domain.len() as f64;
                    let chance = got.chance_mrr[&dom.name];
                    assert!((chance - want).abs() < 1e-12, "{chance} vs {want}");
                }
                for (name, ranks) in &want {
                    let want = DomainMetrics::from_ranks(ranks);
                    let got = &got.domains[name];
                    assert_eq!(got.n, want.n);
                    assert!(
                        (got.mrr - want.mrr).abs() < 1e-9 && got.hr10 == want.hr10,
                        "{name}, {protocol:?}, mixture {joint}, fused {fused}: {got:?} vs {want:?}"
                    );
                }
            }
        }
    }

    /// With `skip_untrained_inputs`, the items never seen in training are left out of every
    /// history the evaluator reads (as the reference reads them one example at a time), and
    /// that changes the ranks of the examples whose histories hold one.
    #[test]
    fn untrained_items_are_left_out_of_the_histories_when_the_model_asks() {
        let device = test_device();
        let data = crate::test_data(60, 30, 40);
        let dataset = &data.dataset;
        let batcher = SequenceBatcher::new(dataset, 12);
        let features = ItemFeatures::none();
        // The latest history item of every fourth test example, marked as never trained.
        let mut counts = dataset.train_counts();
        let examples = dataset.examples(Split::Test);
        let untrained: Vec<ItemId> = examples
            .iter()
            .step_by(4)
            .filter_map(|e| e.history.last().copied())
            .collect();
        for &i in &untrained {
            counts[i as usize] = 0;
        }
        let sizes = DomainId::BOTH.map(|d| dataset.domain(d).len as usize);
        let catalogue = crate::model::Catalogue::new(sizes, counts).unwrap();
        let config = ModelConfig {
            id_dim: 8,
            max_len: 12,
            dropout: 0.0,
            skip_untrained_inputs: true,
            ..ModelConfig::recommended()
        };
        let model = config.init(&catalogue, &features, &device).unwrap();
        let readable = model.readable_items().unwrap().expect("the switch is on");
        let shortened = examples
            .iter()
            .filter(|e| readable_history(&e.history, Some(&readable)).len() < e.history.len())
            .count();
        assert!(shortened >= untrained.len().min(3), "{shortened}");
        let candidates = Candidates::sample(dataset, Split::Test, Protocol::Abxi, 7, 20).unwrap();
        let (want, got) =
            device_and_evaluator(&model, &features, dataset, &candidates, &batcher, 5);
        for (name, ranks) in &want {
            let want = DomainMetrics::from_ranks(ranks);
            assert!((got.domains[name].mrr - want.mrr).abs() < 1e-9, "{name}");
        }
        // The same weights reading whole histories rank differently.
        let mut whole = model.clone();
        whole.skip_untrained_inputs = false;
        assert!(whole.readable_items().unwrap().is_none());
        let (_, all) = device_and_evaluator(&whole, &features, dataset, &candidates, &batcher, 5);
        assert!(
            DomainId::BOTH.iter().any(|&d| {
                let name = &dataset.domain(d).name;
                (all.domains[name].mrr - got.domains[name].mrr).abs() > 1e-6
            }),
            "{all:?} vs {got:?}"
        );
        // A recommender reads requests the same way.
        let with_latest = examples[0].history.clone();
        let without: Vec<ItemId> = with_latest[..with_latest.len() - 1].to_vec();
        let top = |m: &LlmEmf, history: &[ItemId]| {
            crate::recommend::Recommender::new(
                m.clone(),
                ItemFeatures::none(),
                dataset.clone(),
                &config,
                &device,
            )
            .recommend(history, DomainId::X, 5, crate::recommend::Exclude::Nothing)
            .unwrap()
        };
        assert_eq!(top(&model, &with_latest), top(&model, &without));
        assert_ne!(top(&whole, &with_latest), top(&whole, &without));
        // Only models that read items by their ID rows alone may skip them.
        let text = crate::test_features(&data, &device);
        let err = config
            .init(&catalogue, &text, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("skip_untrained_inputs"), "{err}");
        let titles = ModelConfig {
            id_text: true,
            modalities: crate::model::ModalitySwitches {
                id: true,
                image: false,
                text: false,
            },
            ..config.clone()
        };
        let err = titles
            .init(&catalogue, &text, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains("skip_untrained_inputs"), "{err}");
        // A history left whole is borrowed, not copied.
        let kept = readable_history(&[0, 1], Some(&[true, true, false]));
        assert!(matches!(kept, std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            readable_history(&[0, 2, 1], Some(&[true, true, false])).as_ref(),
            &[0, 1]
        );
    }

    #[test]
    fn a_domain_without_examples_prints_no_metrics() {
        use crate::eval::metrics::{PopularitySlice, Rank};
        let ranked = DomainMetrics::from_ranks(&[Rank { higher: 0, tied: 0 }]);
        let empty = DomainMetrics::from_ranks(&[]);
        let slice = |metrics| PopularitySlice {
            min: 0,
            max: Some(0),
            metrics,
        };
        let evaluation = Evaluation {
            protocol: Protocol::Abxi,
            split: Split::Test,
            seed: 1,
            domains: [("Food".into(), empty), ("Kitchen".into(), ranked)].into(),
            popularity: [
                ("Food".into(), vec![slice(empty)]),
                ("Kitchen".into(), vec![slice(ranked)]),
            ]
            .into(),
            chance_mrr: [("Kitchen".into(), 0.5)].into(),
            examples_per_second: 0.0,
        };
        let text = evaluation.to_string();
        let food: Vec<&str> = text.lines().filter(|l| l.starts_with("Food")).collect();
        assert_eq!(food.len(), 2, "{text}");
        assert!(
            food[0].contains(" - ") && !food[0].contains("0.00"),
            "{text}"
        );
        assert!(
            food[1].contains("- (0)") && !food[1].contains("random"),
            "{text}"
        );
        assert!(
            text.contains("100.00") && text.contains("(a random order: 50.00)"),
            "{text}"
        );
    }
}
