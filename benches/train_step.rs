//! Criterion benchmarks of the hot paths on the synthetic dataset: one training step (forward,
//! backward, Adam) and the scoring of an evaluation batch, for LLM-EMF with three modalities and
//! for the ID-only single-sequence baseline.
//!
//! ```text
//! cargo bench --bench train_step
//! LLM_EMF_DEVICE=wgpu cargo bench --features wgpu --bench train_step
//! ```

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use criterion::{Criterion, criterion_group, criterion_main};
use llm_emf::backend;
use llm_emf::data::batcher::SequenceBatcher;
use llm_emf::data::{DomainId, Split, SyntheticConfig};
use llm_emf::model::{ItemFeatures, LlmEmf, ModelConfig};

fn bench(c: &mut Criterion) {
    backend::tune_allocator();
    let device = backend::from_env().expect("device");
    let data = SyntheticConfig {
        users: 1000,
        items_x: 2000,
        items_y: 3000,
        topics: 20,
        ..Default::default()
    }
    .generate()
    .expect("synthetic data");
    let dataset = &data.dataset;
    let base = ModelConfig {
        id_dim: 128,
        max_len: 20,
        ..Default::default()
    };
    let batcher = SequenceBatcher::new(dataset, base.max_len);
    let train: Vec<_> = dataset.train().expect("train").iter().take(128).collect();
    let eval: Vec<_> = dataset.examples(Split::Test).iter().take(256).collect();
    let features = ItemFeatures::new(
        Some(&data.image),
        Some(&data.text),
        dataset.num_items(),
        &device,
    )
    .expect("features");

    for (name, config) in [
        ("llm-emf", base.clone()),
        ("baseline", base.clone().id_only_single_sequence()),
    ] {
        let ad = device.clone().autodiff();
        let train_features = features.for_autodiff();
        let mut model = Some(LlmEmf::new(&config, dataset, &features, &ad).expect("model"));
        let mut optim = AdamConfig::new().init();
        let plan = batcher.plan_train(&train);
        c.bench_function(&format!("{name}/train_step_b128"), |b| {
            b.iter(|| {
                let m = model.take().expect("model");
                let batch = plan.to_tensors(&ad);
                let loss = m.loss(&batch, &train_features, &DomainId::BOTH, None);
                let grads = GradientsParams::from_grads(loss.backward(), &m);
                model = Some(optim.step(1e-3, m, grads));
            })
        });
        let valid = model.as_ref().expect("model").valid();
        let eval_plan = batcher.plan_eval(&eval);
        c.bench_function(&format!("{name}/score_b256"), |b| {
            b.iter(|| {
                let inputs = eval_plan.inputs.clone().map(|p| p.to_tensors(&device));
                let scores = valid.score(&eval_plan, &inputs, &features, DomainId::Y);
                scores.expect("scores").into_data()
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
