//! An actix-web receiver of QStash deliveries, callbacks and failure callbacks.
//!
//! ```sh
//! QSTASH_CURRENT_SIGNING_KEY=sig_… QSTASH_NEXT_SIGNING_KEY=sig_… \
//! PUBLIC_URL=https://my-app.example.com cargo run --example actix_server --features actix-web
//! ```
//!
//! With deduplication in Redis (shared by several instances):
//! `REDIS_URL=redis://127.0.0.1:6379 cargo run --example actix_server --features actix-web,redis`.
//!
//! Environment:
//! - `QSTASH_CURRENT_SIGNING_KEY`, `QSTASH_NEXT_SIGNING_KEY` (required: exits with status 1
//!   when missing);
//! - `BIND` (default `127.0.0.1:3000`);
//! - `PUBLIC_URL`: the public base URL QStash delivers to; each route's URL is checked as
//!   `PUBLIC_URL` + path (default `http://` + `BIND`);
//! - `REDIS_URL`: deduplication by message id in this Redis (`redis://…` or `rediss://…`;
//!   needs the `redis` feature); it must answer at start, else the example exits with status 1.
//!   Without it, deduplication is on in memory (this process only).
//!
//! Deduplication is always on for the verified routes: a message completed once (a 2xx) is
//! answered `200` with `qstash-duplicate: true` and `{"duplicate":true,"messageId":"…"}`
//! without running the handler again; a message being processed is answered `409` +
//! `Retry-After`; a Redis that fails is answered `503` + `Retry-After` (QStash retries).
//!
//! Routes:
//! - `POST /jobs` `{"task": string, "fail_times": int (default 0), "sleep_ms": int (optional)}`:
//!   counts one run of `task`, sleeps `sleep_ms`, answers 500 while the task has run at most
//!   `fail_times` times, then 200 `{"task", "message_id", "retried"}`;
//! - `POST /callbacks` (a callback event): 200 `{"source_message_id", "status", "body"}`;
//! - `POST /failures` (a failure callback event): 200 `{"source_message_id", "dlq_id"}`;
//! - `GET /stats`, not verified: `{"runs": {"<task>": n, …}}`.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use qstash_receiver::actix::{Callback, FailureCallback, QStashMiddleware, Verified};
use qstash_receiver::dedup::{Dedup, MemoryStore};
use qstash_receiver::{Delivery, KeyError, Receiver, Rejection, UrlPolicy, Verifier};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Job {
    task: String,
    #[serde(default)]
    fail_times: u64,
    #[serde(default)]
    sleep_ms: Option<u64>,
}

/// Runs per task.
#[derive(Default)]
struct Runs(Mutex<HashMap<String, u64>>);

impl Runs {
    fn count(&self, task: &str) -> u64 {
        let mut runs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = runs.entry(task.to_owned()).or_insert(0);
        *n += 1;
        *n
    }

    fn snapshot(&self) -> HashMap<String, u64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

async fn jobs(
    Verified(body): Verified<web::Bytes>,
    delivery: Delivery,
    receiver: web::Data<Receiver>,
    runs: web::Data<Runs>,
) -> Result<HttpResponse, Rejection> {
    // Parsed whatever the Content-Type (QStash passes the publisher's through). The message
    // gives the position only: serde's own text may quote the body.
    let job: Job = serde_json::from_slice(&body).map_err(|e| {
        receiver.invalid_payload(format!(
            "not a job: line {} column {}",
            e.line(),
            e.column()
        ))
    })?;
    let run = runs.count(&job.task);
    if let Some(ms) = job.sleep_ms {
        actix_web::rt::time::sleep(Duration::from_millis(ms)).await;
    }
    if run <= job.fail_times {
        return Ok(HttpResponse::InternalServerError().json(json!({
            "error": "job_failed",
            "message": format!("run {run} of {} fails on purpose", job.task),
        })));
    }
    Ok(HttpResponse::Ok().json(json!({
        "task": job.task,
        "message_id": delivery.message_id(),
        "retried": delivery.retried(),
    })))
}

async fn callbacks(Callback(event): Callback) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "source_message_id": event.source_message_id,
        "status": event.status,
        "body": String::from_utf8_lossy(&event.body),
    }))
}

async fn failures(FailureCallback(event): FailureCallback) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "source_message_id": event.source_message_id,
        "dlq_id": event.dlq_id,
    }))
}

async fn stats(runs: web::Data<Runs>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "runs": runs.snapshot() }))
}

/// What the server runs with, read from its environment.
pub(crate) struct Settings {
    /// Where to listen (`BIND`).
    pub(crate) bind: String,
    store: &'static str,
    receiver: Receiver,
}

/// Reads the settings: the verifier (`Verifier::from_env()` in `main`: the signing keys,
/// QStash's multi-region mode included), then `BIND`,
/// `PUBLIC_URL` and `REDIS_URL` through `var`, which looks one variable up. A mistake is a
/// message for the user.
pub(crate) async fn settings(
    verifier: Result<Verifier, KeyError>,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Settings, String> {
    let verifier = verifier.map_err(|e| e.to_string())?;
    let bind = var("BIND").unwrap_or_else(|| "127.0.0.1:3000".to_owned());
    let public_url = var("PUBLIC_URL").unwrap_or_else(|| format!("http://{bind}"));
    let policy = UrlPolicy::public_base(public_url).map_err(|e| e.to_string())?;
    // The deduplication of the `/jobs`, `/callbacks` and `/failures` routes: in Redis when
    // `REDIS_URL` is set (shared by every instance), else in this process' memory.
    let (dedup, store) = match var("REDIS_URL") {
        None => (Dedup::new(Arc::new(MemoryStore::new())), "memory"),
        Some(url) => (redis_dedup(&url).await?, "redis"),
    };
    let receiver = Receiver::new(verifier).url_policy(policy).dedup(dedup);
    Ok(Settings {
        bind,
        store,
        receiver,
    })
}

/// The server on `listener` (run it with `.await`).
pub(crate) fn server(
    listener: std::net::TcpListener,
    settings: Settings,
) -> std::io::Result<actix_web::dev::Server> {
    let receiver = settings.receiver;
    let qstash = QStashMiddleware::new(receiver.clone());
    // `web::Bytes` (in `Verified<web::Bytes>`) applies actix-web's own `PayloadConfig` limit,
    // 256 KiB by default, after the middleware's: match it to the receiver's.
    let payload_limit = web::PayloadConfig::new(receiver.get_max_body_bytes());
    let receiver = web::Data::new(receiver);
    let runs = web::Data::new(Runs::default());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(receiver.clone())
            .app_data(runs.clone())
            .app_data(payload_limit.clone())
            .service(
                web::resource("/jobs")
                    .wrap(qstash.clone())
                    .route(web::post().to(jobs)),
            )
            .service(
                web::resource("/callbacks")
                    .wrap(qstash.clone())
                    .route(web::post().to(callbacks)),
            )
            .service(
                web::resource("/failures")
                    .wrap(qstash.clone())
                    .route(web::post().to(failures)),
            )
            .route("/stats", web::get().to(stats))
    })
    .listen(listener)?;
    Ok(server.run())
}

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

#[actix_web::main]
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
            eprintln!("actix_server: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("actix_server: dedup in {}", settings.store);
    let bind = settings.bind.clone();
    let listener = match std::net::TcpListener::bind(&bind) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("actix_server: cannot listen on {bind}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        println!("listening on http://{addr}");
    }
    let server = match server(listener, settings) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("actix_server: cannot listen on {bind}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match server.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("actix_server: {e}");
            ExitCode::FAILURE
        }
    }
}
