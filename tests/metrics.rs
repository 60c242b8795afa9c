//! The `metrics` feature: a recorder sees the counts of real deliveries sent to an axum server
//! (the tower layer) and to an actix-web server (the middleware) on 127.0.0.1. One test in this
//! binary: counters are global, and each scenario compares the counters before and after it.
#![cfg(all(
    feature = "metrics",
    feature = "axum",
    feature = "actix-web",
    feature = "test-utils"
))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod tower_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{CURRENT_KEY, LIMIT, NEXT_KEY, PUBLIC_BASE};
use http::Request;
use qstash_receiver::Receiver;
use qstash_receiver::dedup::{
    ClaimOutcome, Dedup, DedupStore, LeaseOutcome, LeaseToken, MemoryStore, StoreError, StoreFuture,
};
use qstash_receiver::test_utils::{SignedDelivery, Signer};
use tower_support::{client, full, read_response};

/// A recorder that counts, keyed `name{label=value,…}`.
#[derive(Clone, Default)]
struct Counts(Arc<Mutex<BTreeMap<String, Arc<AtomicU64>>>>);

impl Counts {
    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::SeqCst)))
            .collect()
    }
}

impl metrics::Recorder for Counts {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = if labels.is_empty() {
            key.name().to_owned()
        } else {
            format!("{}{{{}}}", key.name(), labels.join(","))
        };
        let counter = Arc::clone(self.0.lock().unwrap().entry(name).or_default());
        metrics::Counter::from_arc(counter)
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// A deduplication store that is down.
struct Down;

fn down<'a, T: Send + 'a>() -> StoreFuture<'a, T> {
    Box::pin(async { Err(StoreError::backend(std::io::Error::other("store down"))) })
}

impl DedupStore for Down {
    fn claim<'a>(&'a self, _: &'a str, _: Duration) -> StoreFuture<'a, ClaimOutcome> {
        down()
    }
    fn complete<'a>(
        &'a self,
        _: &'a str,
        _: &'a LeaseToken,
        _: Duration,
    ) -> StoreFuture<'a, LeaseOutcome> {
        down()
    }
    fn release<'a>(&'a self, _: &'a str, _: &'a LeaseToken) -> StoreFuture<'a, LeaseOutcome> {
        down()
    }
}

fn receiver() -> Receiver {
    common::receiver().dedup(Dedup::new(Arc::new(MemoryStore::new())))
}

fn receiver_down() -> Receiver {
    common::receiver().dedup(Dedup::new(Arc::new(Down)))
}

/// What the handlers do with a body: `fail` answers 500, `slow` waits, anything else 200.
fn handler_wait(body: &[u8]) -> Option<Duration> {
    (body == b"slow").then_some(Duration::from_millis(700))
}

fn handler_status(body: &[u8]) -> u16 {
    if body == b"fail" { 500 } else { 200 }
}

fn delivery(key: &str, path: &str, body: &[u8], id: &str) -> SignedDelivery {
    Signer::new(key).delivery_with_id(&format!("{PUBLIC_BASE}{path}"), body, id, 0)
}

async fn send(addr: SocketAddr, path: &str, headers: &[(String, String)], body: &[u8]) -> u16 {
    let mut builder = Request::post(format!("http://{addr}{path}"));
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let response = client()
        .request(builder.body(full(body.to_vec())).unwrap())
        .await
        .unwrap();
    read_response(response).await.0
}

/// The counters that changed since `before`, and by how much.
fn changed(counts: &Counts, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    counts
        .snapshot()
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(&k).copied().unwrap_or(0);
            (d > 0).then_some((k, d))
        })
        .collect()
}

