//! The layer's in-process cost, as ratios against the same route written by hand.
//!
//! Five axum routes, each a `Json` handler on a 1 KiB JSON body, called through `oneshot`:
//!
//! - `layer`: the route behind `QStashLayer` (no deduplication);
//! - `by_hand`: the same route reading the body (`Bytes`) and calling `Verifier::verify` itself,
//!   then parsing the JSON: the baseline of `layer` (bar: layer / by hand ≤ 1.25×);
//! - `layer_dedup`: the route behind `QStashLayer` with
//!   `Receiver::dedup(Dedup::new(Arc::new(MemoryStore::new())))` (replay guard on, the default);
//! - `by_hand_dedup`: `by_hand` that also keeps the message ids it ran in a
//!   `Mutex<HashSet<String>>` (a duplicate is answered without running the handler): the
//!   baseline of `layer_dedup` (bar: ≤ 1.3×);
//! - `by_hand_guarded`: `by_hand_dedup` that also refuses a token seen before (a second set, of
//!   `jti`s): the work `layer_dedup` does (message ids and the replay guard), for comparison.
//!
//! Every request carries a fresh delivery (its own token and message id), signed before the
//! clock starts. Criterion reports each route; then each ratio is measured *paired*: blocks of
//! the two routes alternate (41 rounds, the order swapped every round) and the median of the
//! per-round ratios is printed beside its bar. On shared, noisy cores the load drifts between
//! separate measurements; pairing cancels the drift. Nothing here asserts a timing.
//!
//! `cargo bench --bench layer --features axum,test-utils`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use criterion::{Criterion, criterion_group, criterion_main};
use qstash_receiver::dedup::{Dedup, MemoryStore};
use qstash_receiver::test_utils::Signer;
use qstash_receiver::tower::QStashLayer;
use qstash_receiver::{Receiver, SigningKeys, UrlPolicy, Verifier};
use tokio::runtime::Runtime;
use tower::ServiceExt;

const CURRENT: &str = "sig_benchCurrentKey0123456789a";
const NEXT: &str = "sig_benchNextKey0123456789abcd";
const BASE: &str = "https://bench.example";
const URL: &str = "https://bench.example/jobs";
/// Requests per block of the paired measurement.
const BLOCK: usize = 300;
const ROUNDS: usize = 41;

#[derive(serde::Deserialize)]
struct Job {
    task: String,
    payload: String,
}

fn run_job(job: &Job) -> String {
    format!("{} {}", job.task, job.payload.len())
}

/// The handler behind the layer.
async fn layered(Json(job): Json<Job>) -> String {
    run_job(&job)
}

#[derive(Clone)]
struct ByHand {
    verifier: Verifier,
    /// `Some` for the routes that deduplicate by hand.
    seen: Option<Arc<Mutex<HashSet<String>>>>,
    /// `Some` for the route that also refuses a replayed token (its `jti` seen before).
    tokens: Option<Arc<Mutex<HashSet<String>>>>,
}

