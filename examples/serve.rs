//! A JSON HTTP server over a trained model: load it once (a model folder written by `llm-emf
//! export`, or a run folder), answer recommendations.
//!
//! ```text
//! llm-emf export runs/quickstart/recommended --out models/quickstart
//! cargo run --release --example serve -- --model models/quickstart [--addr 127.0.0.1:8080]
//! curl -s localhost:8080/recommend -H 'content-type: application/json' \
//!      -d '{"history": [0, 700, 5], "domain": "Y", "k": 5}'
//! ```
//!
//! Routes:
//! - `GET /health`: `{"status": "ok", "items": N, "domains": [...]}`;
//! - `POST /recommend`: `{"history": [ids], "domain": "X"|"Y"|NAME, "k": 10,
//!   "exclude_history": true, "candidates": [ids]?}` -> `{"items": [{"item", "title", "score"}]}`;
//! - `POST /recommend/batch`: `{"requests": [...]}` -> `{"results": [{"items": [...]}]}`.
//!
//! Bad requests get a 4xx and `{"error": "..."}`: malformed JSON (400), unknown items, an empty
//! `k` or an unknown domain (400), bodies over 1 MiB or batches over `--max-batch` (413).
//! Scoring runs on tokio's blocking pool, so slow requests never stall the server's other work.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use llm_emf::backend;
use llm_emf::data::{DomainId, ItemId};
use llm_emf::recommend::{Exclude, Recommendation, Recommender, Request};
use serde::{Deserialize, Serialize};

/// Largest request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What the handlers share.
pub struct AppState {
    /// The model, loaded once.
    pub recommender: Recommender,
    /// Largest batch accepted.
    pub max_batch: usize,
}

/// One recommendation request as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecommendBody {
    history: Vec<ItemId>,
    domain: String,
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default = "yes")]
    exclude_history: bool,
    #[serde(default)]
    candidates: Option<Vec<ItemId>>,
}

fn default_k() -> usize {
    10
}

fn yes() -> bool {
    true
}

/// A batch of requests as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    requests: Vec<RecommendBody>,
}

#[derive(Debug, Serialize)]
struct Items {
    items: Vec<Recommendation>,
}

/// An error answer: a status and `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError(status, r.body_text())
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

impl AppState {
    fn request(&self, body: RecommendBody) -> Result<Request, ApiError> {
        let dataset = self.recommender.dataset();
        let domain = DomainId::BOTH
            .into_iter()
            .find(|&d| {
                let name = &dataset.domain(d).name;
                body.domain.eq_ignore_ascii_case(name)
                    || body
                        .domain
                        .eq_ignore_ascii_case(if d == DomainId::X { "X" } else { "Y" })
            })
            .ok_or_else(|| {
                bad(format!(
                    "unknown domain {:?}: use X, Y, {:?} or {:?}",
                    body.domain,
                    dataset.domain(DomainId::X).name,
                    dataset.domain(DomainId::Y).name
                ))
            })?;
        Ok(Request {
            history: body.history,
            domain,
            k: body.k,
            exclude: if body.exclude_history {
                Exclude::History
            } else {
                Exclude::Nothing
            },
            candidates: body.candidates,
        })
    }
}

async fn health(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let d = state.recommender.dataset();
    Json(serde_json::json!({
        "status": "ok",
        "items": d.num_items(),
        "domains": [d.domain(DomainId::X).name, d.domain(DomainId::Y).name],
    }))
}

async fn recommend(
    State(state): State<Arc<AppState>>,
    body: Result<Json<RecommendBody>, JsonRejection>,
) -> Result<Json<Items>, ApiError> {
    let Json(body) = body?;
    let request = state.request(body)?;
    let mut out = score(state, vec![request]).await?;
    Ok(Json(Items {
        items: out.pop().unwrap_or_default(),
    }))
}

async fn recommend_batch(
    State(state): State<Arc<AppState>>,
    body: Result<Json<BatchBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body?;
    if body.requests.len() > state.max_batch {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} requests in one batch; at most {} are accepted",
                body.requests.len(),
                state.max_batch
            ),
        ));
    }
    let requests = body
        .requests
        .into_iter()
        .enumerate()
        .map(|(i, b)| {
            state
                .request(b)
                .map_err(|e| ApiError(e.0, format!("request {i}: {}", e.1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let results = score(state, requests).await?;
    let results: Vec<Items> = results.into_iter().map(|items| Items { items }).collect();
    Ok(Json(serde_json::json!({ "results": results })))
}

/// Scores on the blocking pool.
async fn score(
    state: Arc<AppState>,
    requests: Vec<Request>,
) -> Result<Vec<Vec<Recommendation>>, ApiError> {
    tokio::task::spawn_blocking(move || state.recommender.recommend_batch(&requests))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(|e| bad(e.to_string()))
}

/// The server's routes over `state`.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/recommend", post(recommend))
        .route("/recommend/batch", post(recommend_batch))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Serves a trained model's top-k recommendations over HTTP (JSON).
#[derive(Debug, Parser)]
#[command(name = "serve")]
struct Args {
    /// The model folder (`llm-emf export`) or run folder (`llm-emf train --out`).
    #[arg(long, alias = "run")]
    model: PathBuf,
    /// The address to listen on (HOST:PORT).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// The device to score on: cpu, wgpu or cuda (the last two need their cargo feature).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The most histories one batch request may hold.
    #[arg(long, default_value = "256")]
    max_batch: NonZeroUsize,
}

#[allow(dead_code)]
fn main() {
    let args = Args::parse();
    backend::tune_allocator();
    let recommender =
        backend::device(&args.device).and_then(|device| Recommender::load(&args.model, &device));
    let recommender = match recommender {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let state = Arc::new(AppState {
        recommender,
        max_batch: args.max_batch.get(),
    });
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result: std::io::Result<()> = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.addr).await?;
        eprintln!(
            "serving {} on http://{}",
            args.model.display(),
            listener.local_addr()?
        );
        axum::serve(listener, app(state)).await
    });
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
