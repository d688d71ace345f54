//! The example server (`examples/serve.rs`) on a loopback port: good and bad requests, over
//! HTTP, against a model trained here for one epoch on synthetic data.

mod common;
#[allow(dead_code)]
#[path = "../examples/serve.rs"]
mod serve;

use std::sync::Arc;

use common::{quiet, tiny_config};
use llm_emf::backend;
use llm_emf::recommend::Recommender;
use llm_emf::train::{Preset, train};
use serde_json::{Value, json};

fn trained_run(dir: &std::path::Path) -> Recommender {
    let cfg = tiny_config(Preset::Recommended, 1);
    let device = backend::from_env().unwrap();
    let data = cfg.load_data().unwrap();
    train(&cfg, &data, dir, &device, &quiet()).unwrap();
    Recommender::load(dir, &device).unwrap()
}

/// Starts the server on 127.0.0.1 (a free port) in a background runtime; returns its base URL.
fn start(recommender: Recommender, max_batch: usize) -> String {
    let state = Arc::new(serve::AppState {
        recommender,
        max_batch,
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, serve::app(state)).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

/// POSTs `body` (raw bytes) and returns the status and the JSON answer.
fn post(url: &str, body: &str) -> (u16, Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .unwrap();
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn serves_recommendations_and_rejects_bad_requests_with_4xx() {
    let dir = tempfile::tempdir().unwrap();
    let base = start(trained_run(dir.path()), 4);

    // Health.
    let mut health = ureq::get(&format!("{base}/health")).call().unwrap();
    let health: Value = serde_json::from_str(&health.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["items"], 90);

    // A good request: k items of domain Y (ids 40..90), none from the history, best first.
    let (status, answer) = post(
        &format!("{base}/recommend"),
        &json!({"history": [0, 45, 3], "domain": "Y", "k": 5}).to_string(),
    );
    assert_eq!(status, 200, "{answer}");
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    let scores: Vec<f64> = items.iter().map(|i| i["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    for i in items {
        let id = i["item"].as_u64().unwrap();
        assert!((40..90).contains(&id) && id != 45, "{id}");
    }

    // Candidates restrict the answer; k larger than them returns them all.
    let (status, answer) = post(
        &format!("{base}/recommend"),
        &json!({"history": [1], "domain": "X", "k": 10, "candidates": [2, 5, 7]}).to_string(),
    );
    assert_eq!(status, 200, "{answer}");
    let mut ids: Vec<u64> = answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["item"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![2, 5, 7]);

    // A batch answers each request in order.
    let (status, answer) = post(
        &format!("{base}/recommend/batch"),
        &json!({"requests": [
            {"history": [0], "domain": "X", "k": 2},
            {"history": [], "domain": "Y", "k": 3}
        ]})
        .to_string(),
    );
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results[0]["items"].as_array().unwrap().len(), 2);
    assert_eq!(results[1]["items"].as_array().unwrap().len(), 3);

    // Bad requests: each a 4xx with a message that says what is wrong.
    let cases = [
        ("/recommend", "{not json".to_string(), 400, ""),
        (
            "/recommend",
            json!({"history": [100000], "domain": "Y"}).to_string(),
            400,
            "outside the catalogue",
        ),
        (
            "/recommend",
            json!({"history": [1], "domain": "Z"}).to_string(),
            400,
            "unknown domain",
        ),
        (
            "/recommend",
            json!({"history": [1], "domain": "Y", "k": 0}).to_string(),
            400,
            "k must be at least 1",
        ),
        (
            "/recommend",
            json!({"history": [1], "domain": "X", "candidates": [50]}).to_string(),
            400,
            "not an item of domain",
        ),
        (
            "/recommend/batch",
            json!({"requests": (0..5).map(|_| json!({"history": [], "domain": "X"})).collect::<Vec<_>>()}).to_string(),
            413,
            "at most 4",
        ),
        (
            "/recommend",
            format!("{{\"history\": [{}], \"domain\": \"X\"}}", vec!["1"; 600_000].join(",")),
            413,
            "",
        ),
    ];
    for (path, body, expected, needle) in cases {
        let (status, answer) = post(&format!("{base}{path}"), &body);
        assert_eq!(status, expected, "{path}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default().to_string();
        assert!(
            message.contains(needle),
            "{path}: {message:?} should mention {needle:?}"
        );
        if expected == 400 {
            assert!(!message.is_empty(), "{path}: an error message");
        }
    }
}
