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
    for (objective, loss_average) in [
        (DomainObjective::Separate, LossAverage::Transition),
        (DomainObjective::Mixture, LossAverage::Transition),
        (DomainObjective::Mixture, LossAverage::Sequence),
    ] {
        let config = ModelConfig {
            cross_domain_targets: objective.is_joint(),
            objective,
            loss_average,
            expert_loss: if objective.is_joint() { 0.5 } else { 0.0 },
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
            "{objective:?}, {loss_average:?}: {full} vs {sum}"
        );
    }
}

#[test]
fn sequence_average_is_the_mean_of_each_sequences_own_loss_per_domain() {
    // Averaged per sequence, a batch's loss is the mean over its (sequence, domain) pairs of
    // the loss of that sequence alone on that domain's transitions (which, for one sequence,
    // the transition average also gives); averaged per transition, long sequences weigh more.
    let s = setup();
    let device = test_device();
    let config = |loss_average| ModelConfig {
        cross_domain_targets: true,
        objective: DomainObjective::Mixture,
        learned_domain_weights: true,
        learned_modality_weights: true,
        expert_loss: 0.5,
        loss_average,
        ..s.config.clone()
    };
    let feats = features(&s, &device);
    let per_sequence = config(LossAverage::Sequence);
    let model = LlmEmf::new(&per_sequence, &s.data.dataset, &feats, &device).unwrap();
    let batcher = per_sequence.batcher(&s.data.dataset);
    let seqs: Vec<_> = s.data.dataset.train().unwrap().iter().take(6).collect();
    let lengths: Vec<usize> = seqs.iter().map(|q| q.items.len()).collect();
    assert!(
        lengths.iter().min() != lengths.iter().max(),
        "the test needs sequences of different lengths: {lengths:?}"
    );
    let batch = batcher.plan_train(&seqs).to_tensors(&device);
    let whole = scalar(model.loss(&batch, &feats, &DomainId::BOTH, None));
    let (mut own, mut pairs) = (0f32, 0usize);
    for seq in &seqs {
        let alone = batcher.plan_train(std::slice::from_ref(seq));
        for d in DomainId::BOTH {
            if alone.mixture.as_ref().unwrap()[d.index()].local.is_empty() {
                continue;
            }
            let b = alone.to_tensors(&device);
            own += scalar(model.loss(&b, &feats, &[d], None));
            pairs += 1;
        }
    }
    let expected = own / pairs as f32;
    assert!(
        (whole - expected).abs() < 1e-4 * expected.abs().max(1.0),
        "per sequence {whole} against the mean of the {pairs} pairs' own losses {expected}"
    );
    // The same weights averaged per transition give another number.
    let mut per_transition = model.clone();
    per_transition.domain_loss.per_sequence = false;
    let transitions = scalar(per_transition.loss(&batch, &feats, &DomainId::BOTH, None));
    assert!(
        (transitions - whole).abs() > 1e-3,
        "per transition {transitions} equals per sequence {whole}"
    );
}

#[test]
fn sequence_weights_sum_to_one_per_sequence() {
    let plan = crate::data::batcher::MixturePlan {
        sequence: vec![0, 0, 0, 2, 5, 5],
        ..Default::default()
    };
    assert_eq!(plan.sequences(), 3);
    let w = plan.sequence_weights();
    let third = 1.0 / 3.0;
    assert_eq!(w, vec![third, third, third, 1.0, 0.5, 0.5]);
    assert_eq!(crate::data::batcher::MixturePlan::default().sequences(), 0);
}

