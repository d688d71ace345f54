//! The training loss and the score.

use burn::tensor::{Tensor, TensorData};

use super::{features, scalar, setup, train_batch};
use crate::data::DomainId;
use crate::data::batcher::SequenceBatcher;
use crate::model::*;
use crate::test_device;

#[test]
fn mixture_loss_at_uniform_scores_is_the_log_of_the_domain_size() {
    // With a tiny logit scale every expert predicts the uniform distribution, so a mixture
    // of them with weights summing to 1 gives -log P = log(n_domain) for every target.
    let s = setup();
    let device = test_device();
    for (objective, learned, expert_loss) in [
        (DomainObjective::Mixture, true, 0.0),
        (DomainObjective::Mixture, true, 0.5),
        (DomainObjective::Mixture, false, 0.0),
    ] {
        let config = ModelConfig {
            temperature: TemperatureConfig {
                init: 1e6,
                learnable: false,
            },
            cross_domain_targets: true,
            objective,
            learned_domain_weights: learned,
            learned_modality_weights: learned,
            expert_loss,
            ..s.config.clone()
        };
        let feats = features(&s, &device);
        let model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
        let seqs: Vec<_> = s.data.dataset.train().unwrap().iter().take(16).collect();
        let plan = config.batcher(&s.data.dataset).plan_train(&seqs);
        let [mx, my] = plan.mixture.clone().unwrap();
        let batch = plan.to_tensors(&device);
        let loss = scalar(model.loss(&batch, &feats, &DomainId::BOTH, None)) as f64;
        let (nx, ny) = (mx.local.len() as f64, my.local.len() as f64);
        let mixture = (nx * 30f64.ln() + ny * 40f64.ln()) / (nx + ny);
        // The mixture is renormalised over the sub-sequences present in each row, so it
        // is exact whatever the weights; the experts' mean NLL counts present rows only.
        let (low, high) = if expert_loss > 0.0 {
            (mixture, 1.5 * mixture + 1e-3)
        } else {
            (mixture - 1e-3, mixture + 1e-3)
        };
        assert!(
            (low..=high).contains(&loss),
            "{objective:?}, learned {learned}, expert {expert_loss}: {loss} not in [{low}, {high}]"
        );
    }
}

#[test]
fn shard_losses_add_up_to_the_whole_batch() {
    // Each part of a batch normalised by the whole batch's counts: the parts' losses sum to
    // the whole batch's loss, under both objectives.
    let s = setup();
    let device = test_device();
    for objective in [DomainObjective::Separate, DomainObjective::Mixture] {
        let config = ModelConfig {
            cross_domain_targets: objective.is_joint(),
            objective,
            ..s.config.clone()
        };
        let feats = features(&s, &device);
        let model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
        let batcher = config.batcher(&s.data.dataset);
        let seqs: Vec<_> = s.data.dataset.train().unwrap().iter().take(16).collect();
        let whole = batcher.plan_train(&seqs);
        let parts = [
            batcher.plan_train(&seqs[..7]),
            batcher.plan_train(&seqs[7..]),
        ];
        let counts = crate::data::batcher::TargetCounts::of(&parts);
        assert_eq!(
            counts,
            crate::data::batcher::TargetCounts::of(std::slice::from_ref(&whole))
        );
        let full = scalar(model.loss(&whole.to_tensors(&device), &feats, &DomainId::BOTH, None));
        let sum: f32 = parts
            .iter()
            .map(|p| {
                let b = p.to_tensors(&device);
                let h = model.encode_train(&b, &feats);
                scalar(model.loss_from(&h, &b, &feats, &DomainId::BOTH, None, Some(&counts)))
            })
            .sum();
        assert!(
            (full - sum).abs() < 1e-3 * full.abs().max(1.0),
            "{objective:?}: {full} vs {sum}"
        );
    }
}

