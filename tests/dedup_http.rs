//! Deduplication wired into the adapters, end to end: real HTTP servers on 127.0.0.1 (axum with
//! the tower layer, actix-web with the middleware; both stores), real HTTP clients, and the
//! example servers' own code sharing one real redis-server.
//!
//! Every scenario runs for each (framework, store) pair. Redis cases start their own
//! redis-server (tests/support): a loud skip when it is not installed, a failure with
//! QSTASH_TEST_REQUIRE_REDIS=1.
#![cfg(all(
    feature = "axum",
    feature = "actix-web",
    feature = "redis",
    feature = "test-utils"
))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod support;

#[path = "../examples/axum_server.rs"]
#[allow(dead_code)]
mod axum_server;

#[path = "../examples/actix_server.rs"]
#[allow(dead_code)]
mod actix_server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use qstash_receiver::dedup::{Dedup, DedupStore, MemoryStore, RedisStore};
use qstash_receiver::test_utils::Signer;
use qstash_receiver::{Delivery, Receiver, SigningKeys, UrlPolicy, Verifier};
use serde_json::{Value, json};
use support::redis_server::RedisServer;
use support::{KEY, URL, new_id};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Notify;

const NEXT: &str = "sig_testNextKey0123456789abcde";

// ---------------------------------------------------------------------------------------------
// The handler: the same for both frameworks. The body is `{"plan": [step, …]}`; run n of a
// message id does step n (default "ok"), and every run is counted per message id.

#[derive(Default)]
struct Shared {
    runs: Mutex<HashMap<String, u32>>,
    gates: Mutex<HashMap<String, Arc<Notify>>>,
    cancelled: AtomicUsize,
}

impl Shared {
    fn runs(&self, id: &str) -> u32 {
        self.runs.lock().unwrap().get(id).copied().unwrap_or(0)
    }

    /// The gate run `run` of `id` waits on (steps "wait", "wait_fail").
    fn gate(&self, id: &str, run: u32) -> Arc<Notify> {
        let mut gates = self.gates.lock().unwrap();
        Arc::clone(gates.entry(format!("{id}#{run}")).or_default())
    }

    fn open(&self, id: &str, run: u32) {
        self.gate(id, run).notify_one();
    }

    /// Waits (bounded) until `id` has run `n` times.
    async fn wait_runs(&self, id: &str, n: u32) {
        for _ in 0..1000 {
            if self.runs(id) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{id} never reached {n} runs (has {})", self.runs(id));
    }
}

/// Counts a cancelled handler when dropped before it finished.
struct CancelGuard(Arc<Shared>, bool);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn handle(shared: Arc<Shared>, delivery: &Delivery, body: &[u8]) -> (u16, String) {
    let id = delivery.message_id().unwrap_or("-").to_owned();
    let plan: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let run = {
        let mut runs = shared.runs.lock().unwrap();
        let n = runs.entry(id.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let step = plan["plan"][(run - 1) as usize]
        .as_str()
        .unwrap_or("ok")
        .to_owned();
    let done = (200, format!("done {id} run {run}"));
    let failed = (500, format!("failed {id} run {run}"));
    match step.as_str() {
        "fail" => failed,
        "sleep" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            done
        }
        "wait" | "wait_fail" => {
            let mut guard = CancelGuard(Arc::clone(&shared), false);
            shared.gate(&id, run).notified().await;
            guard.1 = true;
            if step == "wait" { done } else { failed }
        }
        "panic" => panic!("handler panics on purpose"),
        _ => done,
    }
}

// ---------------------------------------------------------------------------------------------
// Servers.

#[derive(Clone, Copy, Debug)]
enum Framework {
    Axum,
    Actix,
}

fn receiver(dedup: Dedup) -> Receiver {
    Receiver::new(Verifier::new(SigningKeys::new(KEY, NEXT).unwrap()))
        .url_policy(UrlPolicy::public_base("https://receiver.test").unwrap())
        .dedup(dedup)
}

/// A running server; its base URL.
struct Server {
    base: String,
    actix: Option<actix_web::dev::ServerHandle>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(handle) = self.actix.take() {
            // Not awaited: the server's own thread finishes the shutdown.
            drop(handle.stop(false));
        }
    }
}

async fn serve(framework: Framework, dedup: Dedup, shared: Arc<Shared>) -> Server {
    match framework {
        Framework::Axum => serve_axum(dedup, shared).await,
        Framework::Actix => serve_actix(dedup, shared),
    }
}

async fn serve_axum(dedup: Dedup, shared: Arc<Shared>) -> Server {
    use axum::extract::State;
    use qstash_receiver::tower::QStashLayer;

    async fn jobs(
        State(shared): State<Arc<Shared>>,
        delivery: Delivery,
        body: axum::body::Bytes,
    ) -> (axum::http::StatusCode, String) {
        let (status, text) = handle(shared, &delivery, &body).await;
        (axum::http::StatusCode::from_u16(status).unwrap(), text)
    }

    let app = axum::Router::new()
        .route("/jobs", axum::routing::post(jobs))
        .route_layer(QStashLayer::new(receiver(dedup)))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server {
        base: format!("http://{addr}"),
        actix: None,
    }
}

fn serve_actix(dedup: Dedup, shared: Arc<Shared>) -> Server {
    use actix_web::{App, HttpResponse, HttpServer, web};
    use qstash_receiver::actix::QStashMiddleware;

    async fn jobs(
        shared: web::Data<Arc<Shared>>,
        delivery: Delivery,
        body: web::Bytes,
    ) -> HttpResponse {
        let (status, text) = handle(Arc::clone(&shared), &delivery, &body).await;
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).body(text)
    }

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let middleware = QStashMiddleware::new(receiver(dedup));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let shared = web::Data::new(shared);
            let server = HttpServer::new(move || {
                App::new().app_data(shared.clone()).service(
                    web::resource("/jobs")
                        .wrap(middleware.clone())
                        .route(web::post().to(jobs)),
                )
            })
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
            tx.send(server.handle()).unwrap();
            server.await
        })
    });
    Server {
        base: format!("http://{addr}"),
        actix: Some(rx.recv().unwrap()),
    }
}

