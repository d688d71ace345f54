//! Unit tests of the model's parts on a small synthetic world.

mod items;
mod llm_emf;
mod loss;

use burn::tensor::{Device, Tensor};

use super::{ItemFeatures, ItemTable, LlmEmf, Modality, ModelConfig};
use crate::data::DomainId;
use crate::data::batcher::{EvalPlan, SequenceBatcher, SubSequence, SubSequenceBatch, TrainBatch};

pub(super) struct Setup {
    pub(super) data: crate::data::SyntheticData,
    pub(super) config: ModelConfig,
}

pub(super) fn setup() -> Setup {
    let data = crate::test_data(40, 30, 40);
    let config = ModelConfig {
        id_dim: 8,
        max_len: 12,
        dropout: 0.0,
        ..Default::default()
    };
    Setup { data, config }
}

pub(super) fn features(s: &Setup, device: &Device) -> ItemFeatures {
    crate::test_features(&s.data, device)
}

pub(super) fn train_batch(s: &Setup, device: &Device) -> TrainBatch {
    let batcher = SequenceBatcher::new(&s.data.dataset, s.config.max_len);
    let seqs: Vec<_> = s.data.dataset.train().unwrap().iter().take(16).collect();
    batcher.plan_train(&seqs).to_tensors(device)
}

/// `model.score` of a planned batch of histories against `domain`'s items, on the host.
pub(super) fn host_scores(
    model: &LlmEmf,
    plan: &EvalPlan,
    inputs: &[SubSequenceBatch; 3],
    feats: &ItemFeatures,
    domain: DomainId,
) -> Vec<f32> {
    model
        .score(plan, inputs, feats, domain)
        .unwrap()
        .into_data()
        .try_to_vec()
        .unwrap()
}

/// `model`'s ID query of sub-sequence `sub` for each planned history, on the host.
pub(super) fn host_queries(
    model: &LlmEmf,
    sub: SubSequence,
    inputs: &[SubSequenceBatch; 3],
    feats: &ItemFeatures,
) -> Vec<f32> {
    model
        .sub_sequence_queries(sub, Modality::Id, &inputs[sub.index()], feats)
        .unwrap()
        .into_data()
        .try_to_vec()
        .unwrap()
}

pub(super) fn scalar(t: Tensor<1>) -> f32 {
    t.into_scalar()
}

/// The model's ID table.
pub(super) fn id_table(model: &LlmEmf) -> &ItemTable {
    model.items.as_ref().expect("the model's ID table")
}

/// The learned ID rows, row-major on the host (an owned copy: on a GPU backend the optimizer
/// may update the table's buffer in place).
pub(super) fn learned_rows(model: &LlmEmf) -> Vec<f32> {
    id_table(model)
        .rows
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

/// Every item's mapped title row `W t_i`.
pub(super) fn mapped_titles(model: &LlmEmf, feats: &ItemFeatures) -> Tensor<2> {
    id_table(model)
        .text_map
        .as_ref()
        .expect("title rows")
        .forward(feats.table(Modality::Text).expect("text features").clone())
}

/// Every item's ID row (its learned row, with its mapped title under title rows), unnormalised.
pub(super) fn all_rows(model: &LlmEmf, feats: &ItemFeatures) -> Tensor<2> {
    id_table(model).pick(feats.table(Modality::Text), |t| t)
}
