//! Criterion benchmarks of the frozen encoders at their real sizes: CLIP ViT-B/32's text tower
//! (64 Art-Office titles, real CLIP tokenizer) and vision tower (16 images of 224x224), with
//! random weights (speed does not depend on the values; real weights are not downloadable here),
//! and all-MiniLM-L6-v2 with its real weights (64 titles).
//!
//! ```text
//! scripts/fetch-weights.sh && cargo bench --bench encoders
//! LLM_EMF_DEVICE=wgpu cargo bench --features wgpu --bench encoders
//! ```

use std::path::PathBuf;

use burn::tensor::{Distribution, Int, Tensor, TensorData};
use criterion::{Criterion, criterion_group, criterion_main};
use llm_emf::backend;
use llm_emf::data::load_dataset;
use llm_emf::features::{ClipConfig, SentenceEncoder, TextTokenizer};

fn bench(c: &mut Criterion) {
    let device = backend::from_env().expect("device");
    let weights =
        PathBuf::from(std::env::var("LLM_EMF_WEIGHTS").unwrap_or_else(|_| {
            format!("{}/.cache/llm-emf-weights", std::env::var("HOME").unwrap())
        }));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = load_dataset(&root.join("../shared/data/art-office")).expect("art-office");
    let titles: Vec<&str> = data
        .items()
        .iter()
        .filter_map(|i| i.title.as_deref())
        .take(64)
        .collect();

    let clip = ClipConfig::default()
        .init(&device)
        .expect("ViT-B/32 config");
    let tok =
        TextTokenizer::clip_from_bpe_vocab(&weights.join("clip/bpe_simple_vocab_16e6.txt.gz"), 77)
            .expect("CLIP vocabulary (run scripts/fetch-weights.sh)");
    let batch = tok.encode_batch(&titles).unwrap();
    let eot: Vec<usize> = batch.lengths.iter().map(|l| l - 1).collect();
    let ids: Vec<i64> = batch.ids.iter().map(|&i| i64::from(i)).collect();
    let mut group = c.benchmark_group("clip-vit-b32");
    group.sample_size(10);
    group.bench_function("text_64_titles", |b| {
        b.iter(|| {
            let t = Tensor::<2, Int>::from_data(
                TensorData::new(ids.clone(), [titles.len(), batch.len]),
                &device,
            );
            clip.text_features(t, &eot).into_data()
        })
    });
    let pixels = Tensor::<4>::random([16, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
    group.bench_function("image_16_images", |b| {
        b.iter(|| clip.image_features(pixels.clone()).into_data())
    });
    group.finish();

    match SentenceEncoder::load(&weights.join("minilm"), &device) {
        Ok(minilm) => {
            let mut group = c.benchmark_group("minilm");
            group.sample_size(10);
            group.bench_function("text_64_titles", |b| {
                b.iter(|| minilm.encode(&titles).unwrap())
            });
            group.finish();
        }
        Err(e) => eprintln!("minilm skipped: {e} (run scripts/fetch-weights.sh)"),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