// ---------------------------------------------------------------------------------------------
// Stores.

#[derive(Clone, Copy, Debug)]
enum StoreKind {
    Memory,
    Redis,
}

/// What a test runs against: a store kind, and its redis-server when it is Redis.
struct Backend {
    redis: Option<RedisServer>,
    memory: Arc<MemoryStore>,
}

impl Backend {
    /// `None` when Redis is asked for and redis-server is not installed (loud skip).
    fn start(kind: StoreKind) -> Option<Self> {
        let redis = match kind {
            StoreKind::Memory => None,
            StoreKind::Redis => Some(RedisServer::start()?),
        };
        Some(Self {
            redis,
            memory: Arc::new(MemoryStore::new()),
        })
    }

    /// A store handle: the one memory store, or a new connection to the one Redis.
    async fn store(&self) -> Arc<dyn DedupStore> {
        match &self.redis {
            None => Arc::clone(&self.memory) as Arc<dyn DedupStore>,
            Some(server) => Arc::new(RedisStore::connect(&server.url()).await.unwrap()),
        }
    }

    async fn dedup(&self) -> Dedup {
        Dedup::new(self.store().await)
    }
}

// ---------------------------------------------------------------------------------------------
// Client.

/// An answer: status, response headers, body text.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Answer {
    fn is_processed(&self, id: &str) -> bool {
        self.status == 200
            && !self.headers.contains_key("qstash-duplicate")
            && self.body.starts_with(&format!("done {id} run "))
    }

    fn assert_processed(&self, id: &str, run: u32) {
        assert_eq!(
            (self.status, self.body.as_str()),
            (200, format!("done {id} run {run}").as_str()),
            "{self:?}"
        );
        assert!(!self.headers.contains_key("qstash-duplicate"), "{self:?}");
    }

    fn assert_duplicate(&self, id: &str) {
        assert_eq!(self.status, 200, "{self:?}");
        assert_eq!(self.headers["qstash-duplicate"], "true", "{self:?}");
        assert_eq!(self.headers["content-type"], "application/json", "{self:?}");
        let body: Value = serde_json::from_str(&self.body).unwrap();
        assert_eq!(body, json!({"duplicate": true, "messageId": id}));
    }

    fn assert_refused(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(!self.headers.contains_key("qstash-duplicate"), "{self:?}");
        assert_eq!(self.headers["content-type"], "application/json", "{self:?}");
        let body: Value = serde_json::from_str(&self.body).unwrap();
        assert_eq!(body["error"], code, "{self:?}");
        if matches!(code, "in_progress" | "store_unavailable") {
            let secs: u64 = self.headers["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(secs >= 1, "{self:?}");
        }
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn plan(steps: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "plan": steps })).unwrap()
}

/// Attempt `retried` of message `id` (a new token each time, as QStash sends it).
async fn deliver(server: &Server, id: &str, retried: u32, body: &[u8]) -> Answer {
    let d = Signer::new(KEY).delivery_with_id(URL, body, id, retried);
    post_jobs(&server.base, &d.headers, Bytes::copy_from_slice(body)).await
}

