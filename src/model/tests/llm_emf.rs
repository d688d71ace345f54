//! The model: its encoders, widths, learning, weights.

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Int, Tensor, TensorData};

use super::{features, host_queries, host_scores, learned_rows, scalar, setup, train_batch};
use crate::data::DomainId;
use crate::data::batcher::{SequenceBatcher, SubSequence};
use crate::model::*;
use crate::test_device;

#[test]
fn nine_encoders_with_all_modalities_and_fewer_without_features() {
    let s = setup();
    let device = test_device();
    let model = LlmEmf::new(&s.config, &s.data.dataset, &features(&s, &device), &device).unwrap();
    assert_eq!(model.sub_sequences().len(), 3);
    assert_eq!(model.modalities(), Modality::ALL.to_vec());
    let encoders = SubSequence::ALL
        .iter()
        .flat_map(|&q| Modality::ALL.map(|m| model.encoder(q, m).is_some()))
        .filter(|&b| b)
        .count();
    assert_eq!(encoders, 9);
    // Without features, image and text are switched off, not faked.
    let id_only = LlmEmf::new(&s.config, &s.data.dataset, &ItemFeatures::none(), &device).unwrap();
    assert_eq!(id_only.modalities(), vec![Modality::Id]);
    assert_eq!(id_only.modality_weights(), [1.0, 0.0, 0.0]);
    let baseline = LlmEmf::new(
        &s.config.clone().id_only_single_sequence(),
        &s.data.dataset,
        &features(&s, &device),
        &device,
    )
    .unwrap();
    assert_eq!(baseline.sub_sequences(), vec![SubSequence::Merged]);
    assert_eq!(baseline.modalities(), vec![Modality::Id]);
}

#[test]
fn a_modality_weighted_at_zero_is_neither_encoded_nor_scored() {
    let s = setup();
    let device = test_device();
    for learned in [false, true] {
        let config = ModelConfig {
            learned_modality_weights: learned,
            ..s.config.clone()
        };
        let mut model =
            LlmEmf::new(&config, &s.data.dataset, &features(&s, &device), &device).unwrap();
        assert_eq!(model.scored_modalities(DomainId::X).len(), 3);
        // The validation fit's choice of ID and text alone.
        model.fusion.set_weights([0.6, 0.0, 0.4]).unwrap();
        assert_eq!(model.modality_weights()[1], 0.0, "learned {learned}");
        let scored: Vec<Modality> = model
            .scored_modalities(DomainId::X)
            .into_iter()
            .map(|(m, _)| m)
            .collect();
        assert_eq!(
            scored,
            vec![Modality::Id, Modality::Text],
            "learned {learned}"
        );
    }
}

#[test]
fn shared_encoders_read_every_sub_sequence_with_the_merged_encoders() {
    let s = setup();
    let device = test_device();
    let features = features(&s, &device);
    let own = LlmEmf::new(&s.config, &s.data.dataset, &features, &device).unwrap();
    let config = ModelConfig {
        shared_encoders: true,
        ..s.config.clone()
    };
    let shared = LlmEmf::new(&config, &s.data.dataset, &features, &device).unwrap();
    assert_eq!(shared.sub_sequences().len(), 3);
    for m in Modality::ALL {
        let merged = shared.encoder(SubSequence::Merged, m).unwrap();
        for sub in [SubSequence::X, SubSequence::Y] {
            assert!(std::ptr::eq(shared.encoder(sub, m).unwrap(), merged));
        }
    }
    // Two of each modality's three encoders are gone, nothing else.
    let encoder_params: usize = Modality::ALL
        .iter()
        .map(|&m| own.encoder(SubSequence::X, m).unwrap().num_params())
        .sum();
    assert_eq!(own.num_params() - shared.num_params(), 2 * encoder_params);
    // With one kind of sub-sequence switched off there is nothing to share.
    let merged_only = ModelConfig {
        single_domain_sequences: false,
        ..config.clone()
    };
    assert!(!merged_only.shares_encoders());
    let model = LlmEmf::new(&merged_only, &s.data.dataset, &features, &device).unwrap();
    assert_eq!(model.sub_sequences(), vec![SubSequence::Merged]);
    // The loss trains through the shared encoders.
    let batch = train_batch(&s, &device);
    let loss = shared.loss(&batch, &features, &DomainId::BOTH, None);
    assert!(scalar(loss).is_finite());
}

