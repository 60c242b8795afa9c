//! A real QStash receiver on axum: the layer on the QStash routes, typed handlers.
//!
//! ```sh
//! QSTASH_CURRENT_SIGNING_KEY=sig_… QSTASH_NEXT_SIGNING_KEY=sig_… \
//! PUBLIC_URL=https://my-tunnel.example.com \
//!   cargo run --example axum_server --features axum
//! ```
//!
//! With deduplication in Redis (shared by several instances):
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run --example axum_server --features axum,redis`.
//!
//! Environment:
//! - `QSTASH_CURRENT_SIGNING_KEY`, `QSTASH_NEXT_SIGNING_KEY`: required (exit status 1 without);
//!   or QStash's multi-region mode: `QSTASH_REGION` and `EU_CENTRAL_1_QSTASH_…` /
//!   `US_EAST_1_QSTASH_…` keys (see `Verifier::from_env`);
//! - `BIND`: the address to listen on (default `127.0.0.1:3000`; port 0 picks a free one, the
//!   first line on stdout says which: `listening on http://ADDR`);
//! - `PUBLIC_URL`: the public base URL QStash delivers to; each route's URL is checked as
//!   `PUBLIC_URL` + path (default `http://` + `BIND`);
//! - `REDIS_URL`: deduplication by message id in this Redis (`redis://…` or `rediss://…`;
//!   needs the `redis` feature); it must answer at start, else the example exits with status 1.
//!   Without it, deduplication is on in memory (this process only);
//! - `REQUEST_TIMEOUT_SECS`: the longest a verified request may take, its body read (an
//!   oversized upload drained) and its handler run included (default 60). Over it: `503` +
//!   `Retry-After: 10`, and the message's lease is released, so QStash's retry runs it again.
//!
//! Deduplication is always on for the verified routes: a message completed once (a 2xx) is
//! answered `200` with `qstash-duplicate: true` and `{"duplicate":true,"messageId":"…"}`
//! without running the handler again; a message being processed is answered `409` +
//! `Retry-After`; a Redis that fails is answered `503` + `Retry-After` (QStash retries).
//!
//! Routes:
//! - `POST /jobs` `{"task": string, "fail_times"?: int, "sleep_ms"?: int}`: counts one run of
//!   `task`, sleeps `sleep_ms`, answers 500 while the task has run at most `fail_times` times,
//!   else 200 `{"task", "message_id", "retried"}`;
//! - `POST /callbacks` (a callback event): 200 `{"source_message_id", "status", "body"}`;
//! - `POST /failures` (a failure callback event): 200 `{"source_message_id", "dlq_id"}`;
//! - `GET /stats` (not verified): `{"runs": {"<task>": n, …}}`.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::BoxError;
use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use qstash_receiver::axum::{Callback, FailureCallback};
use qstash_receiver::dedup::{Dedup, MemoryStore};
use qstash_receiver::tower::QStashLayer;
use qstash_receiver::{Delivery, KeyError, Receiver, UrlPolicy, Verifier};
use serde::Deserialize;
use serde_json::json;
use tower::ServiceBuilder;