#[test]
fn full_loss_matches_uniform_guess_at_init_scale() {
    // With a tiny logit scale every item is nearly equally likely, so each sub-sequence's
    // mean NLL is close to log(n_domain) and the total follows the lambda weights.
    let s = setup();
    let device = test_device();
    let config = ModelConfig {
        temperature: TemperatureConfig {
            init: 1e6,
            learnable: false,
        },
        ..s.config.clone()
    };
    let model = LlmEmf::new(&config, &s.data.dataset, &ItemFeatures::none(), &device).unwrap();
    let batch = train_batch(&s, &device);
    let loss = scalar(model.loss(&batch, &ItemFeatures::none(), &[DomainId::X], None));
    // Target X: L^X + 0.3 L^Y + 0.1 L^{X+Y}; L^{X+Y} mixes log 30 and log 40.
    let (lx, ly) = ((30f64).ln(), (40f64).ln());
    let nx = batch.targets[2][0].as_ref().unwrap().local_ids.len() as f64;
    let ny = batch.targets[2][1].as_ref().unwrap().local_ids.len() as f64;
    let merged = (nx * lx + ny * ly) / (nx + ny);
    let expected = lx + 0.3 * ly + 0.1 * merged;
    assert!(
        (loss as f64 - expected).abs() < 1e-3,
        "{loss} vs {expected}"
    );
    // Both target domains: the two per-domain losses are summed.
    let both = scalar(model.loss(&batch, &ItemFeatures::none(), &DomainId::BOTH, None));
    let expected_both = expected + ly + 0.3 * lx + 0.1 * merged;
    assert!(
        (both as f64 - expected_both).abs() < 1e-3,
        "{both} vs {expected_both}"
    );
}

#[test]
fn sampled_loss_with_all_items_as_negatives_approaches_full_loss() {
    // Uniform sampling with every item of the domain as a negative: log-Q correction is a
    // constant shift, the accidental hit (the target itself) is removed, so the sampled
    // softmax equals the full softmax.
    let s = setup();
    let device = test_device();
    let feats = features(&s, &device);
    let model = LlmEmf::new(&s.config, &s.data.dataset, &feats, &device).unwrap();
    let batch = train_batch(&s, &device);
    let full = scalar(model.loss(&batch, &feats, &DomainId::BOTH, None));
    let negatives: [DomainNegatives; 2] = std::array::from_fn(|d| {
        let n = if d == 0 { 30 } else { 40 };
        let ids: Vec<i64> = (0..n as i64).collect();
        DomainNegatives {
            ids: Tensor::from_data(TensorData::new(ids, [n]), &device),
            log_q: Tensor::from_data(TensorData::new(vec![0.0f32; n], [n]), &device),
        }
    });
    let sampled = scalar(model.loss(&batch, &feats, &DomainId::BOTH, Some(&negatives)));
    assert!((full - sampled).abs() < 1e-3, "{full} vs {sampled}");
}

#[test]
fn scores_are_finite_for_empty_sub_sequences_and_histories() {
    let s = setup();
    let device = test_device();
    let feats = features(&s, &device);
    let model = LlmEmf::new(&s.config, &s.data.dataset, &feats, &device).unwrap();
    let batcher = SequenceBatcher::new(&s.data.dataset, s.config.max_len);
    // Only X items (S^Y empty), only Y items (S^X empty), nothing at all.
    let histories: [&[u32]; 3] = [&[0, 1, 2], &[30, 31], &[]];
    let plan = batcher.plan_histories(&histories);
    let inputs = plan.inputs.clone().map(|p| p.to_tensors(&device));
    for d in DomainId::BOTH {
        let scores = model.score(&plan, &inputs, &feats, d).unwrap();
        let n = if d == DomainId::X { 30 } else { 40 };
        assert_eq!(scores.dims(), [3, n]);
        let values = scores.into_data().try_to_vec::<f32>().unwrap();
        assert!(values.iter().all(|v| v.is_finite()));
        // Each row is a mixture of distributions: it sums to the weights of the
        // contributing sub-sequences (1 + 0.1 with one side empty).
        let row0: f32 = values[..n].iter().sum();
        let expected = if d == DomainId::X { 1.1 } else { 0.3 + 0.1 };
        assert!((row0 - expected).abs() < 1e-3, "{row0} vs {expected}");
    }
}
