//! The tower layer, outside axum: every shared case through `oneshot` and through a real hyper
//! server on loopback, what the inner service receives, what is never read, custom answers.
#![cfg(all(feature = "tower", feature = "test-utils"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod tower_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use qstash_receiver::test_utils::Signer;
use qstash_receiver::tower::QStashLayer;
use qstash_receiver::{Claims, Delivery, MatchedKey, Receiver, SigningKeys, Verifier};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

use common::{CURRENT_KEY, PUBLIC_BASE};
use tower_support::{
    ChunkedBody, CountingBody, TestBody, assert_case, case_request, client, full, read_response,
};

async fn echo(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req.into_body().collect().await.unwrap().to_bytes();
    Ok(Response::new(Full::new(body)))
}

/// The inner service must never run: it panics.
async fn unreachable_handler(_: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    panic!("the inner service ran for a refused request")
}

fn signed_request<B>(path: &str, body: &[u8], make: impl FnOnce(Vec<u8>) -> B) -> Request<B> {
    let delivery = Signer::new(CURRENT_KEY).delivery(&format!("{PUBLIC_BASE}{path}"), body);
    let mut builder = Request::post(path);
    for (name, value) in &delivery.headers {
        builder = builder.header(name, value);
    }
    builder.body(make(body.to_vec())).unwrap()
}

#[tokio::test]
async fn every_shared_case_through_oneshot() {
    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(common::receiver()))
        .service(service_fn(echo));
    for case in common::cases() {
        let response = service
            .clone()
            .oneshot(case_request(&case, case.path))
            .await
            .unwrap();
        let (status, content_type, body) = read_response(response).await;
        assert_case(&case, status, content_type.as_deref(), &body);
    }
}

async fn serve_echo() -> SocketAddr {
    serve(QStashLayer::new(common::receiver())).await
}

async fn serve(layer: QStashLayer) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = ServiceBuilder::new().layer(layer).service(service_fn(echo));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn every_shared_case_through_a_real_hyper_server() {
    let addr = serve_echo().await;
    let client = client();
    for case in common::cases() {
        let uri = format!("http://{addr}{}", case.path);
        let response = client.request(case_request(&case, &uri)).await.unwrap();
        let (status, content_type, body) = read_response(response).await;
        assert_case(&case, status, content_type.as_deref(), &body);
    }
}

#[tokio::test]
async fn inner_service_gets_the_sent_bytes_claims_and_delivery() {
    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(common::receiver()))
        .service(service_fn(|req: Request<Full<Bytes>>| async move {
            let claims = req.extensions().get::<Claims>().cloned().unwrap();
            let delivery = req.extensions().get::<Delivery>().cloned().unwrap();
            let marker = req.extensions().get::<&'static str>().copied();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let answer = serde_json::json!({
                "url": claims.url(),
                "key": format!("{:?}", claims.matched_key()),
                "message_id": delivery.message_id(),
                "retried": delivery.retried(),
                "marker": marker,
                "body": String::from_utf8(body.to_vec()).unwrap(),
            });
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer.to_string()))))
        }));
    let body = br#"{"task":"mail","n":42}"#;
    let delivery = Signer::new(common::NEXT_KEY).delivery_with_id(
        &format!("{PUBLIC_BASE}/jobs?x=1"),
        body,
        "msg_abc",
        2,
    );
    let mut builder = Request::post("/jobs?x=1").extension("kept");
    for (name, value) in &delivery.headers {
        builder = builder.header(name, value);
    }
    let request = builder.body(full(&body[..])).unwrap();
    let (status, _, answer) = read_response(service.oneshot(request).await.unwrap()).await;
    assert_eq!(status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["url"], format!("{PUBLIC_BASE}/jobs?x=1"));
    assert_eq!(answer["key"], format!("{:?}", MatchedKey::Next));
    assert_eq!(answer["message_id"], "msg_abc");
    assert_eq!(answer["retried"], 2);
    assert_eq!(answer["marker"], "kept", "the original extensions are kept");
    assert_eq!(answer["body"], std::str::from_utf8(body).unwrap());
}