/// `POST {base}/jobs` with `headers` and `body`, and the answer read whole.
async fn post_jobs(base: &str, headers: &[(String, String)], body: Bytes) -> Answer {
    let mut req = hyper::Request::post(format!("{base}/jobs"));
    for (name, value) in headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let res = client()
        .request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// Delivers until the answer is not `409 in_progress` (a background release still pending),
/// bounded; returns it.
async fn deliver_until_free(server: &Server, id: &str, retried: u32, body: &[u8]) -> Answer {
    for _ in 0..500 {
        let answer = deliver(server, id, retried, body).await;
        if answer.status != 409 {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} stayed in progress");
}

// ---------------------------------------------------------------------------------------------
// Scenarios, each run for every (framework, store).

/// The same message twice: the handler runs once; the second answer is a duplicate.
async fn same_message_twice(framework: Framework, backend: Backend) {
    let shared = Arc::new(Shared::default());
    let server = serve(framework, backend.dedup().await, Arc::clone(&shared)).await;
    let id = new_id();
    deliver(&server, &id, 0, b"{}")
        .await
        .assert_processed(&id, 1);
    deliver(&server, &id, 1, b"{}").await.assert_duplicate(&id);
    deliver(&server, &id, 2, b"{}").await.assert_duplicate(&id);
    assert_eq!(shared.runs(&id), 1);
    // Another message is independent.
    let other = new_id();
    deliver(&server, &other, 0, b"{}")
        .await
        .assert_processed(&other, 1);
}

/// 24 concurrent copies of one message: the handler runs exactly once, no answer is 5xx, the
/// others are duplicates or 409 in progress with Retry-After.
async fn concurrent_copies(framework: Framework, backend: Backend) {
    let shared = Arc::new(Shared::default());
    let server = Arc::new(serve(framework, backend.dedup().await, Arc::clone(&shared)).await);
    let id = new_id();
    let body = plan(&["sleep"]);
    let mut tasks = Vec::new();
    for i in 0..24 {
        let (server, id, body) = (Arc::clone(&server), id.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            deliver(&server, &id, i, &body).await
        }));
    }
    let (mut processed, mut duplicates, mut in_progress) = (0, 0, 0);
    for task in tasks {
        let answer = task.await.unwrap();
        assert!(answer.status < 500, "{answer:?}");
        if answer.is_processed(&id) {
            answer.assert_processed(&id, 1);
            processed += 1;
        } else if answer.status == 409 {
            answer.assert_refused(409, "in_progress");
            in_progress += 1;
        } else {
            answer.assert_duplicate(&id);
            duplicates += 1;
        }
    }
    assert_eq!(
        processed, 1,
        "{duplicates} duplicates, {in_progress} in progress"
    );
    assert_eq!(duplicates + in_progress, 23);
    assert_eq!(shared.runs(&id), 1);
    deliver(&server, &id, 30, &body).await.assert_duplicate(&id);
}

/// A failed first attempt (500) releases the id: the retry is processed, then duplicates.
async fn failed_attempt_is_retried(framework: Framework, backend: Backend) {
    let shared = Arc::new(Shared::default());
    let server = serve(framework, backend.dedup().await, Arc::clone(&shared)).await;
    let id = new_id();
    let body = plan(&["fail", "fail", "ok"]);
    for retried in 0..2 {
        let answer = deliver(&server, &id, retried, &body).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (500, format!("failed {id} run {}", retried + 1).as_str())
        );
        assert!(!answer.headers.contains_key("qstash-duplicate"));
    }
    deliver(&server, &id, 2, &body)
        .await
        .assert_processed(&id, 3);
    deliver(&server, &id, 3, &body).await.assert_duplicate(&id);
    assert_eq!(shared.runs(&id), 3);
}

