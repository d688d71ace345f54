//! Serving latency of [`Recommender`]: one history of 50 items, top-10 among the 64,000 items of
//! a synthetic domain (the size of Movie-Book's Book domain), and batched throughput for 256
//! histories, for an ID-only model and for one with a 384-wide text modality (MiniLM's width),
//! scored at its own width or projected to the ID width.
//! The weights are untrained: latency does not depend on their values.
//!
//! ```text
//! cargo bench --bench recommend
//! ```
//! Criterion prints the median time per call (`time: [low median high]`); docs/results.md
//! records it.

use burn::module::Module;
use criterion::{Criterion, criterion_group, criterion_main};
use llm_emf::backend;
use llm_emf::data::{DomainId, ItemId, SyntheticConfig};
use llm_emf::model::{ItemFeatures, LlmEmf, ModalitySwitches, ModelConfig};
use llm_emf::recommend::{Exclude, Recommender, Request};

fn bench(c: &mut Criterion) {
    backend::tune_allocator();
    let device = backend::from_env().expect("device");
    let data = SyntheticConfig {
        users: 300,
        items_x: 2000,
        items_y: 64_000,
        topics: 50,
        min_len: 54,
        max_len: 60,
        feature_dim: 384,
        ..Default::default()
    }
    .generate()
    .expect("synthetic data");
    let dataset = &data.dataset;
    let history: Vec<ItemId> = dataset.train().expect("train")[0].items[..50].to_vec();
    let histories: Vec<Vec<ItemId>> = dataset
        .train()
        .expect("train")
        .iter()
        .take(256)
        .map(|s| s.items.iter().rev().take(50).rev().copied().collect())
        .collect();

    // The last case maps the 384-wide text features to the ID width
    // (`ModelConfig::project_features`): its text table is 64 wide.
    for (name, id_dim, text, project) in [
        ("ids_q64", 64, false, false),
        ("ids_q256", 256, false, false),
        ("ids_q64+text384", 64, true, false),
        ("ids_q64+text384_projected", 64, true, true),
    ] {
        let config = ModelConfig {
            id_dim,
            project_features: project,
            modalities: ModalitySwitches {
                id: true,
                image: false,
                text,
            },
            ..ModelConfig::recommended()
        };
        let features = ItemFeatures::new(
            None,
            text.then_some(&data.text),
            dataset.num_items(),
            &device,
        )
        .expect("features");
        let model = LlmEmf::new(&config, dataset, &features, &device)
            .expect("model")
            .valid();
        let rec = Recommender::new(model, features, dataset.clone(), &config, &device);
        c.bench_function(&format!("recommend/{name}/one_history_top10_of_64k"), |b| {
            b.iter(|| {
                rec.recommend(&history, DomainId::Y, 10, Exclude::History)
                    .expect("recommend")
            })
        });
        let requests: Vec<Request> = histories
            .iter()
            .map(|h| Request::new(h.clone(), DomainId::Y, 10))
            .collect();
        c.bench_function(&format!("recommend/{name}/batch_256_top10_of_64k"), |b| {
            b.iter(|| rec.recommend_batch(&requests).expect("batch"))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