#[tokio::test]
async fn body_is_never_polled_after_a_head_rejection_without_draining() {
    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(common::receiver()).drain_limit(0))
        .service(service_fn(unreachable_handler));

    // No signature.
    let (body, polls) = CountingBody::new(&b"{}"[..]);
    let request = Request::post("/jobs").body(body).unwrap();
    let (status, _, answer) = read_response(service.clone().oneshot(request).await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&answer).contains("missing_signature"));
    assert_eq!(polls.load(Ordering::SeqCst), 0);

    // Signed for another route, expired, unknown key: all refused before the body.
    for (signer, path) in [
        (Signer::new(CURRENT_KEY), "/admin"),
        (
            Signer::new(CURRENT_KEY)
                .issued_at(std::time::SystemTime::now() - std::time::Duration::from_secs(900)),
            "/jobs",
        ),
        (Signer::new("sig_someoneElse"), "/jobs"),
    ] {
        let delivery = signer.delivery(&format!("{PUBLIC_BASE}{path}"), b"{}");
        let mut builder = Request::post("/jobs");
        for (name, value) in &delivery.headers {
            builder = builder.header(name, value);
        }
        let (body, polls) = CountingBody::new(&b"{}"[..]);
        let response = service
            .clone()
            .oneshot(builder.body(body).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(polls.load(Ordering::SeqCst), 0, "{path}");
    }

    // A Content-Length over the limit: 413 before reading.
    let mut request = signed_request("/jobs", b"{}", |b| CountingBody::new(b).0);
    let (body, polls) = CountingBody::new(&b"{}"[..]);
    *request.body_mut() = body;
    request.headers_mut().insert(
        "content-length",
        (common::LIMIT as u64 + 1).to_string().parse().unwrap(),
    );
    let (status, _, answer) = read_response(service.oneshot(request).await.unwrap()).await;
    assert_eq!(status, 413);
    assert!(String::from_utf8_lossy(&answer).contains("payload_too_large"));
    assert_eq!(polls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_good_request_polls_the_body() {
    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(common::receiver()))
        .service(service_fn(echo));
    let body = b"hello";
    let mut request = signed_request("/jobs", body, |b| CountingBody::new(b).0);
    let (counting, polls) = CountingBody::new(&body[..]);
    *request.body_mut() = counting;
    let (status, _, answer) = read_response(service.oneshot(request).await.unwrap()).await;
    assert_eq!((status, &answer[..]), (200, &body[..]));
    assert!(polls.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(common::receiver()))
        .service(service_fn(unreachable_handler));
    let big = vec![b'a'; 20 * 1024 * 1024];
    let request = signed_request("/jobs", &big, |b| ChunkedBody::new(b.len()));
    let (status, content_type, answer) =
        read_response(service.oneshot(request).await.unwrap()).await;
    assert_eq!(status, 413);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(json["error"], "payload_too_large");
}

#[tokio::test]
async fn custom_rejection_response() {
    let layer = QStashLayer::new(common::receiver()).on_rejection(|rejection| {
        Response::builder()
            .status(rejection.status())
            .header("x-rejected", rejection.code())
            .body(Bytes::from(format!("nope: {}", rejection.code())))
            .unwrap()
    });
    let service = ServiceBuilder::new().layer(layer).service(service_fn(echo));
    let request: Request<TestBody> = Request::post("/jobs").body(full("{}")).unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["x-rejected"], "missing_signature");
    let (_, _, body) = read_response(response).await;
    assert_eq!(&body[..], b"nope: missing_signature");

    // Accepted requests are untouched.
    let request = signed_request("/jobs", b"ok", full);
    let (status, _, body) = read_response(service.oneshot(request).await.unwrap()).await;
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));
}

