//! The cross-domain score of Eq. 11-12: the queries of a history (the last position of every
//! sub-sequence's encoder, per modality), their scaled cosine logits against a domain's output
//! tables, and the mixture `sum_s w_s sum_m a_m softmax(logits_{s,m})` over the sub-sequences
//! present, mixed on the host by `model::host` (the one implementation of the rule, which
//! evaluation, [`crate::recommend::Recommender`] and [`LlmEmf::score`] share). The settings a
//! validation fit may change after training ([`ScoreSettings`]) live beside the model file.

use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::config::Modality;
use super::host::HostParts;
use super::items::{ItemFeatures, UnseenRowDraw};
use super::llm_emf::{LlmEmf, l2_normalise};
use crate::data::DomainId;
use crate::data::batcher::{EvalPlan, SubSequence, SubSequenceBatch};
use crate::error::{Error, Result};

/// The settings of the score that a validation fit may change after training and that the
/// model file does not hold (fixed weights and the row shrinkage are constants, not
/// parameters): saved as JSON beside the model file and applied when the model is loaded
/// ([`LlmEmf::apply_score_settings`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "ScoreSettingsFile")]
pub struct ScoreSettings {
    /// Modality weights (id, image, text) of the fusion (Eq. 8).
    pub modality_weights: [f64; 3],
    /// Sub-sequence weights (X, Y, merged) per target domain (X, Y) (Eq. 11).
    pub domain_weights: [[f64; 3]; 2],
    /// Per item domain (X, Y), the prior count of the learned ID rows at inference
    /// ([`LlmEmf::row_shrinkage`]); `None` (the default) uses the domain's rows whole.
    pub row_shrinkage: [Option<f64>; 2],
    /// Per item domain (X, Y), how the learned rows of the items never seen in training were
    /// drawn after training (`train.fit_unseen_rows`; the rows are in the model file); `None`
    /// (the default) where training left them. An item added after training gets the learned
    /// part it implies ([`crate::model::ItemTable::new_item_learned_part`]).
    #[serde(skip_serializing_if = "no_draws")]
    pub unseen_rows: [Option<UnseenRowDraw>; 2],
}

/// Whether no domain's never-seen rows were drawn (the field is then left out of the file).
fn no_draws(draws: &[Option<UnseenRowDraw>; 2]) -> bool {
    draws.iter().all(Option::is_none)
}

/// [`ScoreSettings`] as files hold them, with the keys of the removed popularity adjustment:
/// read when they are 0 (what every file without a fitted adjustment holds), refused otherwise.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreSettingsFile {
    modality_weights: [f64; 3],
    domain_weights: [[f64; 3]; 2],
    #[serde(default)]
    row_shrinkage: [Option<f64>; 2],
    #[serde(default)]
    popularity_exponent: [f64; 2],
    #[serde(default)]
    unseen_boost: [f64; 2],
    #[serde(default)]
    unseen_rows: [Option<UnseenRowDraw>; 2],
}

impl TryFrom<ScoreSettingsFile> for ScoreSettings {
    type Error = String;

    fn try_from(f: ScoreSettingsFile) -> std::result::Result<Self, String> {
        if f.popularity_exponent != [0.0; 2] || f.unseen_boost != [0.0; 2] {
            return Err(format!(
                "popularity_exponent {:?} / unseen_boost {:?}: the popularity adjustment was removed \
                 (it lost on every dataset it was measured on; docs/results.md, \"What did not help\"); \
                 refit the run's score (`llm-emf fit-weights`) or set both to 0",
                f.popularity_exponent, f.unseen_boost
            ));
        }
        Ok(Self {
            modality_weights: f.modality_weights,
            domain_weights: f.domain_weights,
            row_shrinkage: f.row_shrinkage,
            unseen_rows: f.unseen_rows,
        })
    }
}

/// The queries of the Eq. 11 score ([`LlmEmf::score_queries`]).
#[derive(Debug, Clone)]
pub struct ScoreQueries {
    /// The target domain whose items are scored.
    pub domain: DomainId,
    /// Per sub-sequence with a positive weight: the sub-sequence, its weight, and whether each
    /// row has an item of it.
    pub parts: Vec<(SubSequence, f64, Vec<bool>)>,
    /// Per modality: the modality, its weight, and the normalised queries
    /// `[parts * batch, width]`, sub-sequence-major.
    pub modalities: Vec<(Modality, f64, Tensor<2>)>,
}

impl LlmEmf {
    /// The score's settings that the model file does not hold ([`ScoreSettings`]).
    pub fn score_settings(&self) -> ScoreSettings {
        ScoreSettings {
            modality_weights: self.modality_weights(),
            domain_weights: DomainId::BOTH.map(|d| self.domain_weights(d)),
            row_shrinkage: DomainId::BOTH.map(|d| self.row_shrinkage(d)),
            unseen_rows: DomainId::BOTH.map(|d| self.items.as_ref().and_then(|t| t.unseen_draw(d))),
        }
    }