/// A lease that expires (short TTL) is taken over by the next attempt; the late holder's 2xx
/// does not mark the id done, nor free the new holder's lease.
async fn expired_lease_taken_over(framework: Framework, backend: Backend) {
    let shared = Arc::new(Shared::default());
    let dedup = backend.dedup().await.lease_ttl(Duration::from_millis(300));
    let server = Arc::new(serve(framework, dedup, Arc::clone(&shared)).await);
    let id = new_id();
    // Run 1 (late holder) waits, then succeeds; run 2 (taker) waits, then fails; run 3 succeeds.
    let body = plan(&["wait", "wait_fail", "ok"]);

    let (s, i, b) = (Arc::clone(&server), id.clone(), body.clone());
    let first = tokio::spawn(async move { deliver(&s, &i, 0, &b).await });
    shared.wait_runs(&id, 1).await;
    tokio::time::sleep(Duration::from_millis(700)).await; // past the 300 ms lease
    let (s, i, b) = (Arc::clone(&server), id.clone(), body.clone());
    let second = tokio::spawn(async move { deliver(&s, &i, 1, &b).await });
    shared.wait_runs(&id, 2).await;

    // The late holder finishes with a 2xx: its work is answered, but it holds nothing.
    shared.open(&id, 1);
    first.await.unwrap().assert_processed(&id, 1);
    // Not done, and the taker still holds the lease.
    deliver(&server, &id, 2, &body)
        .await
        .assert_refused(409, "in_progress");
    assert_eq!(shared.runs(&id), 2);

    // The taker fails: released; the next attempt runs, then it is done.
    shared.open(&id, 2);
    assert_eq!(second.await.unwrap().status, 500);
    deliver(&server, &id, 3, &body)
        .await
        .assert_processed(&id, 3);
    deliver(&server, &id, 4, &body).await.assert_duplicate(&id);
    assert_eq!(shared.runs(&id), 3);
}

/// A panicking handler releases the id: the retry is processed.
async fn panic_releases(framework: Framework, backend: Backend) {
    let shared = Arc::new(Shared::default());
    let server = serve(framework, backend.dedup().await, Arc::clone(&shared)).await;
    let id = new_id();
    let body = plan(&["panic", "ok"]);
    let d = Signer::new(KEY).delivery_with_id(URL, &body, &id, 0);
    let mut req = hyper::Request::post(format!("{}/jobs", server.base));
    for (name, value) in &d.headers {
        req = req.header(name.as_str(), value.as_str());
    }
    // The connection is closed (axum) or answered 500 (actix): never a 2xx.
    if let Ok(res) = client()
        .request(req.body(Full::new(Bytes::from(body.clone()))).unwrap())
        .await
    {
        assert!(!res.status().is_success(), "{res:?}");
    }
    assert_eq!(shared.runs(&id), 1);
    deliver_until_free(&server, &id, 1, &body)
        .await
        .assert_processed(&id, 2);
    deliver(&server, &id, 2, &body).await.assert_duplicate(&id);
}

