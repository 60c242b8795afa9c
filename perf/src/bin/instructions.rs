//! Instruction counts per request, in process, for `valgrind --tool=callgrind`: the same axum
//! route as the load runner (`POST /jobs`, a 1 KiB JSON body through `Json<T>`), bare or behind
//! the layer, driven with `tower::ServiceExt::oneshot` on pre-signed requests. Callgrind counts
//! instructions, not time, so two builds compare exactly on a busy machine; the HTTP and kernel
//! costs that `perf/src/bin/load.rs` sees are not included.
//!
//! ```sh
//! cargo build --release -p qstash-receiver-perf
//! perf/scripts/instructions.sh          # instructions per request: bare, verified, memory dedup
//! ```
//!
//! `instructions MODE N` runs `N` requests (`MODE`: bare, identity (a layer that does nothing,
//! what axum's `route_layer` costs by itself), verified, memory, and with the `redis` feature
//! `redis` (Redis dedup on the `redis-server` at `$QSTASH_REDIS_URL`: the client's instructions,
//! its connection task's included, not the server's nor the kernel's)); the script runs each
//! mode with two values of `N` and divides the difference, which cancels the set-up.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use axum::routing::post;
use axum::{Json, Router};
use http::Request;
use http_body_util::BodyExt as _;
use qstash_receiver::dedup::{Dedup, MemoryStore};
use qstash_receiver::test_utils::Signer;
use qstash_receiver::tower::QStashLayer;
use qstash_receiver::{Receiver, SigningKeys, UrlPolicy, Verifier};
use serde::Deserialize;
use tower::ServiceExt as _;

const URL: &str = "http://load.test/jobs";

#[derive(Deserialize)]
struct Job {
    task: String,
}

async fn jobs(Json(job): Json<Job>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "task": job.task }))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "verified".to_owned());
    let n: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);

    let receiver = Receiver::new(Verifier::new(
        SigningKeys::new("sig_current0123456789", "sig_next0123456789").unwrap(),
    ))
    .url_policy(UrlPolicy::exact(URL));
    let mut app = Router::new().route("/jobs", post(jobs));
    let mut rt = tokio::runtime::Builder::new_current_thread();
    match mode.as_str() {
        "bare" => {}
        // What any layer costs under `route_layer` (axum boxes the layered route): a baseline.
        "identity" => app = app.route_layer(tower::layer::util::Identity::new()),
        "verified" => app = app.route_layer(QStashLayer::new(receiver)),
        "memory" => {
            let dedup = Dedup::new(Arc::new(MemoryStore::new()));
            app = app.route_layer(QStashLayer::new(receiver.dedup(dedup)));
        }
        "redis" => {
            // The store's connection task runs on this runtime, in `drive`: it is counted.
            let rt = rt.enable_all().build().unwrap();
            let url = std::env::var("QSTASH_REDIS_URL").expect("QSTASH_REDIS_URL");
            let store = rt
                .block_on(qstash_receiver::dedup::RedisStore::connect(&url))
                .unwrap();
            let dedup = Dedup::new(Arc::new(store));
            app = app.route_layer(QStashLayer::new(receiver.dedup(dedup)));
            let requests = requests(n);
            return drive(&rt, app.with_state(()), requests);
        }
        other => panic!("unknown mode {other:?} (bare, identity, verified, memory, redis)"),
    }
    let rt = rt.build().unwrap();
    let requests = requests(n);
    // As `axum::serve` does: the routes are made once, not on every call.
    drive(&rt, app.with_state(()), requests);
}

/// `n` signed deliveries (new message ids) of the same 1 KiB JSON body.
fn requests(n: usize) -> Vec<Request<Body>> {
    // The same body as the load runner: 1 KiB of JSON.
    let mut body = String::from(r#"{"task":"mail","pad":""#);
    body.push_str(&"x".repeat(1024 - body.len() - 2));
    body.push_str(r#""}"#);
    let signer = Signer::new("sig_current0123456789");
    (0..n)
        .map(|_| {
            let delivery = signer.delivery(URL, body.as_bytes());
            let mut req = Request::post("/jobs")
                .header("host", "load.test")
                .header("content-type", "application/json");
            for (name, value) in &delivery.headers {
                req = req.header(name, value);
            }
            req.body(Body::from(body.clone())).unwrap()
        })
        .collect()
}

/// The measured part (`--toggle-collect=instructions::drive`): signing the requests above is
/// not counted.
#[inline(never)]
fn drive(rt: &tokio::runtime::Runtime, app: Router, requests: Vec<Request<Body>>) {
    rt.block_on(async move {
        for req in requests {
            let res = app.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), 200);
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&bytes[..], br#"{"task":"mail"}"#);
        }
    });
}