    /// Applies saved score settings: the fixed modality and sub-sequence weights (learned ones
    /// live in the model file and are left as loaded), the row shrinkage and the record of how
    /// the never-seen rows were drawn (an error for a draw without ID rows).
    pub fn apply_score_settings(&mut self, s: &ScoreSettings) -> Result<()> {
        if self.fusion.logits.is_none() {
            self.fusion.set_weights(s.modality_weights)?;
        }
        if self.domain_loss.logits.is_none() {
            for d in DomainId::BOTH {
                self.domain_loss
                    .set_weights(d, s.domain_weights[d.index()])?;
            }
        }
        for d in DomainId::BOTH {
            self.set_row_shrinkage(d, s.row_shrinkage[d.index()])?;
            let draw = s.unseen_rows[d.index()];
            match self.items.as_mut() {
                Some(table) => table.set_unseen_draw(d, draw)?,
                None if draw.is_some() => {
                    return Err(Error::Config(format!(
                        "score settings: unseen_rows {draw:?} for domain {d:?}, but the model has no ID rows"
                    )));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Eq. 11, the cross-domain score of every item of `domain` for each history of the batch:
    /// the fused probabilities (Eq. 8) of the target domain's sub-sequence, of the other
    /// domain's sub-sequence (weight lambda1) and of the merged sequence (weight lambda2), each
    /// from its last position. An empty sub-sequence contributes nothing; the merged sequence
    /// always contributes (for an empty history it gives the encoders' "no history" preference).
    ///
    /// # Errors
    /// If the scores cannot be read back from the device.
    ///
    /// # Shapes
    /// - output `[batch, n_domain]`, on the inputs' device
    pub fn score(
        &self,
        plan: &EvalPlan,
        inputs: &[SubSequenceBatch; 3],
        features: &ItemFeatures,
        domain: DomainId,
    ) -> Result<Tensor<2>> {
        let device = inputs[0].items.device();
        let heads = self.heads(domain, features);
        let parts = HostParts::score(
            self,
            self.score_queries(plan, inputs, features, domain),
            &heads,
        )?;
        let (b, n) = (inputs[0].items.dims()[0], self.domain_rows(domain).1);
        let values: Vec<f32> = (0..b).flat_map(|row| parts.mix_row(row, n)).collect();
        Ok(Tensor::from_data(TensorData::new(values, [b, n]), &device))
    }

    /// The output tables of `domain` as the heads read them (unit ID rows under cosine heads),
    /// one per modality (`None` for modalities the model does not use): what
    /// [`Self::stacked_logits`] reads. They depend on the model only, so a server computes
    /// them once.
    ///
    /// # Shapes
    /// - each: `[n_domain, width]`
    pub fn heads(&self, domain: DomainId, features: &ItemFeatures) -> [Option<Tensor<2>>; 3] {
        let used = self.modalities();
        Modality::ALL.map(|m| used.contains(&m).then(|| self.head(m, domain, features)))
    }

    /// The queries of the Eq. 11 score, before any item is scored: per sub-sequence with a
    /// positive weight, its weight and whether each row has an item of it; per modality, its
    /// weight and the queries (as the heads read them) of every such sub-sequence. A server
    /// scores them against its own copy of the output tables ([`Self::heads`]).
    ///
    /// # Shapes
    /// - each queries tensor `[parts * batch, width]`, sub-sequence-major (rows `k * batch ..
    ///   (k + 1) * batch` belong to `parts[k]`)
    pub fn score_queries(
        &self,
        plan: &EvalPlan,
        inputs: &[SubSequenceBatch; 3],
        features: &ItemFeatures,
        domain: DomainId,
    ) -> ScoreQueries {
        let subs = self.scored_sub_sequences(domain);
        let parts = subs
            .iter()
            .map(|&(s, weight)| {
                let b = inputs[s.index()].items.dims()[0];
                (
                    s,
                    weight,
                    (0..b)
                        .map(|i| s == SubSequence::Merged || plan.non_empty(s, i))
                        .collect(),
                )
            })
            .collect();
        let modalities = self
            .scored_modalities(domain)
            .into_iter()
            .map(|(m, weight)| {
                let queries: Vec<Tensor<2>> = subs
                    .iter()
                    .filter_map(|&(s, _)| {
                        self.sub_sequence_queries(s, m, &inputs[s.index()], features)
                    })
                    .collect();
                (m, weight, Tensor::cat(queries, 0))
            })
            .collect();
        self.fuse_queries(ScoreQueries {
            domain,
            parts,
            modalities,
        })
    }

    /// Under query fusion (`ModelConfig::query_fusion`), the queries of the sub-sequences
    /// fused into one part: per row and modality `normalise(sum_s w_s q_s)` over the
    /// sub-sequences the row has, a part of weight 1 present in every row. Unchanged without
    /// fusion or with a single part. [`Self::score_queries`] returns them fused; a caller
    /// that stacks per-sub-sequence queries of its own fuses them with this.
    pub fn fuse_queries(&self, queries: ScoreQueries) -> ScoreQueries {
        if !self.query_fusion || queries.parts.len() <= 1 {
            return queries;
        }
        let ScoreQueries {
            domain,
            parts,
            modalities,
        } = queries;
        let (k, b) = (parts.len(), parts[0].2.len());
        let coefficients: Vec<f32> = parts
            .iter()
            .flat_map(|(_, w, present)| {
                present
                    .iter()
                    .map(move |&p| if p { *w as f32 } else { 0.0 })
            })
            .collect();
        let modalities = modalities
            .into_iter()
            .map(|(m, weight, q)| {
                let [_, width] = q.dims();
                let c = Tensor::<2>::from_data(
                    TensorData::new(coefficients.clone(), [k * b, 1]),
                    &q.device(),
                );
                let fused = (q * c)
                    .reshape([k, b, width])
                    .sum_dim(0)
                    .reshape([b, width]);
                (m, weight, l2_normalise(fused))
            })
            .collect();
        ScoreQueries {
            domain,
            parts: vec![(SubSequence::Merged, 1.0, vec![true; b])],
            modalities,
        }
    }

    /// The sub-sequences that enter the Eq. 11 score of target domain `domain` (those with an
    /// encoder and a positive weight), with their weights.
    pub fn scored_sub_sequences(&self, domain: DomainId) -> Vec<(SubSequence, f64)> {
        let weights = self.domain_loss.weights(domain);
        self.sub_sequences()
            .into_iter()
            .filter(|s| weights[s.index()] > 0.0)
            .map(|s| (s, weights[s.index()]))
            .collect()
    }

    /// The modalities that enter the Eq. 11 score of `domain` (those with an encoder for every
    /// scored sub-sequence and a positive fusion weight), with their fusion weights.
    pub fn scored_modalities(&self, domain: DomainId) -> Vec<(Modality, f64)> {
        let subs = self.scored_sub_sequences(domain);
        let weights = self.fusion.weights();
        if subs.is_empty() {
            return Vec::new();
        }
        self.modalities()
            .into_iter()
            .filter(|&m| weights[m.index()] > 0.0)
            .filter(|&m| subs.iter().all(|&(s, _)| self.encoder(s, m).is_some()))
            .map(|m| (m, weights[m.index()]))
            .collect()
    }

    /// The query (as the heads read it: L2-normalised, or scaled under dot heads) of the last
    /// position of one sub-sequence and modality, as [`Self::score_queries`] stacks them;
    /// `None` when the model has no encoder for that pair. Rows are independent, so a caller may batch each sub-sequence by its own lengths.
    ///
    /// # Shapes
    /// - output `[batch, width]`
    pub fn sub_sequence_queries(
        &self,
        s: SubSequence,
        m: Modality,
        input: &SubSequenceBatch,
        features: &ItemFeatures,
    ) -> Option<Tensor<2>> {
        let encoder = self.encoder(s, m)?;
        let x = self.embed(m, input.items.clone(), features);
        let last =
            encoder.forward_last_with(x, input.positions.clone(), &input.bias, self.adapters(s, m));
        Some(self.query(last))
    }

    /// The scaled cosine logits of stacked queries ([`ScoreQueries::modalities`]) against
    /// every item of their domain, per modality with an output table in `heads`: one matrix
    /// product per modality for all sub-sequences, in the queries' row order.
    ///
    /// # Shapes
    /// - each output `[parts * batch, n_domain]`
    pub fn stacked_logits(
        &self,
        modalities: Vec<(Modality, f64, Tensor<2>)>,
        heads: &[Option<Tensor<2>>; 3],
    ) -> Vec<(Modality, f64, Tensor<2>)> {
        modalities
            .into_iter()
            .filter_map(|(m, weight, queries)| {
                let head = heads[m.index()].as_ref()?;
                // For a few queries, `head [n, w] x queries^T` reads the large table once in
                // its stored layout (no packed copy of it per call); for many, the result must
                // come out row-major, so the queries are the left operand.
                let logits = if queries.dims()[0] <= 16 {
                    head.clone().matmul(queries.transpose()).transpose()
                } else {
                    queries.matmul(head.clone().transpose())
                };
                Some((m, weight, self.scale(m, logits)))
            })
            .collect()
    }
}