#[tokio::test]
async fn url_policy_builders() {
    let receiver = || {
        Receiver::new(Verifier::new(
            SigningKeys::new(CURRENT_KEY, "sig_n").unwrap(),
        ))
    };

    // Unconfigured: 500 misconfigured, never a silent skip.
    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(receiver()))
        .service(service_fn(unreachable_handler));
    let (status, _, body) = read_response(
        service
            .oneshot(signed_request("/jobs", b"", full))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 500);
    assert!(String::from_utf8_lossy(&body).contains("\"misconfigured\""));

    // Exact URL: the token must be for that URL, whatever the path.
    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(
            receiver().expected_url(format!("{PUBLIC_BASE}/jobs")),
        ))
        .service(service_fn(echo));
    let response = service
        .clone()
        .oneshot(signed_request("/jobs", b"x", full))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = service
        .oneshot(signed_request("/other", b"x", full))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    // Public URL.
    assert!(receiver().public_url("not a url").is_err());
    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(
            receiver()
                .public_url(PUBLIC_BASE)
                .unwrap()
                .max_body_bytes(3),
        ))
        .service(service_fn(echo));
    let response = service
        .clone()
        .oneshot(signed_request("/a", b"abc", full))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = service
        .oneshot(signed_request("/a", b"abcd", full))
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
}

/// An inner service that must be polled ready before each call; a clone starts not ready.
#[derive(Debug, Default)]
struct MustBeReady {
    ready: bool,
    polled: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Clone for MustBeReady {
    fn clone(&self) -> Self {
        Self {
            ready: false,
            polled: self.polled.clone(),
        }
    }
}

impl Service<Request<Full<Bytes>>> for MustBeReady {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.polled.fetch_add(1, Ordering::SeqCst);
        self.ready = true;
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<Full<Bytes>>) -> Self::Future {
        let status = if self.ready { 200 } else { 500 };
        self.ready = false;
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        std::future::ready(Ok(response))
    }
}

#[tokio::test]
async fn poll_ready_is_forwarded_and_the_ready_service_is_called() {
    let inner = MustBeReady::default();
    let polled = inner.polled.clone();
    let mut service = ServiceBuilder::new()
        .layer(QStashLayer::new(common::receiver()))
        .service(inner);
    for n in 0..3 {
        let response = ServiceExt::<Request<TestBody>>::ready(&mut service)
            .await
            .unwrap()
            .call(signed_request("/jobs", b"1", full))
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "call {n} reached a service that was not ready"
        );
    }
    assert_eq!(polled.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn rejections_are_logged_with_code_and_message_id_never_token_or_body() {
    let (logs, _guard) = common::Logs::capture_with_spans();

    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(common::receiver()))
        .service(service_fn(echo));
    let body = br#"{"secret":"hunter2"}"#;
    let delivery = Signer::new(CURRENT_KEY).delivery_with_id(
        &format!("{PUBLIC_BASE}/jobs"),
        body,
        "msg_logged",
        0,
    );
    let mut builder = Request::post("/jobs");
    for (name, value) in &delivery.headers {
        builder = builder.header(name, value);
    }
    // Tampered body: refused after the body was read.
    let response = service
        .clone()
        .oneshot(builder.body(full(&br#"{"secret":"hunter3"}"#[..])).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Expired token: refused before.
    let expired = Signer::new(CURRENT_KEY)
        .issued_at(std::time::SystemTime::now() - std::time::Duration::from_secs(900))
        .delivery_with_id(&format!("{PUBLIC_BASE}/jobs"), body, "msg_expired", 3);
    let mut builder = Request::post("/jobs");
    for (name, value) in &expired.headers {
        builder = builder.header(name, value);
    }
    let response = service
        .oneshot(builder.body(full(&body[..])).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let logs = logs.take().join("\n");
    assert!(logs.contains("WARN"), "{logs}");
    assert!(
        logs.contains("body_mismatch") && logs.contains("msg_logged"),
        "{logs}"
    );
    assert!(
        logs.contains("token_expired") && logs.contains("msg_expired"),
        "{logs}"
    );
    for secret in [&delivery.signature, &expired.signature] {
        assert!(!logs.contains(secret.as_str()), "token in logs: {logs}");
        // Not even the signature segment alone.
        assert!(!logs.contains(secret.rsplit('.').next().unwrap()), "{logs}");
    }
    assert!(!logs.contains("hunter"), "body in logs: {logs}");
    assert!(!logs.contains(CURRENT_KEY), "key in logs: {logs}");
}

/// A body of `frames` frames of `FRAME` bytes without a known length, counting its polls.
struct Frames {
    left: usize,
    polls: Arc<AtomicUsize>,
}

const FRAME: usize = 1000;

impl Frames {
    fn new(frames: usize) -> (Self, Arc<AtomicUsize>) {
        let polls = Arc::new(AtomicUsize::new(0));
        let body = Self {
            left: frames,
            polls: Arc::clone(&polls),
        };
        (body, polls)
    }
}

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        self.left -= 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![
            b'a';
            FRAME
        ])))))
    }
}