#[test]
fn adapters_tell_the_sub_sequences_apart_on_a_shared_encoder_and_learn() {
    let s = setup();
    let base = test_device();
    let feats = features(&s, &base);
    let shared_config = ModelConfig {
        shared_encoders: true,
        ..s.config.clone()
    };
    let config = ModelConfig {
        adapter_rank: 2,
        ..shared_config.clone()
    };
    let shared = LlmEmf::new(&shared_config, &s.data.dataset, &feats, &base).unwrap();
    let mut model = LlmEmf::new(&config, &s.data.dataset, &feats, &base).unwrap();
    // Per sub-sequence, modality and block, an A [d, 2] and a B [2, d]: nothing else is added.
    let widths: usize = Modality::ALL
        .iter()
        .map(|&m| {
            shared
                .encoder(SubSequence::Merged, m)
                .unwrap()
                .norm
                .gamma
                .dims()[0]
        })
        .sum();
    assert_eq!(
        model.num_params() - shared.num_params(),
        3 * config.layers * 2 * 2 * widths
    );
    for sub in SubSequence::ALL {
        for m in Modality::ALL {
            assert_eq!(model.adapters(sub, m).unwrap().len(), config.layers);
            assert!(shared.adapters(sub, m).is_none());
        }
    }

    let batcher = SequenceBatcher::new(&s.data.dataset, config.max_len);
    let histories: [&[u32]; 2] = [&[0, 1, 2, 30], &[30, 31, 3]];
    let plan = batcher.plan_histories(&histories);
    let inputs = plan.inputs.clone().map(|p| p.to_tensors(&base));
    let query = |model: &LlmEmf, sub: SubSequence| host_queries(model, sub, &inputs, &feats);
    // B starts at zero: the model starts as its shared encoder.
    let mut bare = model.clone();
    bare.adapters.clear();
    for sub in SubSequence::ALL {
        assert_eq!(query(&model, sub), query(&bare, sub));
    }
    // S^X's adapter changes S^X's query only.
    let id_adapters = model.adapters[SubSequence::X.index()].id.as_mut().unwrap();
    id_adapters[0].up.weight = id_adapters[0].up.weight.clone().map(|w| w.ones_like());
    assert_ne!(query(&model, SubSequence::X), query(&bare, SubSequence::X));
    for sub in [SubSequence::Y, SubSequence::Merged] {
        assert_eq!(query(&model, sub), query(&bare, sub));
    }

    // Training moves the adapters (from B = 0: B first) through the packed path.
    let device = base.autodiff();
    let model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
    let batch = train_batch(&s, &device);
    let b = |model: &LlmEmf| -> Vec<f32> {
        model.adapters[SubSequence::Y.index()].id.as_ref().unwrap()[1]
            .up
            .weight
            .val()
            .into_data()
            .try_to_vec()
            .unwrap()
    };
    assert!(b(&model).iter().all(|&v| v == 0.0));
    let loss = model.loss(&batch, &feats, &DomainId::BOTH, None);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut optim = AdamConfig::new().init();
    let model = optim.step(1e-2, model, grads);
    assert!(
        b(&model).iter().any(|&v| v != 0.0),
        "S^Y's adapter learned nothing"
    );

    // Without a shared encoder there is nothing to adapt.
    let err = ModelConfig {
        shared_encoders: false,
        ..config.clone()
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("adapter_rank"), "{err}");
}

#[test]
fn heads_must_divide_feature_width() {
    let s = setup();
    let device = test_device();
    let config = ModelConfig {
        heads: 3,
        id_dim: 9,
        ..s.config.clone()
    };
    let err = LlmEmf::new(&config, &s.data.dataset, &features(&s, &device), &device).unwrap_err();
    assert!(err.to_string().contains("heads"), "{err}");
}