/// A client that disconnects mid-handler, then QStash retries.
///
/// - axum (hyper): the request future is dropped, the lease with it: the id is released, the
///   retry is processed.
/// - actix-web: the handler is *not* dropped (actix-web's HTTP/1 dispatcher lets it finish);
///   the id stays held while it runs and its own answer settles it: here a 500, so released,
///   and the retry is processed.
async fn disconnect_releases(framework: Framework, backend: Backend) {
    let shared = Arc::new(Shared::default());
    let server = serve(framework, backend.dedup().await, Arc::clone(&shared)).await;
    let id = new_id();
    let body = plan(&["wait_fail", "ok"]);
    let d = Signer::new(KEY).delivery_with_id(URL, &body, &id, 0);
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut raw = format!(
        "POST /jobs HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in &d.headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    raw.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    shared.wait_runs(&id, 1).await;
    // While the handler runs, the id is held.
    deliver(&server, &id, 1, &body)
        .await
        .assert_refused(409, "in_progress");
    drop(stream);
    match framework {
        Framework::Axum => {
            for _ in 0..1000 {
                if shared.cancelled.load(Ordering::SeqCst) == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(
                shared.cancelled.load(Ordering::SeqCst),
                1,
                "handler not dropped"
            );
        }
        Framework::Actix => {
            deliver(&server, &id, 2, &body)
                .await
                .assert_refused(409, "in_progress");
            shared.open(&id, 1);
        }
    }
    deliver_until_free(&server, &id, 3, &body)
        .await
        .assert_processed(&id, 2);
    deliver(&server, &id, 4, &body).await.assert_duplicate(&id);
    assert_eq!(shared.runs(&id), 2);
}

/// The same headers with another `Upstash-Message-Id` (or none): the id is not signed.
fn with_id(headers: &[(String, String)], id: Option<&str>) -> Vec<(String, String)> {
    let mut headers: Vec<_> = headers
        .iter()
        .filter(|(n, _)| n != "upstash-message-id")
        .cloned()
        .collect();
    if let Some(id) = id {
        headers.push(("upstash-message-id".into(), id.into()));
    }
    headers
}

/// A captured delivery sent again (same token, same body): under its own id, under a new id,
/// and under no id. Refused every time; the handler ran once.
async fn replayed_token_is_refused(framework: Framework, backend: Backend) {
    let shared = Arc::new(Shared::default());
    let server = serve(framework, backend.dedup().await, Arc::clone(&shared)).await;
    let id = new_id();
    // The first attempt fails (500): the id is free again, yet its token must not run again.
    let body = plan(&["fail", "ok"]);
    let d = Signer::new(KEY).delivery_with_id(URL, &body, &id, 0);
    let first = post_jobs(&server.base, &d.headers, Bytes::from(body.clone())).await;
    assert_eq!(first.status, 500, "{first:?}");
    let other = new_id();
    for headers in [d.headers.clone(), with_id(&d.headers, Some(&other))] {
        post_jobs(&server.base, &headers, Bytes::from(body.clone()))
            .await
            .assert_refused(401, "token_replayed");
    }
    post_jobs(
        &server.base,
        &with_id(&d.headers, None),
        Bytes::from(body.clone()),
    )
    .await
    .assert_refused(400, "missing_message_id");
    assert_eq!((shared.runs(&id), shared.runs(&other)), (1, 0));
    // QStash's retry (a new token) runs.
    deliver(&server, &id, 1, &body)
        .await
        .assert_processed(&id, 2);
}

/// A captured delivery replayed under the id of a message that has not arrived yet: refused
/// (token replayed), and the genuine message is processed when it comes.
async fn replay_under_a_victims_id(framework: Framework, backend: Backend) {
    let shared = Arc::new(Shared::default());
    let server = serve(framework, backend.dedup().await, Arc::clone(&shared)).await;
    let captured = new_id();
    let d = Signer::new(KEY).delivery_with_id(URL, b"{}", &captured, 0);
    post_jobs(&server.base, &d.headers, Bytes::from_static(b"{}"))
        .await
        .assert_processed(&captured, 1);
    let victim = new_id();
    post_jobs(
        &server.base,
        &with_id(&d.headers, Some(&victim)),
        Bytes::from_static(b"{}"),
    )
    .await
    .assert_refused(401, "token_replayed");
    assert_eq!(shared.runs(&victim), 0);
    let genuine = plan(&["ok"]);
    deliver(&server, &victim, 0, &genuine)
        .await
        .assert_processed(&victim, 1);
    deliver(&server, &victim, 1, &genuine)
        .await
        .assert_duplicate(&victim);
    assert_eq!(shared.runs(&victim), 1);
}

/// A delivery without `Upstash-Message-Id` (a fresh token): 400, the handler does not run.
async fn no_message_id_is_refused(framework: Framework, backend: Backend) {
    let shared = Arc::new(Shared::default());
    let server = serve(framework, backend.dedup().await, Arc::clone(&shared)).await;
    let d = Signer::new(KEY).delivery(URL, b"{}");
    let answer = post_jobs(
        &server.base,
        &with_id(&d.headers, None),
        Bytes::from_static(b"{}"),
    )
    .await;
    answer.assert_refused(400, "missing_message_id");
    let body: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        body["message"],
        "the upstash-message-id header is required for deduplication"
    );
    assert_eq!(shared.runs("-"), 0);
}

macro_rules! matrix {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;

            async fn run(framework: Framework, store: StoreKind) {
                let Some(backend) = Backend::start(store) else { return };
                super::$scenario(framework, backend).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn axum_memory() { run(Framework::Axum, StoreKind::Memory).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn axum_redis() { run(Framework::Axum, StoreKind::Redis).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn actix_memory() { run(Framework::Actix, StoreKind::Memory).await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn actix_redis() { run(Framework::Actix, StoreKind::Redis).await }
        }
    )*};
}

matrix!(
    same_message_twice,
    concurrent_copies,
    failed_attempt_is_retried,
    expired_lease_taken_over,
    panic_releases,
    disconnect_releases,
    replayed_token_is_refused,
    replay_under_a_victims_id,
    no_message_id_is_refused,
);

// ---------------------------------------------------------------------------------------------
// Redis only.

/// Two servers (one axum, one actix-web) sharing one Redis: 24 concurrent copies of a message
/// spread over both run it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_redis_run_once() {
    let Some(backend) = Backend::start(StoreKind::Redis) else {
        return;
    };
    let shared = Arc::new(Shared::default());
    let servers = Arc::new([
        serve(Framework::Axum, backend.dedup().await, Arc::clone(&shared)).await,
        serve(Framework::Actix, backend.dedup().await, Arc::clone(&shared)).await,
    ]);
    let id = new_id();
    let body = plan(&["sleep"]);
    let mut tasks = Vec::new();
    for i in 0..24u32 {
        let (servers, id, body) = (Arc::clone(&servers), id.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            deliver(&servers[(i % 2) as usize], &id, i, &body).await
        }));
    }
    let mut processed = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        assert!(answer.status < 500, "{answer:?}");
        if answer.is_processed(&id) {
            processed += 1;
        } else if answer.status == 409 {
            answer.assert_refused(409, "in_progress");
        } else {
            answer.assert_duplicate(&id);
        }
    }
    assert_eq!((processed, shared.runs(&id)), (1, 1));
    for server in servers.iter() {
        deliver(server, &id, 30, &body).await.assert_duplicate(&id);
    }
    // A release by one instance lets the other run.
    let id = new_id();
    let body = plan(&["fail", "ok"]);
    assert_eq!(deliver(&servers[0], &id, 0, &body).await.status, 500);
    deliver(&servers[1], &id, 1, &body)
        .await
        .assert_processed(&id, 2);
    deliver(&servers[0], &id, 2, &body)
        .await
        .assert_duplicate(&id);
}