fn assert_json_refusal(status: u16, content_type: Option<&str>, body: &[u8], want: (u16, &str)) {
    assert_eq!(status, want.0, "{}", String::from_utf8_lossy(body));
    assert_eq!(content_type, Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["error"], want.1);
}

/// A request with a verified token and a body of `frames` frames, announcing `announced` bytes
/// when given, and the count of the body's polls.
fn signed_frames(frames: usize, announced: Option<usize>) -> (Request<Frames>, Arc<AtomicUsize>) {
    let (body, polls) = Frames::new(frames);
    let mut request = signed_request("/jobs", b"{}", |_| body);
    if let Some(length) = announced {
        request
            .headers_mut()
            .insert("content-length", length.to_string().parse().unwrap());
    }
    (request, polls)
}

/// `request` through a layer with `drain_limit(budget)` (the default when `None`), which must
/// answer the JSON 413 without calling the service.
async fn expect_413(budget: Option<usize>, request: Request<Frames>) {
    let layer = match budget {
        Some(budget) => QStashLayer::new(common::receiver()).drain_limit(budget),
        None => QStashLayer::new(common::receiver()),
    };
    let service = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(unreachable_handler));
    let (status, content_type, answer) =
        read_response(service.oneshot(request).await.unwrap()).await;
    assert_json_refusal(
        status,
        content_type.as_deref(),
        &answer,
        (413, "payload_too_large"),
    );
}

