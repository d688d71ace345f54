//! Pins the model's numbers: the training loss of a fixed batch and the scores of fixed
//! validation examples, for the paper's model, the recommended one and the titled one (title
//! rows with the row shrinkage, sampled negatives), on a small seeded synthetic world, against
//! `tests/fixtures/golden.json`. A change of the code's layout must leave them equal (to 1e-6,
//! relative above 1); a change that means to move them regenerates the file on purpose:
//!
//! ```sh
//! LLM_EMF_BLESS=1 cargo test --release --test golden
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use llm_emf::backend;
use llm_emf::data::{Candidates, DomainId, Protocol, Split, SyntheticConfig, SyntheticData};
use llm_emf::eval::evaluate;
use llm_emf::model::{DomainNegatives, ItemFeatures, LlmEmf, ModalitySwitches, ModelConfig};

/// What one model setting pins.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
struct Pinned {
    /// The loss of the first 16 training sequences (both target domains).
    loss: f64,
    /// Per target domain (X, Y), the scores (Eq. 11's mixture of probabilities) of the first 6
    /// validation examples of that domain against every item of the domain, row-major.
    scores: [Vec<f64>; 2],
    /// Per target domain, the full-ranking validation MRR (the evaluator's host path).
    mrr: [f64; 2],
}

fn world() -> SyntheticData {
    SyntheticConfig {
        users: 40,
        items_x: 30,
        items_y: 40,
        topics: 3,
        feature_dim: 8,
        ..Default::default()
    }
    .generate()
    .expect("the synthetic world")
}

fn small(config: ModelConfig) -> ModelConfig {
    ModelConfig {
        id_dim: 8,
        max_len: 12,
        dropout: 0.0,
        ..config
    }
}

/// The settings pinned, by name.
fn settings() -> Vec<(&'static str, ModelConfig, bool)> {
    let titled = ModelConfig {
        modalities: ModalitySwitches {
            id: true,
            image: false,
            text: false,
        },
        id_text: true,
        id_row_init: 0.1,
        ..ModelConfig::recommended()
    };
    vec![
        ("paper", small(ModelConfig::default()), false),
        ("recommended", small(ModelConfig::recommended()), false),
        ("titled", small(titled), true),
    ]
}

/// Uniform negatives of a fixed draw for each domain: every third item.
fn negatives(data: &SyntheticData, device: &Device) -> [DomainNegatives; 2] {
    DomainId::BOTH.map(|d| {
        let n = data.dataset.domain(d).len as usize;
        let ids: Vec<i64> = (0..n as i64).step_by(3).collect();
        let k = ids.len();
        let log_q = vec![((k as f64) / (n as f64)).ln() as f32; n];
        DomainNegatives {
            ids: Tensor::<1, Int>::from_data(TensorData::new(ids, [k]), device),
            log_q: Tensor::from_data(TensorData::new(log_q, [n]), device),
        }
    })
}

fn values(t: Tensor<2>) -> Vec<f64> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 values")
        .into_iter()
        .map(f64::from)
        .collect()
}

fn pin(
    data: &SyntheticData,
    config: &ModelConfig,
    sampled: bool,
    device: &Device,
) -> llm_emf::Result<Pinned> {
    let dataset = &data.dataset;
    let features = ItemFeatures::new(
        Some(&data.image),
        Some(&data.text),
        dataset.num_items(),
        device,
    )?;
    device.seed(11);
    let mut model = LlmEmf::new(config, dataset, &features, device)?;
    if config.id_text {
        for d in DomainId::BOTH {
            model.set_row_shrinkage(d, Some(2.0))?;
        }
    }
    let batcher = config.batcher(dataset);
    let train: Vec<_> = dataset.train()?.iter().take(16).collect();
    let batch = batcher.plan_train(&train).to_tensors(device);
    let negatives = sampled.then(|| negatives(data, device));
    let loss: f32 = model
        .loss(&batch, &features, &DomainId::BOTH, negatives.as_ref())
        .into_scalar();
    let mut pinned = Pinned {
        loss: f64::from(loss),
        ..Default::default()
    };
    let examples = dataset.examples(Split::Valid);
    for d in DomainId::BOTH {
        let dom = dataset.domain(d);
        let picked: Vec<_> = examples
            .iter()
            .filter(|e| dom.contains(e.target))
            .take(6)
            .collect();
        let plan = batcher.plan_eval(&picked);
        let inputs = plan.inputs.clone().map(|p| p.to_tensors(device));
        pinned.scores[d.index()] = values(model.score(&plan, &inputs, &features, d)?);
    }
    let candidates = Candidates::sample(dataset, Split::Valid, Protocol::Full, 1, 10)?;
    let eval = evaluate(
        &model,
        &features,
        dataset,
        Split::Valid,
        &candidates,
        &batcher,
        8,
        device,
    )?;
    for d in DomainId::BOTH {
        pinned.mrr[d.index()] = eval.domains[&dataset.domain(d).name].mrr;
    }
    Ok(pinned)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(1.0)
}

#[test]
fn loss_and_scores_match_the_pinned_values() {
    let device = backend::from_env().expect("the test device");
    let data = world();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden.json");
    let mut got = BTreeMap::new();
    for (name, config, sampled) in settings() {
        got.insert(
            name.to_string(),
            pin(&data, &config, sampled, &device).unwrap(),
        );
    }
    if std::env::var_os("LLM_EMF_BLESS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path).expect("tests/fixtures/golden.json");
    let want: BTreeMap<String, Pinned> = serde_json::from_str(&text).unwrap();
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (name, w) in &want {
        let g = &got[name];
        assert!(
            close(w.loss, g.loss),
            "{name}: loss {} != {}",
            g.loss,
            w.loss
        );
        for d in 0..2 {
            assert!(
                close(w.mrr[d], g.mrr[d]),
                "{name}: MRR[{d}] {} != {}",
                g.mrr[d],
                w.mrr[d]
            );
            assert_eq!(w.scores[d].len(), g.scores[d].len(), "{name}: score count");
            for (k, (a, b)) in w.scores[d].iter().zip(&g.scores[d]).enumerate() {
                assert!(close(*a, *b), "{name}: score[{d}][{k}] {b} != {a}");
            }
        }
    }
}