/// Redis killed mid-run: 503 (fail closed), the handler does not run, nothing is marked done;
/// once redis-server is back on the same port, the message is processed once.
async fn redis_killed(framework: Framework) {
    let Some(mut backend) = Backend::start(StoreKind::Redis) else {
        return;
    };
    let shared = Arc::new(Shared::default());
    let server = serve(framework, backend.dedup().await, Arc::clone(&shared)).await;
    let before = new_id();
    deliver(&server, &before, 0, b"{}")
        .await
        .assert_processed(&before, 1);

    // A handler in flight when Redis dies: it answers 2xx, the completion fails (logged).
    let in_flight = new_id();
    let body = plan(&["wait"]);
    let server = Arc::new(server);
    let (s, i, b) = (Arc::clone(&server), in_flight.clone(), body.clone());
    let running = tokio::spawn(async move { deliver(&s, &i, 0, &b).await });
    shared.wait_runs(&in_flight, 1).await;

    backend.redis.as_mut().unwrap().kill();
    shared.open(&in_flight, 1);
    running.await.unwrap().assert_processed(&in_flight, 1);

    let id = new_id();
    for retried in 0..3 {
        let answer = deliver(&server, &id, retried, b"{}").await;
        answer.assert_refused(503, "store_unavailable");
        assert_eq!(answer.headers["retry-after"], "10");
    }
    assert_eq!(
        shared.runs(&id),
        0,
        "the handler ran while the store was down"
    );

    backend.redis.as_mut().unwrap().restart();
    let mut answer = deliver(&server, &id, 3, b"{}").await;
    for retried in 4..200 {
        if answer.status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = deliver(&server, &id, retried, b"{}").await;
    }
    answer.assert_processed(&id, 1);
    deliver(&server, &id, 300, b"{}")
        .await
        .assert_duplicate(&id);
    assert_eq!(shared.runs(&id), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_axum() {
    redis_killed(Framework::Axum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_actix() {
    redis_killed(Framework::Actix).await;
}

// ---------------------------------------------------------------------------------------------
// The example servers, through their own code.

const EXAMPLE_CURRENT: &str = "sig_exampleCurrent0123456789ab";
const EXAMPLE_NEXT: &str = "sig_exampleNext0123456789abcde";

/// An example server on a thread of its own; stopped when dropped.
struct Example {
    base: String,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Example {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

/// The environment the example reads (`PUBLIC_URL`, `REDIS_URL` when given, `BIND`).
fn example_env(bind: &str, redis_url: Option<&str>) -> HashMap<&'static str, String> {
    let mut env = HashMap::from([
        ("BIND", bind.to_owned()),
        ("PUBLIC_URL", "https://receiver.test".to_owned()),
    ]);
    if let Some(url) = redis_url {
        env.insert("REDIS_URL", url.to_owned());
    }
    env
}

/// The example's settings error with this `REDIS_URL`.
async fn example_settings_error(name: &str, redis_url: &str) -> String {
    let env = example_env("127.0.0.1:0", Some(redis_url));
    let var = |name: &str| env.get(name).cloned();
    let keys = || SigningKeys::new(EXAMPLE_CURRENT, EXAMPLE_NEXT).map(Verifier::new);
    let result = match name {
        "axum_server" => axum_server::settings(keys(), var).await.map(drop),
        _ => actix_server::settings(keys(), var).await.map(drop),
    };
    result.expect_err("no server")
}

fn start_example(name: &str, redis_url: Option<&str>) -> Example {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = listener.local_addr().unwrap().to_string();
    let env = example_env(&bind, redis_url);
    let keys = SigningKeys::new(EXAMPLE_CURRENT, EXAMPLE_NEXT).map(Verifier::new);
    let base = format!("http://{bind}");
    let stop: Box<dyn FnOnce() + Send> = if name == "axum_server" {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let settings = axum_server::settings(keys, |n| env.get(n).cloned())
                    .await
                    .unwrap();
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                ready.send(()).unwrap();
                tokio::select! {
                    served = axum_server::serve(listener, settings) => served.unwrap(),
                    _ = stopped => {}
                }
            });
        });
        started.recv().unwrap();
        Box::new(move || {
            let _ = stop.send(());
        })
    } else {
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let settings = actix_server::settings(keys, |n| env.get(n).cloned())
                    .await
                    .unwrap();
                let server = actix_server::server(listener, settings).unwrap();
                ready.send(server.handle()).unwrap();
                server.await
            })
        });
        let handle = started.recv().unwrap();
        Box::new(move || drop(handle.stop(false)))
    };
    Example {
        base,
        stop: Some(stop),
    }
}

