//! Enrichment through a real LLM server: 20 Art-Office items, each must get non-empty text.
//!
//! Skipped (with a printed reason) unless `LLM_EMF_TEST_LLM` holds the server's base URL, e.g.
//! `LLM_EMF_TEST_LLM=$(scripts/local-llm.sh start) cargo test --release --test enrich_llm`
//! (`scripts/local-llm.sh` builds llama.cpp's `llama-server` and serves SmolLM2-135M-Instruct).
//! `LLM_EMF_TEST_LLM_MODEL` names the model (default `smollm2`; llama-server ignores it).

use std::path::PathBuf;
use std::time::Duration;

use llm_emf::data::load_dataset;
use llm_emf::enrich::{
    self, ChatClient, ClientConfig, EnrichOptions, PromptTemplate, read_records,
};

#[test]
fn twenty_art_office_items_get_text_from_a_real_llm() {
    let Ok(url) = std::env::var("LLM_EMF_TEST_LLM") else {
        eprintln!(
            "skipped: set LLM_EMF_TEST_LLM to an OpenAI-compatible server (scripts/local-llm.sh start)"
        );
        return;
    };
    let data =
        load_dataset(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/art-office"))
            .unwrap();
    let model = std::env::var("LLM_EMF_TEST_LLM_MODEL").unwrap_or_else(|_| "smollm2".into());
    let mut config = ClientConfig::new(url, model);
    config.max_tokens = 192;
    config.timeout = Duration::from_secs(300);
    let client = ChatClient::new(config);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("enriched.jsonl");
    let options = EnrichOptions {
        concurrency: 2,
        limit: Some(20),
        progress: false,
        ..EnrichOptions::default()
    };
    let summary = enrich::enrich(&data, &PromptTemplate::paper(), &client, &out, &options).unwrap();
    eprintln!("{summary}");
    assert_eq!(summary.succeeded, 20, "{summary}");
    let records = read_records(&out).unwrap();
    assert_eq!(records.len(), 20);
    for r in &records {
        let text = r.text.as_deref().unwrap_or("");
        assert!(!text.trim().is_empty(), "item {} got no text", r.item_id);
        assert!(
            !text.contains("<think>"),
            "item {}: reasoning left in",
            r.item_id
        );
    }
}