fn want(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

const VERIFIED_CURRENT: &str = "qstash_deliveries_verified_total{key=current}";
const VERIFIED_NEXT: &str = "qstash_deliveries_verified_total{key=next}";
const HANDLER_2XX: &str = "qstash_handler_responses_total{class=2xx}";

/// Sends each scenario to the server at `addr` (`/jobs` with a memory store, `/down` with a
/// store that is down) and checks what each counted.
async fn scenarios(counts: &Counts, addr: SocketAddr, run: &str) {
    let id = |n: &str| format!("msg_{run}_{n}");
    let mut before = counts.snapshot();
    let mut step = |name: &str, expected: BTreeMap<String, u64>| {
        assert_eq!(changed(counts, &before), expected, "{run}: {name}");
        before = counts.snapshot();
    };

    let first = delivery(CURRENT_KEY, "/jobs", b"{}", &id("a"));
    assert_eq!(send(addr, "/jobs", &first.headers, b"{}").await, 200);
    step(
        "delivered",
        want(&[(VERIFIED_CURRENT, 1), (HANDLER_2XX, 1)]),
    );

    assert_eq!(
        send(addr, "/jobs", &first.retry().headers, b"{}").await,
        200
    );
    step(
        "duplicate",
        want(&[
            (VERIFIED_CURRENT, 1),
            ("qstash_deliveries_duplicate_total", 1),
        ]),
    );

    let next = delivery(NEXT_KEY, "/jobs", b"{}", &id("b"));
    assert_eq!(send(addr, "/jobs", &next.headers, b"{}").await, 200);
    step("next key", want(&[(VERIFIED_NEXT, 1), (HANDLER_2XX, 1)]));

    assert_eq!(send(addr, "/jobs", &[], b"{}").await, 401);
    step(
        "no signature",
        want(&[("qstash_deliveries_refused_total{code=missing_signature}", 1)]),
    );

    let forged = delivery("sig_notTheReceiversKey0123456789", "/jobs", b"{}", &id("f"));
    assert_eq!(send(addr, "/jobs", &forged.headers, b"{}").await, 401);
    step(
        "forged",
        want(&[("qstash_deliveries_refused_total{code=invalid_signature}", 1)]),
    );

    let big = vec![b'x'; LIMIT + 1];
    let large = delivery(CURRENT_KEY, "/jobs", &big, &id("big"));
    assert_eq!(send(addr, "/jobs", &large.headers, &big).await, 413);
    step(
        "too large",
        want(&[("qstash_deliveries_refused_total{code=payload_too_large}", 1)]),
    );

    let failing = delivery(CURRENT_KEY, "/jobs", b"fail", &id("c"));
    assert_eq!(send(addr, "/jobs", &failing.headers, b"fail").await, 500);
    step(
        "handler failed",
        want(&[
            (VERIFIED_CURRENT, 1),
            ("qstash_handler_responses_total{class=5xx}", 1),
        ]),
    );

    let slow = delivery(CURRENT_KEY, "/jobs", b"slow", &id("d"));
    let headers = slow.headers.clone();
    let running = tokio::spawn(async move { send(addr, "/jobs", &headers, b"slow").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        send(addr, "/jobs", &slow.retry().headers, b"slow").await,
        409
    );
    assert_eq!(running.await.unwrap(), 200);
    step(
        "in progress",
        want(&[
            (VERIFIED_CURRENT, 2),
            (HANDLER_2XX, 1),
            ("qstash_deliveries_in_progress_total", 1),
            ("qstash_deliveries_refused_total{code=in_progress}", 1),
        ]),
    );

    let to_down = delivery(CURRENT_KEY, "/down", b"{}", &id("e"));
    assert_eq!(send(addr, "/down", &to_down.headers, b"{}").await, 503);
    step(
        "store down",
        want(&[
            (VERIFIED_CURRENT, 1),
            ("qstash_dedup_store_errors_total{operation=claim}", 1),
            ("qstash_deliveries_refused_total{code=store_unavailable}", 1),
        ]),
    );
}

async fn start_axum() -> SocketAddr {
    use axum::Router;
    use axum::body::Bytes;
    use axum::http::StatusCode;
    use axum::routing::post;
    use qstash_receiver::tower::QStashLayer;

    async fn handler(body: Bytes) -> StatusCode {
        if let Some(wait) = handler_wait(&body) {
            tokio::time::sleep(wait).await;
        }
        StatusCode::from_u16(handler_status(&body)).unwrap()
    }
    let app = Router::new()
        .route("/jobs", post(handler))
        .route_layer(QStashLayer::new(receiver()))
        .merge(
            Router::new()
                .route("/down", post(handler))
                .route_layer(QStashLayer::new(receiver_down())),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn start_actix() -> SocketAddr {
    use actix_web::{App, HttpResponse, HttpServer, http::StatusCode, web};
    use qstash_receiver::actix::QStashMiddleware;

    async fn handler(body: web::Bytes) -> HttpResponse {
        if let Some(wait) = handler_wait(&body) {
            actix_web::rt::time::sleep(wait).await;
        }
        HttpResponse::new(StatusCode::from_u16(handler_status(&body)).unwrap())
    }
    let jobs = QStashMiddleware::new(receiver());
    let down = QStashMiddleware::new(receiver_down());
    let server = HttpServer::new(move || {
        App::new()
            .service(
                web::resource("/jobs")
                    .wrap(jobs.clone())
                    .route(web::post().to(handler)),
            )
            .service(
                web::resource("/down")
                    .wrap(down.clone())
                    .route(web::post().to(handler)),
            )
    })
    .workers(2)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    actix_web::rt::spawn(server.run());
    addr
}

#[test]
fn a_recorder_sees_the_counts_of_real_deliveries_in_axum_and_actix_web() {
    let counts = Counts::default();
    metrics::set_global_recorder(counts.clone()).unwrap();

    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let addr = start_axum().await;
            scenarios(&counts, addr, "axum").await;
        });

    actix_web::rt::System::new().block_on(async {
        let addr = start_actix();
        scenarios(&counts, addr, "actix").await;
    });
}