#[derive(Clone)]
struct AppState {
    receiver: Receiver,
    runs: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl FromRef<AppState> for Receiver {
    fn from_ref(state: &AppState) -> Receiver {
        state.receiver.clone()
    }
}

#[derive(Deserialize)]
struct Job {
    task: String,
    #[serde(default)]
    fail_times: u64,
    #[serde(default)]
    sleep_ms: Option<u64>,
}

async fn jobs(State(state): State<AppState>, delivery: Delivery, body: Bytes) -> Response {
    // Parsed here rather than with `Json<Job>`: QStash passes the publisher's content type on,
    // which may be missing.
    let job: Job = match serde_json::from_slice(&body) {
        Ok(job) => job,
        Err(e) => {
            let message = format!("not a job: line {} column {}", e.line(), e.column());
            return state.receiver.invalid_payload(message).into_response();
        }
    };
    let run = {
        let mut runs = state.runs.lock().unwrap_or_else(|p| p.into_inner());
        let count = runs.entry(job.task.clone()).or_insert(0);
        *count += 1;
        *count
    };
    if let Some(ms) = job.sleep_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if run <= job.fail_times {
        let body = json!({ "error": "failing on purpose", "task": job.task, "run": run });
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
    }
    Json(json!({
        "task": job.task,
        "message_id": delivery.message_id(),
        "retried": delivery.retried(),
    }))
    .into_response()
}

async fn callbacks(Callback(event): Callback) -> Json<serde_json::Value> {
    Json(json!({
        "source_message_id": event.source_message_id,
        "status": event.status,
        "body": String::from_utf8_lossy(&event.body),
    }))
}

async fn failures(FailureCallback(event): FailureCallback) -> Json<serde_json::Value> {
    Json(json!({
        "source_message_id": event.source_message_id,
        "dlq_id": event.dlq_id,
    }))
}

async fn stats(State(state): State<AppState>) -> Json<serde_json::Value> {
    let runs = state.runs.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Json(json!({ "runs": runs }))
}

/// The deduplication of the `/jobs`, `/callbacks` and `/failures` routes in the Redis at `url`
/// (`REDIS_URL`: shared by every instance); without it, in this process' memory.
#[cfg(feature = "redis")]
async fn redis_dedup(url: &str) -> Result<Dedup, String> {
    match qstash_receiver::dedup::RedisStore::connect(url).await {
        Ok(store) => Ok(Dedup::new(Arc::new(store))),
        // The error names the cause, never the URL (it may hold a password).
        Err(e) => Err(format!("REDIS_URL: cannot connect to Redis: {e}")),
    }
}

#[cfg(not(feature = "redis"))]
async fn redis_dedup(_url: &str) -> Result<Dedup, String> {
    Err(
        "REDIS_URL is set but this example was built without the `redis` feature \
         (add `--features redis`)"
            .to_owned(),
    )
}

fn app(state: AppState, timeout: Duration) -> Router {
    // The timeout wraps the QStash layer: a client trickling its body, or an oversized upload
    // being drained, cannot hold a connection longer than the timeout (the layer bounds the
    // drain in bytes, not in time). A request dropped by it releases its lease.
    let layer = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: BoxError| async {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(RETRY_AFTER, "10")],
                Json(json!({"error": "timeout", "message": "the request took too long"})),
            )
        }))
        .timeout(timeout)
        .layer(QStashLayer::new(state.receiver.clone()));
    Router::new()
        .route("/jobs", post(jobs))
        .route("/callbacks", post(callbacks))
        .route("/failures", post(failures))
        // Only the routes above are verified; /stats is not.
        .route_layer(layer)
        .route("/stats", get(stats))
        .with_state(state)
}

/// What the server runs with, read from its environment.
pub(crate) struct Settings {
    /// Where to listen (`BIND`).
    pub(crate) bind: String,
    public_url: String,
    store: &'static str,
    timeout: Duration,
    state: AppState,
}

/// Reads the settings: the verifier (`Verifier::from_env()` in `main`: the signing keys,
/// QStash's multi-region mode included), then `BIND`,
/// `PUBLIC_URL`, `REDIS_URL` and `REQUEST_TIMEOUT_SECS` through `var`, which looks one variable
/// up. A mistake is a message for the user.
pub(crate) async fn settings(
    verifier: Result<Verifier, KeyError>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Settings, String> {
    let verifier = verifier.map_err(|e| {
        format!(
            "{e}\nset QSTASH_CURRENT_SIGNING_KEY and QSTASH_NEXT_SIGNING_KEY \
             (QStash console, Signing Keys), or QSTASH_REGION and the region-prefixed keys"
        )
    })?;
    let bind = var("BIND").unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let public_url = var("PUBLIC_URL").unwrap_or_else(|| format!("http://{bind}"));
    let policy = UrlPolicy::public_base(&public_url).map_err(|e| format!("PUBLIC_URL: {e}"))?;
    let (dedup, store) = match var("REDIS_URL") {
        None => (Dedup::new(Arc::new(MemoryStore::new())), "memory"),
        Some(url) => (redis_dedup(&url).await?, "redis"),
    };
    let timeout = match var("REQUEST_TIMEOUT_SECS").map(|s| s.parse::<u64>()) {
        None => Duration::from_secs(60),
        Some(Ok(secs)) if secs > 0 => Duration::from_secs(secs),
        Some(_) => {
            return Err("REQUEST_TIMEOUT_SECS must be a positive number of seconds".to_owned());
        }
    };
    let receiver = Receiver::new(verifier).url_policy(policy).dedup(dedup);
    Ok(Settings {
        bind,
        public_url,
        store,
        timeout,
        state: AppState {
            receiver,
            runs: Arc::default(),
        },
    })
}

/// Serves the app on `listener` until the server fails.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    settings: Settings,
) -> std::io::Result<()> {
    axum::serve(listener, app(settings.state, settings.timeout)).await
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let settings = match settings(Verifier::from_env(), |name| std::env::var(name).ok()).await {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let bind = settings.bind.clone();
    let listener = match tokio::net::TcpListener::bind(&bind).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {bind}: {e}");
            return ExitCode::from(1);
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!(
            "listening on http://{addr} (public url {}, dedup in {})",
            settings.public_url, settings.store
        ),
        Err(e) => eprintln!("warning: local address unknown: {e}"),
    }
    if let Err(e) = serve(listener, settings).await {
        eprintln!("error: server failed: {e}");
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
