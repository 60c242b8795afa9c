//! axum: the layer under `route_layer` and the extractors, through `oneshot` and through a real
//! `axum::serve` server on loopback with a real client.
#![cfg(all(feature = "axum", feature = "test-utils"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod tower_support;

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use qstash_receiver::axum::{
    Callback, FailureCallback, NonRetryable, RetryAfter, Verified, VerifiedRejection,
};
use qstash_receiver::test_utils::Signer;
use qstash_receiver::tower::QStashLayer;
use qstash_receiver::{
    Claims, Delivery, NON_RETRYABLE_HEADER, Receiver, Rejection, SigningKeys, Verifier,
};
use tower::ServiceExt;

use common::{CURRENT_KEY, PUBLIC_BASE};
use tower_support::{ChunkedBody, assert_case, case_request, client, full, read_response};

#[derive(Clone)]
struct AppState {
    receiver: Receiver,
}

impl FromRef<AppState> for Receiver {
    fn from_ref(state: &AppState) -> Receiver {
        state.receiver.clone()
    }
}

fn state() -> AppState {
    AppState {
        receiver: common::receiver(),
    }
}

async fn echo(body: Bytes) -> Bytes {
    body
}

fn layered_echo() -> Router {
    Router::new()
        .route("/jobs", post(echo))
        .route_layer(QStashLayer::new(common::receiver()))
        .route("/health", get(|| async { "ok" }))
}

fn signed(path: &str, body: impl Into<Vec<u8>>) -> Request<Body> {
    signed_with(&Signer::new(CURRENT_KEY), path, path, body)
}

fn signed_with(
    signer: &Signer,
    signed_path: &str,
    path: &str,
    body: impl Into<Vec<u8>>,
) -> Request<Body> {
    let body = body.into();
    let delivery = signer.delivery(&format!("{PUBLIC_BASE}{signed_path}"), &body);
    let mut builder = Request::post(path).header("content-type", "application/json");
    for (name, value) in &delivery.headers {
        builder = builder.header(name, value);
    }
    builder.body(Body::from(body)).unwrap()
}