#[test]
fn sequence_average_needs_the_mixture_objective() {
    let config = ModelConfig {
        loss_average: LossAverage::Sequence,
        ..ModelConfig::default()
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(err.contains("loss_average"), "{err}");
    let mixture = ModelConfig {
        loss_average: LossAverage::Sequence,
        ..ModelConfig::recommended()
    };
    mixture.validate().unwrap();
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
    let batch = train_batch(&s, &device);
    let negatives: [DomainNegatives; 2] = std::array::from_fn(|d| {
        let n = if d == 0 { 30 } else { 40 };
        let ids: Vec<i64> = (0..n as i64).collect();
        DomainNegatives {
            ids: Tensor::from_data(TensorData::new(ids, [n]), &device),
            log_q: Tensor::from_data(TensorData::new(vec![0.0f32; n], [n]), &device),
        }
    });
    for head in [Head::Cosine, Head::Dot] {
        let config = ModelConfig {
            head,
            ..s.config.clone()
        };
        let model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
        let full = scalar(model.loss(&batch, &feats, &DomainId::BOTH, None));
        let sampled = scalar(model.loss(&batch, &feats, &DomainId::BOTH, Some(&negatives)));
        assert!(full.is_finite(), "{head:?}");
        assert!(
            (full - sampled).abs() < 1e-3,
            "{head:?}: {full} vs {sampled}"
        );
    }
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

#[test]
fn contrastive_term_is_the_symmetric_info_nce_of_each_rows_last_position() {
    use crate::data::batcher::PaddedPlan;
    let device = test_device();
    // S^X rows of 1, 0 and 2 items: packed rows 0 (row 0) and 1, 2 (row 2); the last
    // positions are packed rows 0 and 2. S^Y has one non-empty row (no pair); the merged
    // sequence has no encoder output.
    let x = PaddedPlan::new(&[&[1], &[], &[2, 3]], 10);
    let y = PaddedPlan::new(&[&[4], &[], &[]], 10);
    let merged = PaddedPlan::new(&[&[1], &[5], &[2, 3]], 10);
    let a: Vec<f32> = vec![1.0, 0.0, 0.5, 0.5, 0.0, 2.0, 0.3, -1.0, 0.0];
    let b: Vec<f32> = vec![0.8, 0.3, 0.0, 9.0, 9.0, 9.0, 0.1, -2.0, 0.4];
    let hidden = |v: &[f32]| TrainHidden {
        hidden: [
            vec![Tensor::<2>::from_data(
                TensorData::new(v.to_vec(), [3, 3]),
                &device,
            )],
            vec![Tensor::<2>::from_data(
                TensorData::new(vec![1.0f32, 2.0, 3.0], [1, 3]),
                &device,
            )],
            Vec::new(),
        ],
    };
    let s = setup();
    let model = LlmEmf::new(&s.config, &s.data.dataset, &features(&s, &device), &device).unwrap();
    let temperature = 0.5;
    let got = scalar(
        model
            .contrastive_loss(
                &hidden(&a),
                &hidden(&b),
                &[x.clone(), y.clone(), merged.clone()],
                temperature,
            )
            .expect("S^X has two rows"),
    );

    // The reference on the host: rows 0 and 2 of each view, normalised.
    let unit = |v: &[f32], r: usize| -> Vec<f64> {
        let row: Vec<f64> = v[r * 3..r * 3 + 3].iter().map(|&x| f64::from(x)).collect();
        let n = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        row.iter().map(|x| x / n).collect()
    };
    let za = [unit(&a, 0), unit(&a, 2)];
    let zb = [unit(&b, 0), unit(&b, 2)];
    let dot = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(x, y)| x * y).sum::<f64>() / temperature;
    let lse = |v: [f64; 2]| (v[0].exp() + v[1].exp()).ln();
    let mut want = 0.0;
    for i in 0..2 {
        let own = dot(&za[i], &zb[i]);
        want += 0.5 * (lse([dot(&za[i], &zb[0]), dot(&za[i], &zb[1])]) - own);
        want += 0.5 * (lse([dot(&za[0], &zb[i]), dot(&za[1], &zb[i])]) - own);
    }
    assert!((f64::from(got) - want).abs() < 1e-5, "{got} vs {want}");

    // No sub-sequence with two non-empty rows: no term.
    let one = PaddedPlan::new(&[&[1], &[], &[]], 10);
    assert!(
        model
            .contrastive_loss(
                &hidden(&a),
                &hidden(&b),
                &[one.clone(), one.clone(), one],
                temperature
            )
            .is_none()
    );
}

#[test]
fn contrastive_views_differ_under_dropout_and_train_the_encoders() {
    let s = setup();
    let device = test_device().autodiff();
    let config = ModelConfig {
        dropout: 0.5,
        ..s.config.clone()
    };
    let feats = features(&s, &device);
    let model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
    let batcher = config.batcher(&s.data.dataset);
    let seqs: Vec<_> = s.data.dataset.train().unwrap().iter().take(16).collect();
    let plan = batcher.plan_train(&seqs);
    let batch = plan.to_tensors(&device);
    let a = model.encode_train(&batch, &feats);
    let b = model.encode_train(&batch, &feats);
    let same = model.contrastive_loss(&a, &a, &plan.inputs, 1.0).unwrap();
    let term = model.contrastive_loss(&a, &b, &plan.inputs, 1.0).unwrap();
    // Two dropout views are farther apart than a view and itself.
    assert!(
        scalar(term.clone()) > scalar(same),
        "dropout views should differ"
    );
    let grads = term.backward();
    let encoder = model
        .encoder(crate::data::SubSequence::Merged, Modality::Id)
        .expect("the merged ID encoder");
    let g = encoder.blocks[0]
        .qkv
        .weight
        .grad(&grads)
        .expect("a gradient for the encoder")
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert!(g.iter().any(|v| v.abs() > 0.0));
}