#[test]
fn frozen_features_never_change_while_the_model_learns() {
    let s = setup();
    let base = test_device();
    let device = base.clone().autodiff();
    let feats = features(&s, &base);
    let before = [feats.values(Modality::Image), feats.values(Modality::Text)];
    let train_feats = feats.for_autodiff();
    let mut model = LlmEmf::new(&s.config, &s.data.dataset, &train_feats, &device).unwrap();
    let id_before = learned_rows(&model);
    let mut optim = AdamConfig::new().init();
    let batch = train_batch(&s, &device);
    let first = scalar(model.loss(&batch, &train_feats, &DomainId::BOTH, None));
    for _ in 0..5 {
        let loss = model.loss(&batch, &train_feats, &DomainId::BOTH, None);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.01, model, grads);
    }
    let last = scalar(model.loss(&batch, &train_feats, &DomainId::BOTH, None));
    assert!(
        last < first,
        "loss should fall on a fixed batch: {first} -> {last}"
    );
    let id_after = learned_rows(&model);
    let moved = id_before
        .iter()
        .zip(&id_after)
        .filter(|(a, b)| a != b)
        .count();
    assert!(moved > 0, "the ID table is learnable");
    assert_eq!(
        before,
        [
            train_feats.values(Modality::Image),
            train_feats.values(Modality::Text)
        ]
    );
    assert_eq!(
        before,
        [feats.values(Modality::Image), feats.values(Modality::Text)]
    );
}

#[test]
fn projected_features_learn_and_score_at_the_id_width() {
    let s = setup();
    let base = test_device();
    let device = base.clone().autodiff();
    // Features 8 wide projected to an ID width of 4.
    let config = ModelConfig {
        id_dim: 4,
        project_features: true,
        ..s.config.clone()
    };
    let feats = features(&s, &base).for_autodiff();
    let mut model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
    for m in Modality::ALL {
        assert_eq!(model.head(m, DomainId::Y, &feats).dims(), [40, 4], "{m:?}");
    }
    let weights = |m: &LlmEmf| {
        [m.text_projection.as_ref().unwrap().weight.val()]
            .map(|t| t.into_data().try_to_vec::<f32>().unwrap())
    };
    let before = weights(&model);
    let mut optim = AdamConfig::new().init();
    let batch = train_batch(&s, &device);
    for _ in 0..2 {
        let loss = model.loss(&batch, &feats, &DomainId::BOTH, None);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.01, model, grads);
    }
    let after = weights(&model);
    assert_ne!(before[0], after[0], "the text projection is learned");
    // Scores of a trained model stay finite and cover the domain.
    let valid = model.valid();
    let feats = features(&s, &base);
    let batcher = SequenceBatcher::new(&s.data.dataset, config.max_len);
    let histories: Vec<&[crate::data::ItemId]> = s
        .data
        .dataset
        .train()
        .unwrap()
        .iter()
        .take(3)
        .map(|q| q.items.as_slice())
        .collect();
    let plan = batcher.plan_histories(&histories);
    let inputs = plan.inputs.clone().map(|p| p.to_tensors(&base));
    let scores = valid.score(&plan, &inputs, &feats, DomainId::X).unwrap();
    assert_eq!(scores.dims(), [3, 30]);
    let values = scores.into_data().try_to_vec::<f32>().unwrap();
    assert!(values.iter().all(|v| v.is_finite()));
}