#[tokio::test]
async fn a_413_drains_the_body_to_its_end_and_an_unauthenticated_refusal_does_not() {
    // A verified token, a Content-Length over the limit: refused before reading, then the 100
    // frames are read and dropped, then the 413.
    let (request, polls) = signed_frames(100, Some(100 * FRAME));
    expect_413(None, request).await;
    assert_eq!(polls.load(Ordering::SeqCst), 101, "100 frames and the end");

    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(common::receiver()))
        .service(service_fn(unreachable_handler));
    // No signature: answered at once, the body is not touched (an unauthenticated client must
    // not hold the connection by trickling a body).
    let (body, polls) = Frames::new(50);
    let request = Request::post("/jobs").body(body).unwrap();
    let (status, content_type, answer) =
        read_response(service.clone().oneshot(request).await.unwrap()).await;
    assert_json_refusal(
        status,
        content_type.as_deref(),
        &answer,
        (401, "missing_signature"),
    );
    assert_eq!(polls.load(Ordering::SeqCst), 0);

    // A token for another key, with an over-limit length: 401 first, not drained either.
    let delivery = Signer::new("sig_someoneElse").delivery(&format!("{PUBLIC_BASE}/jobs"), b"");
    let mut builder = Request::post("/jobs");
    for (name, value) in &delivery.headers {
        builder = builder.header(name, value);
    }
    let (body, polls) = Frames::new(100);
    let request = builder
        .header("content-length", (100 * FRAME).to_string())
        .body(body)
        .unwrap();
    let (status, _, _) = read_response(service.oneshot(request).await.unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(polls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_drain_stops_at_the_budget() {
    // Past the limit (64 frames = 64 000 bytes ≤ 64 KiB, the 66th frame passes it): the frame
    // that passed it counts against the budget of 25 frames, then 24 more are drained, the
    // rest is never polled, and the 413 goes out.
    let over = common::LIMIT / FRAME + 1;
    for (budget, drained) in [(25 * FRAME, 24), (25 * FRAME + 1, 25), (FRAME, 0)] {
        let (request, polls) = signed_frames(1000, None);
        expect_413(Some(budget), request).await;
        assert_eq!(
            polls.load(Ordering::SeqCst),
            over + drained,
            "budget {budget}"
        );
    }
    // Announced over the limit and within the budget: drained to its end (70 frames + end).
    let (request, polls) = signed_frames(70, Some(70 * FRAME));
    expect_413(Some(100 * FRAME), request).await;
    assert_eq!(polls.load(Ordering::SeqCst), 71);
}

#[tokio::test]
async fn what_is_not_drained() {
    // Each case is a request with a verified token and a Content-Length over the limit (70
    // frames of 1000 bytes > 64 KiB), which is drained within a budget of 100 frames (the last
    // case checks it).
    type Change = fn(&mut Request<Frames>);
    let cases: [(&str, usize, Change, usize); 5] = [
        (
            "HTTP/2",
            100,
            |r| *r.version_mut() = http::Version::HTTP_2,
            0,
        ),
        (
            "Expect: 100-continue",
            100,
            |r| {
                r.headers_mut()
                    .insert("expect", "100-continue".parse().unwrap());
            },
            0,
        ),
        (
            "announced longer than the budget",
            100,
            |r| {
                r.headers_mut()
                    .insert("content-length", (101 * FRAME).to_string().parse().unwrap());
            },
            0,
        ),
        ("drain_limit(0)", 0, |_| {}, 0),
        ("drained: HTTP/1.1 within the budget", 100, |_| {}, 71),
    ];
    for (name, budget_frames, change, polled) in cases {
        let (mut request, polls) = signed_frames(70, Some(70 * FRAME));
        change(&mut request);
        expect_413(Some(budget_frames * FRAME), request).await;
        assert_eq!(polls.load(Ordering::SeqCst), polled, "{name}");
    }
}

/// One signed upload of `size` bytes in 64 KiB frames, with or without `Content-Length`, through its
/// own connection: the status and body the client read.
async fn upload(addr: SocketAddr, size: usize, with_length: bool) -> (u16, Option<String>, Bytes) {
    let chunk = Bytes::from(vec![b'a'; 64 * 1024]);
    let frames = size / chunk.len();
    let stream = futures_util::stream::iter((0..frames).map(move |_| {
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(http_body::Frame::data(chunk.clone()))
    }));
    let mut builder = Request::post(format!("http://{addr}/jobs"));
    // Signed for a body we never send: the limit must trip first.
    let delivery = Signer::new(CURRENT_KEY).delivery(&format!("{PUBLIC_BASE}/jobs"), b"");
    for (name, value) in &delivery.headers {
        builder = builder.header(name, value);
    }
    if with_length {
        builder = builder.header("content-length", (frames * 64 * 1024).to_string());
    }
    let body = http_body_util::StreamBody::new(stream).boxed();
    let response = client().request(builder.body(body).unwrap()).await.unwrap();
    read_response(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_over_limit_uploads_all_read_their_refusal() {
    // 48 signed uploads of 4 MiB (64 times the limit) at once through a real server, with and
    // without Content-Length: every client reads its whole JSON 413.
    let addr = serve(QStashLayer::new(common::receiver())).await;
    let mut tasks = Vec::new();
    for i in 0..48 {
        let with_length = i % 2 == 0;
        tasks.push(tokio::spawn(async move {
            let answer = upload(addr, 4 * 1024 * 1024, with_length).await;
            (with_length, answer)
        }));
    }
    for task in tasks {
        let (with_length, (status, content_type, body)) = task.await.unwrap();
        assert_eq!(status, 413, "with Content-Length: {with_length}");
        assert_json_refusal(
            status,
            content_type.as_deref(),
            &body,
            (413, "payload_too_large"),
        );
    }
}

/// A body of `bytes` sent one byte per frame, each frame its own allocation (as a client that
/// trickles its upload produces), with no announced length.
struct OneByteFrames {
    bytes: Bytes,
    at: usize,
}

impl http_body::Body for OneByteFrames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        let at = self.at;
        let Some(byte) = self.bytes.get(at..at + 1) else {
            return std::task::Poll::Ready(None);
        };
        let frame = Bytes::copy_from_slice(byte);
        self.at += 1;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(frame))))
    }
}