async fn deliver_job(example: &Example, id: &str, retried: u32, task: &str) -> Answer {
    let body = serde_json::to_vec(&json!({ "task": task })).unwrap();
    let d = Signer::new(EXAMPLE_CURRENT).delivery_with_id(
        "https://receiver.test/jobs",
        &body,
        id,
        retried,
    );
    post_jobs(&example.base, &d.headers, Bytes::from(body)).await
}

async fn runs_of(example: &Example, task: &str) -> u64 {
    let res = client()
        .get(format!("{}/stats", example.base).parse().unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let stats: Value = serde_json::from_slice(&body).unwrap();
    stats["runs"][task].as_u64().unwrap_or(0)
}

/// Both example servers on one Redis (`REDIS_URL`): a message delivered to each runs once in
/// all; without `REDIS_URL` each deduplicates in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_servers_share_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let axum = start_example("axum_server", Some(&redis.url()));
    let actix = start_example("actix_server", Some(&redis.url()));
    let id = new_id();
    let first = deliver_job(&axum, &id, 0, "mail").await;
    assert_eq!(first.status, 200, "{first:?}");
    let json: Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(
        json,
        json!({"task": "mail", "message_id": id, "retried": 0})
    );
    deliver_job(&actix, &id, 1, "mail")
        .await
        .assert_duplicate(&id);
    deliver_job(&axum, &id, 2, "mail")
        .await
        .assert_duplicate(&id);
    assert_eq!(
        (runs_of(&axum, "mail").await, runs_of(&actix, "mail").await),
        (1, 0)
    );

    // In memory (no REDIS_URL): each instance on its own; a duplicate within one.
    drop(redis);
    for name in ["axum_server", "actix_server"] {
        let example = start_example(name, None);
        let id = new_id();
        assert_eq!(deliver_job(&example, &id, 0, "local").await.status, 200);
        deliver_job(&example, &id, 1, "local")
            .await
            .assert_duplicate(&id);
        assert_eq!(runs_of(&example, "local").await, 1, "{name}");
    }
}

/// A `REDIS_URL` that does not answer at start: a clear error, no server.
#[tokio::test]
async fn example_servers_refuse_an_unreachable_redis() {
    // A port nobody listens on (bound, then freed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for name in ["axum_server", "actix_server"] {
        let e = example_settings_error(name, &format!("redis://127.0.0.1:{port}")).await;
        assert!(
            e.contains("REDIS_URL: cannot connect to Redis"),
            "{name}: {e}"
        );
        // The error names the cause, never the URL (it may hold a password).
        assert!(!e.contains(&port.to_string()), "{name}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// A completion that outlives its request: a store that answers only through futures and takes
// a while to complete (as a networked store may), and a request dropped while it completes.

/// A [`MemoryStore`] whose `complete` takes
/// [`SLOW_COMPLETE`] before it writes.
struct SlowStore {
    inner: MemoryStore,
}

const SLOW_COMPLETE: Duration = Duration::from_millis(300);

impl DedupStore for SlowStore {
    fn claim<'a>(
        &'a self,
        key: &'a str,
        lease_ttl: Duration,
    ) -> qstash_receiver::dedup::StoreFuture<'a, qstash_receiver::dedup::ClaimOutcome> {
        self.inner.claim(key, lease_ttl)
    }
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a qstash_receiver::dedup::LeaseToken,
        retention: Duration,
    ) -> qstash_receiver::dedup::StoreFuture<'a, qstash_receiver::dedup::LeaseOutcome> {
        Box::pin(async move {
            tokio::time::sleep(SLOW_COMPLETE).await;
            self.inner.complete(key, token, retention).await
        })
    }
    fn release<'a>(
        &'a self,
        key: &'a str,
        token: &'a qstash_receiver::dedup::LeaseToken,
    ) -> qstash_receiver::dedup::StoreFuture<'a, qstash_receiver::dedup::LeaseOutcome> {
        self.inner.release(key, token)
    }
    fn remember<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> qstash_receiver::dedup::StoreFuture<'a, bool> {
        self.inner.remember(key, ttl)
    }
}