async fn call(app: &Router, request: Request<Body>) -> (u16, Option<String>, Bytes) {
    read_response(app.clone().oneshot(request).await.unwrap()).await
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn every_shared_case_under_route_layer_through_oneshot() {
    let app = layered_echo();
    for case in common::cases() {
        let response = app
            .clone()
            .oneshot(case_request(&case, case.path))
            .await
            .unwrap();
        let (status, content_type, body) = read_response(response).await;
        assert_case(&case, status, content_type.as_deref(), &body);
    }
}

#[tokio::test]
async fn every_shared_case_with_verified_standalone() {
    let app = Router::new()
        .route(
            "/jobs",
            post(|Verified(body): Verified<Bytes>| async move { body }),
        )
        .with_state(state());
    for case in common::cases() {
        let response = app
            .clone()
            .oneshot(case_request(&case, case.path))
            .await
            .unwrap();
        let (status, content_type, body) = read_response(response).await;
        assert_case(&case, status, content_type.as_deref(), &body);
    }
}

#[tokio::test]
async fn every_shared_case_through_a_real_server_and_huge_bodies() {
    let addr = serve(layered_echo()).await;
    let client = client();
    for case in common::cases() {
        let uri = format!("http://{addr}{}", case.path);
        let response = client.request(case_request(&case, &uri)).await.unwrap();
        let (status, content_type, body) = read_response(response).await;
        assert_case(&case, status, content_type.as_deref(), &body);
    }

    // 20 MiB, announced (Content-Length) and chunked: 413, and the server stays healthy.
    let huge = vec![b'a'; 20 * 1024 * 1024];
    let delivery = Signer::new(CURRENT_KEY).delivery(&format!("{PUBLIC_BASE}/jobs"), &huge);
    for chunked in [false, true] {
        let mut builder = Request::post(format!("http://{addr}/jobs"));
        for (name, value) in &delivery.headers {
            builder = builder.header(name, value);
        }
        let body = if chunked {
            ChunkedBody::new(huge.len()).map_err(|e| match e {}).boxed()
        } else {
            full(huge.clone())
        };
        let response = client.request(builder.body(body).unwrap()).await.unwrap();
        let (status, _, body) = read_response(response).await;
        assert_eq!(status, 413, "chunked: {chunked}");
        assert_eq!(json(&body)["error"], "payload_too_large");

        let good = common::cases().into_iter().next().unwrap();
        let response = client
            .request(case_request(&good, &format!("http://{addr}/jobs")))
            .await
            .unwrap();
        let (status, _, body) = read_response(response).await;
        assert_eq!(
            (status, &body[..]),
            (200, &good.body[..]),
            "after chunked: {chunked}"
        );
    }
    let response = client
        .request(
            Request::get(format!("http://{addr}/health"))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(read_response(response).await.0, 200);
}

#[derive(serde::Deserialize, serde::Serialize)]
struct Job {
    task: String,
    n: u32,
}

#[tokio::test]
async fn json_claims_and_delivery_under_the_layer() {
    let app = Router::new()
        .route(
            "/jobs",
            post(
                |claims: Claims, delivery: Delivery, Json(job): Json<Job>| async move {
                    Json(serde_json::json!({
                        "task": job.task,
                        "n": job.n,
                        "url": claims.url(),
                        "message_id": delivery.message_id(),
                        "retried": delivery.retried(),
                    }))
                },
            ),
        )
        .route_layer(QStashLayer::new(common::receiver()));
    let body = br#"{"task":"mail","n":7}"#;
    let delivery = Signer::new(CURRENT_KEY).delivery_with_id(
        &format!("{PUBLIC_BASE}/jobs"),
        body,
        "msg_json",
        1,
    );
    let mut builder = Request::post("/jobs").header("content-type", "application/json");
    for (name, value) in &delivery.headers {
        builder = builder.header(name, value);
    }
    let (status, _, answer) = call(&app, builder.body(Body::from(&body[..])).unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        json(&answer),
        serde_json::json!({"task": "mail", "n": 7, "url": format!("{PUBLIC_BASE}/jobs"),
            "message_id": "msg_json", "retried": 1})
    );
}

#[tokio::test]
async fn claims_and_delivery_without_the_layer_are_500_misconfigured() {
    let app = Router::new()
        .route("/claims", post(|_: Claims| async { "ran" }))
        .route("/delivery", post(|_: Delivery| async { "ran" }));
    for path in ["/claims", "/delivery"] {
        let (status, _, body) = call(&app, signed(path, "{}")).await;
        assert_eq!(status, 500, "{path}");
        assert_eq!(json(&body)["error"], "misconfigured");
    }
}

#[tokio::test]
async fn nested_router_checks_the_original_uri() {
    let app = Router::new().nest(
        "/api",
        Router::new()
            .route("/jobs", post(echo))
            .route_layer(QStashLayer::new(common::receiver())),
    );
    let (status, _, body) = call(&app, signed("/api/jobs", "x")).await;
    assert_eq!((status, &body[..]), (200, &b"x"[..]));
    // A token for the stripped path is for another URL.
    let (status, _, body) = call(
        &app,
        signed_with(&Signer::new(CURRENT_KEY), "/jobs", "/api/jobs", "x"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(json(&body)["error"], "url_mismatch");
}

#[tokio::test]
async fn verified_under_the_layer_trusts_the_layer() {
    // The state's receiver cannot verify anything (no URL policy, other keys): a second
    // verification would answer 500 or 401.
    let state = AppState {
        receiver: Receiver::new(Verifier::new(SigningKeys::new("sig_x", "sig_y").unwrap())),
    };
    let app = Router::new()
        .route(
            "/jobs",
            post(|Verified(Json(job)): Verified<Json<Job>>| async move { job.task }),
        )
        .route_layer(QStashLayer::new(common::receiver()))
        .with_state(state.clone());
    let (status, _, body) = call(&app, signed("/jobs", r#"{"task":"mail","n":1}"#)).await;
    assert_eq!((status, &body[..]), (200, &b"mail"[..]));

    // Without the layer, the same extractor verifies with the state's receiver: the token is
    // not signed with its keys (its URL policy, unconfigured, is not even consulted).
    let app = Router::new()
        .route(
            "/jobs",
            post(|Verified(Json(job)): Verified<Json<Job>>| async move { job.task }),
        )
        .with_state(state);
    let (status, _, body) = call(&app, signed("/jobs", r#"{"task":"mail","n":1}"#)).await;
    assert_eq!(status, 401);
    assert_eq!(json(&body)["error"], "invalid_signature");
}

#[tokio::test]
async fn verified_standalone_honours_default_body_limit_and_inserts_extensions() {
    let app = Router::new()
        .route(
            "/jobs",
            post(|Verified(req): Verified<Request<Body>>| async move {
                let has = req.extensions().get::<Claims>().is_some()
                    && req.extensions().get::<Delivery>().is_some();
                let body = req.into_body().collect().await.unwrap().to_bytes();
                format!("{has} {}", String::from_utf8_lossy(&body))
            }),
        )
        .layer(DefaultBodyLimit::max(16))
        .with_state(state());
    let (status, _, body) = call(&app, signed("/jobs", "0123456789abcdef")).await;
    assert_eq!((status, &body[..]), (200, &b"true 0123456789abcdef"[..]));
    let mut request = signed("/jobs", "0123456789abcdefg");
    request.headers_mut().remove("content-length");
    let (status, _, body) = call(&app, request).await;
    assert_eq!(status, 413);
    assert_eq!(json(&body)["error"], "payload_too_large");
}

#[tokio::test]
async fn unparsable_verified_json_is_invalid_payload_400_or_489() {
    for non_retryable in [false, true] {
        let receiver = common::receiver().non_retryable_invalid_payload(non_retryable);
        let app = Router::new()
            .route(
                "/jobs",
                post(|Verified(Json(job)): Verified<Json<Job>>| async move { job.task }),
            )
            .with_state(AppState { receiver });
        let response = app.oneshot(signed("/jobs", r#"{"task":1}"#)).await.unwrap();
        let header = response.headers().get(NON_RETRYABLE_HEADER).cloned();
        let (status, content_type, body) = read_response(response).await;
        // The crate's own answer, as every adapter gives it (not axum's 422 text).
        assert_eq!(json(&body)["error"], "invalid_payload");
        assert_eq!(content_type.as_deref(), Some("application/json"));
        if non_retryable {
            assert_eq!(status, 489);
            assert_eq!(header.unwrap(), "true");
        } else {
            assert_eq!(status, 400);
            assert!(header.is_none());
        }
    }
}

fn callback_json(dlq: bool) -> String {
    let mut event = serde_json::json!({
        "status": 500,
        "header": {"Content-Type": ["text/plain"]},
        "body": "aW50ZXJuYWwgZXJyb3I=",
        "retried": 3,
        "maxRetries": 3,
        "sourceMessageId": "msg_source",
        "url": "https://receiver.test/jobs",
        "method": "POST",
        "sourceHeader": {"Content-Type": "application/json"},
        "sourceBody": "e30=",
        "callerIP": "1.2.3.4",
        "createdAt": "1700000000000",
    });
    if dlq {
        event["dlqId"] = "dlq_123".into();
    }
    event.to_string()
}

#[tokio::test]
async fn callbacks_standalone_and_under_the_layer() {
    let routes = || {
        Router::new()
            .route(
                "/callbacks",
                post(|Callback(event): Callback| async move {
                    format!(
                        "{} {} {} {}",
                        event.source_message_id,
                        event.status,
                        event.body_text().unwrap(),
                        event.is_final_attempt()
                    )
                }),
            )
            .route(
                "/failures",
                post(|FailureCallback(event): FailureCallback| async move {
                    format!("{} {:?}", event.source_message_id, event.dlq_id)
                }),
            )
    };
    let standalone = routes().with_state(state());
    let layered = routes()
        .route_layer(QStashLayer::new(common::receiver()))
        .with_state(state());
    for app in [standalone, layered] {
        let (status, _, body) = call(&app, signed("/callbacks", callback_json(false))).await;
        assert_eq!(
            (status, &body[..]),
            (200, &b"msg_source 500 internal error true"[..])
        );
        let (status, _, body) = call(&app, signed("/failures", callback_json(true))).await;
        assert_eq!(
            (status, &body[..]),
            (200, &br#"msg_source Some("dlq_123")"#[..])
        );

        // Tampered: refused.
        let mut request = signed("/callbacks", callback_json(false));
        *request.body_mut() = Body::from(callback_json(true));
        let (status, _, body) = call(&app, request).await;
        assert_eq!(status, 401);
        assert_eq!(json(&body)["error"], "body_mismatch");

        // Verified, but not an event: 400 invalid_payload, without quoting the body.
        let (status, _, body) = call(&app, signed("/callbacks", r#"{"secret":"s3cr3t"}"#)).await;
        assert_eq!(status, 400);
        assert_eq!(json(&body)["error"], "invalid_payload");
        assert!(!String::from_utf8_lossy(&body).contains("s3cr3t"));
    }

    // Non-retryable option: 489 + header.
    let app = routes().with_state(AppState {
        receiver: common::receiver().non_retryable_invalid_payload(true),
    });
    let response = app.oneshot(signed("/failures", "[]")).await.unwrap();
    assert_eq!(response.headers()[NON_RETRYABLE_HEADER], "true");
    let (status, _, body) = read_response(response).await;
    assert_eq!(status, 489);
    assert_eq!(json(&body)["error"], "invalid_payload");
}

#[tokio::test]
async fn custom_rejection_response_under_axum() {
    let app = Router::new().route("/jobs", post(echo)).route_layer(
        QStashLayer::new(common::receiver()).on_rejection(|rejection| {
            http::Response::builder()
                .status(rejection.status())
                .body(Bytes::from(format!("refused ({})", rejection.code())))
                .unwrap()
        }),
    );
    let (status, _, body) = call(
        &app,
        signed_with(&Signer::new("sig_other"), "/jobs", "/jobs", "x"),
    )
    .await;
    assert_eq!(
        (status, &body[..]),
        (401, &b"refused (invalid_signature)"[..])
    );
}

#[tokio::test]
async fn retry_steering_responses() {
    let app = Router::new()
        .route(
            "/dlq",
            post(|| async { Err::<(), _>(NonRetryable("unknown task".into())) }),
        )
        .route(
            "/later",
            post(|| async { Err::<(), _>(RetryAfter(Duration::from_millis(1500))) }),
        );
    let response = app
        .clone()
        .oneshot(Request::post("/dlq").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()[NON_RETRYABLE_HEADER], "true");
    let (status, _, body) = read_response(response).await;
    assert_eq!(status, 489);
    assert_eq!(
        json(&body),
        serde_json::json!({"error": "non_retryable", "message": "unknown task"})
    );

    let response = app
        .oneshot(Request::post("/later").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "2");
    let (status, _, body) = read_response(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE.as_u16());
    assert_eq!(json(&body)["retry_after"], 2);
    assert_eq!(RetryAfter(Duration::ZERO).as_secs(), 1);
    assert_eq!(RetryAfter::seconds(30).as_secs(), 30);
}

#[test]
fn verified_rejection_display_and_source() {
    use std::error::Error;
    let rejected: VerifiedRejection<Rejection> =
        VerifiedRejection::Rejected(Rejection::Misconfigured("x".into()));
    assert_eq!(rejected.to_string(), "receiver misconfigured: x");
    assert!(rejected.source().is_some());
    assert_eq!(
        rejected.rejection().map(Rejection::code),
        Some("misconfigured")
    );
}

#[tokio::test]
async fn router_layer_and_verified_string() {
    // `Router::layer` (every route, fallback included) instead of `route_layer`.
    let app = Router::new()
        .route(
            "/jobs",
            post(|Verified(text): Verified<String>| async move { text.to_uppercase() }),
        )
        .layer(QStashLayer::new(common::receiver()))
        .with_state(state());
    let (status, _, body) = call(&app, signed("/jobs", "hello")).await;
    assert_eq!((status, &body[..]), (200, &b"HELLO"[..]));
    let (status, _, body) = call(&app, signed("/nowhere", "hello")).await;
    assert_eq!(
        status,
        404,
        "verified, then routed: {}",
        String::from_utf8_lossy(&body)
    );
    let request = Request::post("/nowhere").body(Body::empty()).unwrap();
    let (status, _, body) = call(&app, request).await;
    assert_eq!(status, 401, "the layer guards the fallback too");
    assert_eq!(json(&body)["error"], "missing_signature");
    // Not UTF-8: the inner `String` extractor refuses a verified body (400, retryable).
    let (status, _, _) = call(&app, signed("/jobs", vec![0xff, 0xfe])).await;
    assert_eq!(status, 400);
}

/// Every extractor behind the layer, in routers whose state holds no receiver: `Router<()>`,
/// and a state of the user's own with an empty `ReceiverState` impl.
fn extractor_routes<S: qstash_receiver::axum::ReceiverState + Clone + Send + Sync + 'static>()
-> Router<S> {
    Router::new()
        .route(
            "/jobs",
            post(
                |claims: Claims, delivery: Delivery, Verified(Json(job)): Verified<Json<Job>>| async move {
                    format!("{} {} {} {}", job.task, job.n, claims.url(), delivery.retried())
                },
            ),
        )
        .route(
            "/callbacks",
            post(|Callback(event): Callback| async move {
                format!("callback {} {}", event.source_message_id, event.status)
            }),
        )
        .route(
            "/failures",
            post(|FailureCallback(event): FailureCallback| async move {
                format!("failure {:?}", event.dlq_id)
            }),
        )
}

async fn assert_extractors_work(app: Router) {
    let (status, _, body) = call(&app, signed("/jobs", r#"{"task":"mail","n":3}"#)).await;
    assert_eq!(
        (status, String::from_utf8_lossy(&body).into_owned()),
        (200, format!("mail 3 {PUBLIC_BASE}/jobs 0"))
    );
    let (status, _, body) = call(&app, signed("/callbacks", callback_json(false))).await;
    assert_eq!((status, &body[..]), (200, &b"callback msg_source 500"[..]));
    let (status, _, body) = call(&app, signed("/failures", callback_json(true))).await;
    assert_eq!(
        (status, &body[..]),
        (200, &br#"failure Some("dlq_123")"#[..])
    );
    // Still verified: a body changed after signing never reaches the handlers.
    let mut request = signed("/jobs", r#"{"task":"mail","n":3}"#);
    *request.body_mut() = Body::from(r#"{"task":"drop","n":3}"#);
    let (status, _, body) = call(&app, request).await;
    assert_eq!(
        (status, json(&body)["error"].as_str()),
        (401, Some("body_mismatch"))
    );
}

#[tokio::test]
async fn extractors_behind_the_layer_need_no_state() {
    let app: Router = extractor_routes().route_layer(QStashLayer::new(common::receiver()));
    assert_extractors_work(app).await;
}

#[derive(Clone)]
struct OwnState {
    _pool: &'static str,
}

impl qstash_receiver::axum::ReceiverState for OwnState {}

#[tokio::test]
async fn extractors_behind_the_layer_with_a_state_of_ones_own() {
    let app: Router = extractor_routes()
        .route_layer(QStashLayer::new(common::receiver()))
        .with_state(OwnState { _pool: "db" });
    assert_extractors_work(app).await;
}

#[tokio::test]
async fn extractors_with_neither_layer_nor_receiver_are_500_misconfigured() {
    let app: Router = extractor_routes();
    for path in ["/jobs", "/callbacks", "/failures"] {
        let (status, _, body) = call(&app, signed(path, callback_json(false))).await;
        let body = json(&body);
        assert_eq!(
            (status, body["error"].as_str()),
            (500, Some("misconfigured")),
            "{path}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("QStashLayer"),
            "{body}"
        );
    }
}