/// The same route without the layer: read the body, verify, parse, (deduplicate,) run.
async fn by_hand(
    State(state): State<ByHand>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<String, StatusCode> {
    let signature = headers
        .get("upstash-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or(StatusCode::UNAUTHORIZED)?;
    let claims = state
        .verifier
        .verify(signature, &body, Some(URL))
        .map_err(|_| StatusCode::UNAUTHORIZED)?;
    let Json(job) = Json::<Job>::from_bytes(&body).map_err(|_| StatusCode::BAD_REQUEST)?;
    if let Some(tokens) = &state.tokens {
        let jti = claims.jwt_id().ok_or(StatusCode::BAD_REQUEST)?;
        if !tokens.lock().unwrap().insert(jti.to_owned()) {
            return Err(StatusCode::UNAUTHORIZED);
        }
    }
    let Some(seen) = &state.seen else {
        return Ok(run_job(&job));
    };
    let id = headers
        .get("upstash-message-id")
        .and_then(|v| v.to_str().ok())
        .ok_or(StatusCode::BAD_REQUEST)?;
    if seen.lock().unwrap().contains(id) {
        return Ok("duplicate".to_owned());
    }
    let answer = run_job(&job);
    seen.lock().unwrap().insert(id.to_owned());
    Ok(answer)
}

#[derive(Clone, Copy, PartialEq)]
enum Route {
    Layer,
    ByHand,
    LayerDedup,
    ByHandDedup,
    ByHandGuarded,
}

impl Route {
    const ALL: [Route; 5] = [
        Route::Layer,
        Route::ByHand,
        Route::LayerDedup,
        Route::ByHandDedup,
        Route::ByHandGuarded,
    ];

    fn name(self) -> &'static str {
        match self {
            Route::Layer => "layer",
            Route::ByHand => "by_hand",
            Route::LayerDedup => "layer_dedup",
            Route::ByHandDedup => "by_hand_dedup",
            Route::ByHandGuarded => "by_hand_guarded",
        }
    }

    /// A new router (with an empty store or set: made for each block, never timed).
    fn router(self) -> Router {
        let verifier = Verifier::new(SigningKeys::new(CURRENT, NEXT).unwrap());
        let receiver =
            || Receiver::new(verifier.clone()).url_policy(UrlPolicy::public_base(BASE).unwrap());
        let by_hand_state = |seen, tokens| ByHand {
            verifier: verifier.clone(),
            seen,
            tokens,
        };
        // As `axum::serve` does: the routes (and the layer) are made once, not on every call.
        match self {
            Route::Layer => Router::new()
                .route("/jobs", post(layered))
                .route_layer(QStashLayer::new(receiver())),
            Route::LayerDedup => {
                Router::new()
                    .route("/jobs", post(layered))
                    .route_layer(QStashLayer::new(
                        receiver().dedup(Dedup::new(Arc::new(MemoryStore::new()))),
                    ))
            }
            Route::ByHand => Router::new()
                .route("/jobs", post(by_hand))
                .with_state(by_hand_state(None, None)),
            Route::ByHandDedup => Router::new()
                .route("/jobs", post(by_hand))
                .with_state(by_hand_state(Some(Arc::default()), None)),
            Route::ByHandGuarded => Router::new()
                .route("/jobs", post(by_hand))
                .with_state(by_hand_state(Some(Arc::default()), Some(Arc::default()))),
        }
    }
}

fn body_1kib() -> Bytes {
    let payload = "x".repeat(1024 - r#"{"task":"mail","payload":""}"#.len());
    let body = format!(r#"{{"task":"mail","payload":"{payload}"}}"#);
    assert_eq!(body.len(), 1024);
    Bytes::from(body)
}

/// `n` requests, each a fresh delivery (own token, own message id) of `body`.
fn requests(n: u64, body: &Bytes) -> Vec<Request<Body>> {
    let signer = Signer::new(CURRENT);
    (0..n)
        .map(|_| {
            let delivery = signer.delivery(URL, body);
            let mut builder = Request::post("/jobs").header("content-type", "application/json");
            for (name, value) in &delivery.headers {
                builder = builder.header(name, value);
            }
            builder.body(Body::from(body.clone())).unwrap()
        })
        .collect()
}

/// The time `route` takes to answer `n` requests (a new router, requests signed beforehand).
fn timed(rt: &Runtime, route: Route, n: u64, body: &Bytes) -> Duration {
    let router = route.router();
    let requests = requests(n, body);
    rt.block_on(async {
        let start = Instant::now();
        for request in requests {
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200, "{}", route.name());
            black_box(response);
        }
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = body_1kib();
    let mut group = c.benchmark_group("axum_1kib_json");
    for route in Route::ALL {
        group.bench_function(route.name(), |b| {
            b.iter_custom(|iters| timed(&rt, route, iters, &body))
        });
    }
    group.finish();

    let listing_or_testing = std::env::args().any(|a| a == "--test" || a == "--list");
    if !listing_or_testing {
        paired_ratios(&rt, &body);
    }
}

/// Each guard's ratio measured paired: blocks of the two routes alternate, the order swapped
/// every round; the median of the per-round ratios is kept.
fn paired_ratios(rt: &Runtime, body: &Bytes) {
    // The last pair has no bar: the same work on both sides (ids and token ids kept by hand).
    let pairs = [
        (Route::Layer, Route::ByHand, Some(1.25)),
        (Route::LayerDedup, Route::ByHandDedup, Some(1.3)),
        (Route::LayerDedup, Route::ByHandGuarded, None),
    ];
    println!(
        "\nlayer: paired ratios (median of {ROUNDS} alternating rounds of {BLOCK} requests)\n"
    );
    println!("| guard | ratio | bar | per request (median round) |");
    println!("|---|---:|---:|---:|");
    for (ours, baseline, bar) in pairs {
        let mut rounds: Vec<(f64, Duration, Duration)> = (0..ROUNDS)
            .map(|round| {
                let (a, b) = if round % 2 == 0 {
                    let a = timed(rt, ours, BLOCK as u64, body);
                    (a, timed(rt, baseline, BLOCK as u64, body))
                } else {
                    let b = timed(rt, baseline, BLOCK as u64, body);
                    (timed(rt, ours, BLOCK as u64, body), b)
                };
                (a.as_secs_f64() / b.as_secs_f64(), a, b)
            })
            .collect();
        rounds.sort_by(|x, y| x.0.total_cmp(&y.0));
        let (median, a, b) = rounds[rounds.len() / 2];
        let (verdict, bar) = match bar {
            Some(bar) if median <= bar => ("ok", format!("{bar}x")),
            Some(bar) => ("MISSED", format!("{bar}x")),
            None => ("", "–".to_owned()),
        };
        println!(
            "| {} / {} | {median:.2}x {verdict} | {bar} | {:?} / {:?} |",
            ours.name(),
            baseline.name(),
            a / BLOCK as u32,
            b / BLOCK as u32,
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