fn slow_dedup() -> Dedup {
    Dedup::new(Arc::new(SlowStore {
        inner: MemoryStore::new(),
    }))
}

/// axum: a tower timeout above the layer (as in `examples/axum_server.rs`) fires while the
/// handler's 2xx is being completed; the completion is still written, so QStash's retry (same
/// id, same body, a new token) is a duplicate and the handler ran once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_completion_survives_a_timeout_above_the_layer() {
    use axum::error_handling::HandleErrorLayer;
    use qstash_receiver::tower::QStashLayer;
    use tower::ServiceBuilder;

    async fn jobs(
        axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
        delivery: Delivery,
        body: axum::body::Bytes,
    ) -> (axum::http::StatusCode, String) {
        let (status, text) = handle(shared, &delivery, &body).await;
        (axum::http::StatusCode::from_u16(status).unwrap(), text)
    }

    let shared = Arc::new(Shared::default());
    let layer = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "timeout")
        }))
        .timeout(Duration::from_millis(100))
        .layer(QStashLayer::new(receiver(slow_dedup())));
    let app = axum::Router::new()
        .route("/jobs", axum::routing::post(jobs))
        .route_layer(layer)
        .with_state(Arc::clone(&shared));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let server = Server {
        base: format!("http://{addr}"),
        actix: None,
    };

    let id = new_id();
    let first = deliver(&server, &id, 0, b"{}").await;
    // The handler answered 200 at once; the timeout dropped the request while completing.
    assert_eq!((first.status, first.body.as_str()), (503, "timeout"));
    assert_eq!(shared.runs(&id), 1);
    tokio::time::sleep(SLOW_COMPLETE + Duration::from_millis(300)).await;
    deliver_until_free(&server, &id, 1, b"{}")
        .await
        .assert_duplicate(&id);
    assert_eq!(shared.runs(&id), 1, "a completed handler ran again");
}

/// actix-web: the request future is dropped while the handler's 2xx is being completed (a
/// timeout around the service); the completion is still written, so QStash's retry is a
/// duplicate and the handler ran once.
#[actix_web::test]
async fn actix_completion_survives_a_dropped_request() {
    use actix_web::{App, HttpResponse, test, web};
    use qstash_receiver::actix::QStashMiddleware;

    async fn jobs(
        shared: web::Data<Arc<Shared>>,
        delivery: Delivery,
        body: web::Bytes,
    ) -> HttpResponse {
        let (status, text) = handle(Arc::clone(&shared), &delivery, &body).await;
        HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap()).body(text)
    }

    let shared = Arc::new(Shared::default());
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(Arc::clone(&shared)))
            .service(
                web::resource("/jobs")
                    .wrap(QStashMiddleware::new(receiver(slow_dedup())))
                    .route(web::post().to(jobs)),
            ),
    )
    .await;
    let request = |id: &str, retried: u32| {
        let d = Signer::new(KEY).delivery_with_id(URL, b"{}", id, retried);
        let mut req = test::TestRequest::post()
            .uri("/jobs")
            .insert_header(("host", "receiver.test"))
            .set_payload(&b"{}"[..]);
        for (name, value) in &d.headers {
            req = req.insert_header((name.as_str(), value.as_str()));
        }
        req.to_request()
    };

    let id = new_id();
    let first = tokio::time::timeout(
        Duration::from_millis(100),
        test::call_service(&app, request(&id, 0)),
    )
    .await;
    assert!(first.is_err(), "answered before the completion was written");
    assert_eq!(shared.runs(&id), 1);
    tokio::time::sleep(SLOW_COMPLETE + Duration::from_millis(300)).await;
    let retry = test::call_service(&app, request(&id, 1)).await;
    assert_eq!(retry.status(), 200);
    assert_eq!(retry.headers().get("qstash-duplicate").unwrap(), "true");
    let body: Value = serde_json::from_slice(&test::read_body(retry).await).unwrap();
    assert_eq!(body, json!({"duplicate": true, "messageId": id}));
    assert_eq!(shared.runs(&id), 1, "a completed handler ran again");
}