#[test]
fn domain_weights_can_be_set_learned_or_fixed_and_bad_ones_are_refused() {
    let s = setup();
    let device = test_device();
    for learned in [true, false] {
        let config = ModelConfig {
            cross_domain_targets: true,
            objective: DomainObjective::Mixture,
            learned_domain_weights: learned,
            ..s.config.clone()
        };
        let mut model =
            LlmEmf::new(&config, &s.data.dataset, &ItemFeatures::none(), &device).unwrap();
        // Fixed weights are relative to the own sub-sequence's and shared by both targets.
        model
            .domain_loss
            .set_weights(DomainId::X, [0.5, 0.25, 0.25])
            .unwrap();
        let w = model.domain_weights(DomainId::X);
        let total: f64 = w.iter().sum();
        for (got, want) in w.iter().map(|v| v / total).zip([0.5, 0.25, 0.25]) {
            assert!((got - want).abs() < 1e-5, "learned {learned}: {w:?}");
        }
        if learned {
            // A zero weight (the fit's choice of one sub-sequence alone) is exactly zero when
            // read back: that sub-sequence is not encoded or scored at all.
            model
                .domain_loss
                .set_weights(DomainId::Y, [0.0, 0.0, 1.0])
                .unwrap();
            assert_eq!(model.domain_weights(DomainId::Y), [0.0, 0.0, 1.0]);
            assert_eq!(
                model.scored_sub_sequences(DomainId::Y),
                vec![(SubSequence::Merged, 1.0)]
            );
            assert_eq!(model.scored_sub_sequences(DomainId::X).len(), 3);
        }
        for bad in [[-0.1, 0.5, 0.6], [0.0, 0.0, 0.0], [f64::NAN, 0.5, 0.5]] {
            let err = model
                .domain_loss
                .set_weights(DomainId::Y, bad)
                .unwrap_err()
                .to_string();
            assert!(err.contains("domain weights"), "{err}");
        }
    }
}

#[test]
fn fused_queries_score_one_softmax_of_the_weighted_unit_queries_and_learn_their_weights() {
    let s = setup();
    let base = test_device();
    let config = ModelConfig {
        cross_domain_targets: true,
        objective: DomainObjective::Mixture,
        learned_domain_weights: true,
        expert_loss: 1.0,
        query_fusion: true,
        ..s.config.clone()
    };
    let feats = ItemFeatures::none();
    let mut model = LlmEmf::new(&config, &s.data.dataset, &feats, &base).unwrap();
    model
        .domain_loss
        .set_weights(DomainId::X, [0.5, 0.2, 0.3])
        .unwrap();
    // X is 0..30, Y 30..70: the second history has no X item, so S^X takes no part in it.
    let batcher = SequenceBatcher::new(&s.data.dataset, config.max_len);
    let histories: [&[u32]; 2] = [&[0, 1, 2, 30], &[30, 31]];
    let plan = batcher.plan_histories(&histories);
    let inputs = plan.inputs.clone().map(|p| p.to_tensors(&base));
    let scores = |m: &LlmEmf| host_scores(m, &plan, &inputs, &feats, DomainId::X);
    let got = scores(&model);
    // By hand: q = normalise(sum_s w_s q_s) over the sub-sequences present, one softmax of
    // the scaled cosines over X's items.
    let w = model.domain_weights(DomainId::X);
    let queries: Vec<Vec<f32>> = SubSequence::ALL
        .into_iter()
        .map(|sub| host_queries(&model, sub, &inputs, &feats))
        .collect();
    let q_width = config.id_dim;
    let head: Vec<f32> = model
        .head(Modality::Id, DomainId::X, &feats)
        .into_data()
        .try_to_vec()
        .unwrap();
    let scale = 1.0 / model.temperatures()[Modality::Id.index()] as f32;
    let n = 30;
    let present = [[true, true, true], [false, true, true]];
    let mut plain = Vec::new();
    for row in 0..2 {
        let mut q = vec![0.0f32; q_width];
        for (k, sub) in SubSequence::ALL.into_iter().enumerate() {
            if present[row][k] {
                for (a, b) in q.iter_mut().zip(&queries[sub.index()][row * q_width..]) {
                    *a += w[k] as f32 * b;
                }
            }
        }
        let norm = q.iter().map(|v| v * v).sum::<f32>().sqrt();
        let logits: Vec<f32> = (0..n)
            .map(|i| {
                let r = &head[i * q_width..(i + 1) * q_width];
                scale * q.iter().zip(r).map(|(a, b)| a * b).sum::<f32>() / norm
            })
            .collect();
        let max = logits.iter().cloned().fold(f32::MIN, f32::max);
        let total: f32 = logits.iter().map(|l| (l - max).exp()).sum();
        let want: Vec<f32> = logits.iter().map(|l| (l - max).exp() / total).collect();
        for (i, want) in want.iter().enumerate() {
            let got = got[row * n + i];
            assert!(
                (got - want).abs() < 1e-5,
                "row {row}, item {i}: {got} vs {want}"
            );
        }
        plain.extend(want);
    }
    // The probabilities mixed instead (Eq. 11) score otherwise.
    let mut mixed = model.clone();
    mixed.query_fusion = false;
    let other = scores(&mixed);
    assert!(
        other.iter().zip(&plain).any(|(a, b)| (a - b).abs() > 1e-4),
        "fusing the queries changed nothing"
    );

    // Training reaches the sub-sequence weights through the fused query.
    let device = base.autodiff();
    let mut model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
    let logits = |m: &LlmEmf| -> Vec<f32> {
        m.domain_loss
            .logits
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_to_vec()
            .unwrap()
    };
    let before = logits(&model);
    let batch = config
        .batcher(&s.data.dataset)
        .plan_train(
            &s.data
                .dataset
                .train()
                .unwrap()
                .iter()
                .take(16)
                .collect::<Vec<_>>(),
        )
        .to_tensors(&device);
    let mut optim = AdamConfig::new().init();
    for _ in 0..2 {
        let loss = model.loss(&batch, &feats, &DomainId::BOTH, None);
        assert!(scalar(loss.clone()).is_finite());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.01, model, grads);
    }
    assert_ne!(before, logits(&model), "the weights learned nothing");

    // Fusion needs the mixture objective, the merged sequence and cosine heads.
    for bad in [
        ModelConfig {
            objective: DomainObjective::Separate,
            ..config.clone()
        },
        ModelConfig {
            merged_sequence: false,
            ..config.clone()
        },
        ModelConfig {
            head: Head::Dot,
            ..config.clone()
        },
    ] {
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("query_fusion"), "{err}");
    }
}