/// A 1 MiB body in one-byte frames is read into one buffer, verified and echoed whole. (Its
/// memory is measured with `valgrind --tool=dhat` on this test alone.)
#[tokio::test(flavor = "current_thread")]
async fn a_body_in_one_byte_frames_is_verified_and_echoed() {
    const SIZE: usize = 1024 * 1024;
    let body: Bytes = (0..SIZE).map(|i| (i % 251) as u8).collect();
    let receiver = common::receiver().max_body_bytes(SIZE);
    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(receiver))
        .service(service_fn(echo));
    let request = signed_request("/jobs", &body, |_| OneByteFrames {
        bytes: body.clone(),
        at: 0,
    });
    let (status, _, echoed) = read_response(service.oneshot(request).await.unwrap()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&echoed));
    assert!(echoed == body, "the echoed body differs from the one sent");
}

/// A request to `/jobs` with `headers` (appended in order) and `body`.
fn request_with(headers: &[(String, String)], body: &[u8]) -> Request<TestBody> {
    let mut builder = Request::post("/jobs");
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(full(body.to_vec())).unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_huge_message_id_on_an_unauthenticated_request_logs_one_short_debug_line() {
    let (logs, _guard) = common::Logs::capture();
    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(common::receiver()))
        .service(service_fn(unreachable_handler));
    // 200 KB of id, with a tab and bytes that are not UTF-8.
    let mut id = b"msg_\t\xff".to_vec();
    id.resize(200_000, b'm');
    let forged = Signer::new("sig_notTheReceiversKey0123456789")
        .delivery(&format!("{PUBLIC_BASE}/jobs"), b"{}");
    for (signature, code) in [
        (None, "missing_signature"),
        (Some(forged.signature.as_str()), "invalid_signature"),
    ] {
        let mut builder = Request::post("/jobs").header("upstash-message-id", &id[..]);
        if let Some(signature) = signature {
            builder = builder.header("upstash-signature", signature);
        }
        let response = service
            .clone()
            .oneshot(builder.body(full(&b"{}"[..])).unwrap())
            .await
            .unwrap();
        let (status, content_type, body) = read_response(response).await;
        assert_json_refusal(status, content_type.as_deref(), &body, (401, code));
        let lines = logs.take();
        common::assert_quiet_and_short(&lines);
        assert!(lines.iter().any(|l| l.contains(code)), "{lines:?}");
        assert!(
            lines.iter().any(|l| l.contains("msg_\\t\\xffmmm")),
            "the id, escaped: {lines:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_misconfigured_receiver_logs_an_error_only_for_authenticated_requests() {
    for (what, receiver) in common::misconfigured_receivers() {
        let (logs, _guard) = common::Logs::capture();
        let service = ServiceBuilder::new()
            .layer(QStashLayer::new(receiver))
            .service(service_fn(unreachable_handler));
        let forged = Signer::new("sig_notTheReceiversKey0123456789")
            .delivery(&format!("{PUBLIC_BASE}/jobs"), b"{}");
        for (request, code) in [
            (request_with(&[], b"{}"), "missing_signature"),
            (request_with(&forged.headers, b"{}"), "invalid_signature"),
        ] {
            let response = service.clone().oneshot(request).await.unwrap();
            let (status, content_type, body) = read_response(response).await;
            assert_json_refusal(status, content_type.as_deref(), &body, (401, code));
        }
        let lines = logs.take();
        common::assert_quiet_and_short(&lines);

        // Signed with the receiver's key: now the misconfiguration is reported.
        let response = service
            .oneshot(signed_request("/jobs", b"{}", full))
            .await
            .unwrap();
        let (status, content_type, body) = read_response(response).await;
        assert_json_refusal(
            status,
            content_type.as_deref(),
            &body,
            (500, "misconfigured"),
        );
        let lines = logs.take();
        assert!(
            lines
                .iter()
                .any(|l| common::level_of(l) == "ERROR" && l.contains("misconfigured")),
            "{what}: {lines:?}"
        );
    }
}

#[tokio::test]
async fn the_first_region_header_selects_the_keys() {
    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(common::regional_receiver()))
        .service(service_fn(echo));
    let call = |regions: &'static [&'static str]| {
        let service = service.clone();
        async move {
            let headers = common::eu_delivery("/jobs", b"{}", regions);
            let response = service
                .oneshot(request_with(&headers, b"{}"))
                .await
                .unwrap();
            read_response(response).await
        }
    };
    let (status, _, body) = call(&["EU-CENTRAL-1"]).await;
    assert_eq!((status, &body[..]), (200, &b"{}"[..]));
    // The first names the EU keys: the token verifies, then the repeated header is refused.
    let (status, content_type, body) = call(&["EU-CENTRAL-1", "US-EAST-1"]).await;
    assert_json_refusal(
        status,
        content_type.as_deref(),
        &body,
        (400, "invalid_delivery_header"),
    );
    // The first names the default keys: they do not match the EU token.
    let (status, content_type, body) = call(&["US-EAST-1", "EU-CENTRAL-1"]).await;
    assert_json_refusal(
        status,
        content_type.as_deref(),
        &body,
        (401, "invalid_signature"),
    );
}

