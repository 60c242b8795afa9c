//! The layer's overhead in-process: the same axum router (a `Json` handler) with and without
//! `QStashLayer`, a 1 KiB JSON body, through `oneshot`. Criterion reports both; the ratio
//! layered / plain is then measured again in the same run, interleaved, and printed.
//!
//! `cargo bench --bench layer --features axum,test-utils`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use qstash_receiver::test_utils::Signer;
use qstash_receiver::tower::QStashLayer;
use qstash_receiver::{Receiver, SigningKeys, UrlPolicy, Verifier};
use tower::ServiceExt;

const CURRENT: &str = "sig_benchCurrentKey0123456789a";
const URL: &str = "https://bench.example/jobs";

#[derive(serde::Deserialize)]
struct Job {
    task: String,
    payload: String,
}

async fn handler(Json(job): Json<Job>) -> String {
    format!("{} {}", job.task, job.payload.len())
}

fn body_1kib() -> Bytes {
    let payload = "x".repeat(1024 - r#"{"task":"mail","payload":""}"#.len());
    let body = format!(r#"{{"task":"mail","payload":"{payload}"}}"#);
    assert_eq!(body.len(), 1024);
    Bytes::from(body)
}

struct Fixture {
    plain: Router,
    layered: Router,
    headers: Vec<(String, String)>,
    body: Bytes,
}

fn fixture() -> Fixture {
    let receiver = Receiver::new(Verifier::new(
        SigningKeys::new(CURRENT, "sig_benchNextKey0123456789abcd").unwrap(),
    ))
    .url_policy(UrlPolicy::public_base("https://bench.example").unwrap());
    let plain = Router::new().route("/jobs", post(handler));
    let layered = plain.clone().route_layer(QStashLayer::new(receiver));
    // As `axum::serve` does: the routes (and the layer) are made once, not on every call.
    let (plain, layered) = (plain.with_state(()), layered.with_state(()));
    let body = body_1kib();
    // One token for the whole run (valid 300 s; the layer does not deduplicate).
    let headers = Signer::new(CURRENT).delivery(URL, &body).headers;
    Fixture {
        plain,
        layered,
        headers,
        body,
    }
}

fn request(f: &Fixture) -> Request<Body> {
    let mut builder = Request::post("/jobs").header("content-type", "application/json");
    for (name, value) in &f.headers {
        builder = builder.header(name, value);
    }
    builder.body(Body::from(f.body.clone())).unwrap()
}

async fn once(router: &Router, req: Request<Body>) {
    let response = router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), 200);
    black_box(response);
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = fixture();

    let mut group = c.benchmark_group("axum_1kib_json");
    group.bench_function("plain", |b| {
        b.iter(|| rt.block_on(once(&f.plain, request(&f))))
    });
    group.bench_function("qstash_layer", |b| {
        b.iter(|| rt.block_on(once(&f.layered, request(&f))))
    });
    group.finish();

    // The ratio, interleaved rounds in this same run; the median round is printed.
    let mut ratios = Vec::new();
    let mut per_request = Vec::new();
    for _ in 0..7 {
        let time = |router: &Router| {
            let start = Instant::now();
            for _ in 0..2000 {
                rt.block_on(once(router, request(&f)));
            }
            start.elapsed()
        };
        let plain = time(&f.plain);
        let layered = time(&f.layered);
        ratios.push(layered.as_secs_f64() / plain.as_secs_f64());
        per_request.push((plain / 2000, layered / 2000));
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let (plain, layered) = per_request[ratios.iter().position(|r| *r == median).unwrap_or(0)];
    println!(
        "layer overhead: layered/plain = {median:.2} (median of 7 interleaved rounds of 2000; \
         that round: plain {plain:?}, layered {layered:?} per request, extra {:?})",
        layered.saturating_sub(plain)
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