#[test]
fn item_mask_zeroes_whole_input_vectors_in_training_only() {
    let s = setup();
    let device = test_device().autodiff();
    let config = ModelConfig {
        item_mask: 0.5,
        ..s.config.clone()
    };
    let feats = features(&s, &device);
    let model = LlmEmf::new(&config, &s.data.dataset, &feats, &device).unwrap();
    let mut unmasked = model.clone();
    unmasked.item_mask = 0.0;
    let n = s.data.text.rows();
    let ids: Vec<i64> = (0..n as i64).collect();
    let items = || Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, n]), &device);
    let host = |t: Tensor<3>| -> Vec<Vec<f32>> {
        let d = t.dims()[2];
        let v = t.into_data().try_to_vec::<f32>().unwrap();
        v.chunks(d).map(<[f32]>::to_vec).collect()
    };
    for m in model.modalities() {
        crate::model::dropout::seed_dropout(5);
        let masked = host(model.embed(m, items(), &feats));
        let whole = host(unmasked.embed(m, items(), &feats));
        let zeroed = masked
            .iter()
            .filter(|r| r.iter().all(|&x| x == 0.0))
            .count();
        assert!(
            masked
                .iter()
                .zip(&whole)
                .all(|(a, b)| a.iter().all(|&x| x == 0.0) || a == b),
            "{m:?}: every input vector is whole and unscaled, or zeroed whole"
        );
        assert!(
            zeroed > n / 5 && zeroed < n - n / 5,
            "{m:?}: {zeroed} of {n} masked"
        );
        // The candidates' rows are not masked.
        let heads = |model: &LlmEmf| {
            model
                .head(m, DomainId::X, &feats)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(heads(&model), heads(&unmasked), "{m:?}");
    }
    // Inference (off the autodiff device) reads every item.
    let inner = model.valid();
    let inner_feats = features(&s, &test_device());
    let inner_items =
        Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, n]), &test_device());
    let read = inner
        .embed(Modality::Id, inner_items, &inner_feats)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let whole = unmasked
        .embed(Modality::Id, items(), &feats)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    assert_eq!(read, whole);
    // Bad values are refused by name.
    for p in [1.0, -0.1, f64::NAN] {
        let bad = ModelConfig {
            item_mask: p,
            ..config.clone()
        };
        let Err(err) = LlmEmf::new(&bad, &s.data.dataset, &feats, &device) else {
            panic!("item_mask {p} accepted");
        };
        assert!(err.to_string().contains("item_mask"), "{err}");
    }
}