/// The layer's former policy setters still compile, and set the layer's receiver.
#[test]
#[allow(deprecated)]
fn deprecated_layer_setters_forward_to_the_receiver() {
    let receiver = || {
        Receiver::new(Verifier::new(
            SigningKeys::new(CURRENT_KEY, "sig_n").unwrap(),
        ))
    };
    let layer = QStashLayer::new(receiver())
        .public_url(PUBLIC_BASE)
        .unwrap()
        .max_body_bytes(3)
        .non_retryable_invalid_payload(true)
        .dedup(qstash_receiver::dedup::Dedup::new(std::sync::Arc::new(
            qstash_receiver::dedup::MemoryStore::new(),
        )));
    let r = layer.receiver();
    assert_eq!(r.get_max_body_bytes(), 3);
    assert!(r.get_non_retryable_invalid_payload());
    assert!(r.get_dedup().is_some());
    assert_eq!(
        r.get_url_policy()
            .expected_url(&qstash_receiver::RequestTarget::new("/jobs"))
            .unwrap()
            .as_deref(),
        Some(format!("{PUBLIC_BASE}/jobs").as_str())
    );
    assert_eq!((r.limit(), r.policy().is_configured()), (3, true));
    let layer = QStashLayer::new(receiver()).expected_url("https://x.example/a");
    assert!(
        QStashLayer::new(receiver())
            .public_url("not a url")
            .is_err()
    );
    assert!(layer.receiver().deduplication().is_none());
}
