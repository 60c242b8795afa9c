//! The actix-web adapter through `actix_web::test::init_service`: the shared table of cases
//! through the middleware and through the standalone extractor, the payload downstream, the
//! extensions, the early refusal, the guard, 489 and custom responses.
#![cfg(all(feature = "actix-web", feature = "test-utils"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::SystemTime;

use actix_web::dev::{Payload, Service as _, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::{App, HttpMessage as _, HttpRequest, HttpResponse, test, web};
use bytes::Bytes;
use qstash_receiver::actix::{
    Callback, FailureCallback, QStashGuard, QStashMiddleware, RejectionHandler, Verified,
};
use qstash_receiver::test_utils::{SignedDelivery, Signer};
use qstash_receiver::{Claims, Delivery, MatchedKey, Rejection, RequestTarget};
use serde::Deserialize;

const URL: &str = "https://receiver.test/jobs";

/// The core's answer to a case: the reference both adapters must reproduce byte for byte.
fn core_answer(case: &common::Case) -> Result<Vec<u8>, Rejection> {
    let receiver = common::receiver();
    let headers = case.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
    let (token, _) =
        receiver.check_request(headers, &RequestTarget::new(case.path), SystemTime::now())?;
    receiver.check_content_length(Some(case.body.len() as u64))?;
    receiver.check_body(token, &case.body)?;
    Ok(case.body.clone())
}

fn request(case: &common::Case) -> test::TestRequest {
    let mut req = test::TestRequest::post()
        .uri(case.path)
        .set_payload(case.body.clone());
    for (name, value) in &case.headers {
        req = req.insert_header((name.as_str(), value.as_str()));
    }
    req
}

fn signed(body: &[u8]) -> test::TestRequest {
    let delivery = Signer::new(common::CURRENT_KEY).delivery(URL, body);
    delivered(&delivery, "/jobs", body)
}

/// A POST of `body` to `path` with `delivery`'s headers (its token may be for another body).
fn delivered(delivery: &SignedDelivery, path: &str, body: &[u8]) -> test::TestRequest {
    let mut req = test::TestRequest::post()
        .uri(path)
        .set_payload(body.to_vec());
    for (name, value) in &delivery.headers {
        req = req.insert_header((name.as_str(), value.as_str()));
    }
    req
}

async fn check_case<S>(app: &S, case: &common::Case, how: &str)
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = ServiceResponse,
            Error = actix_web::Error,
        >,
{
    let res = test::call_service(app, request(case).to_request()).await;
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = test::read_body(res).await;
    assert_eq!(status, case.status, "{how}: {}", case.name);
    match (case.code, core_answer(case)) {
        (None, Ok(echo)) => assert_eq!(body.as_ref(), echo.as_slice(), "{how}: {}", case.name),
        (Some(code), Err(rejection)) => {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"], code, "{how}: {}", case.name);
            assert_eq!(
                std::str::from_utf8(&body).unwrap(),
                rejection.json_body(),
                "{how}: {}",
                case.name
            );
            assert_eq!(content_type.as_deref(), Some("application/json"));
        }
        (code, core) => panic!("{how}: {}: table says {code:?}, core {core:?}", case.name),
    }
}

async fn echo(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().body(body)
}

async fn echo_verified(Verified(body): Verified<web::Bytes>) -> HttpResponse {
    HttpResponse::Ok().body(body)
}

#[actix_web::test]
async fn every_case_through_the_middleware() {
    let app = test::init_service(
        App::new().service(
            web::resource("/jobs")
                .wrap(QStashMiddleware::new(common::receiver()))
                .route(web::post().to(echo)),
        ),
    )
    .await;
    let cases = common::cases();
    assert!(cases.len() >= 14);
    for case in &cases {
        check_case(&app, case, "middleware").await;
    }
}

#[actix_web::test]
async fn every_case_through_the_standalone_extractor() {
    for data in ["web::Data", "Receiver"] {
        let app = App::new().route("/jobs", web::post().to(echo_verified));
        let app = if data == "web::Data" {
            test::init_service(app.app_data(web::Data::new(common::receiver()))).await
        } else {
            test::init_service(app.app_data(common::receiver())).await
        };
        for case in &common::cases() {
            check_case(&app, case, data).await;
        }
    }
}

#[actix_web::test]
async fn verified_under_the_middleware_does_not_verify_twice() {
    // The middleware's receiver only: the extractor must trust the verdict (no app data).
    let app = test::init_service(
        App::new().service(
            web::resource("/jobs")
                .wrap(QStashMiddleware::new(common::receiver()))
                .route(web::post().to(echo_verified)),
        ),
    )
    .await;
    for case in &common::cases() {
        check_case(&app, case, "middleware + Verified").await;
    }
}

#[derive(Debug, Deserialize, PartialEq)]
struct Job {
    task: String,
    n: u32,
}

#[actix_web::test]
async fn payload_is_intact_downstream_for_json_bytes_and_string() {
    let app = test::init_service(
        App::new()
            .wrap(QStashMiddleware::new(common::receiver().url_policy(
                qstash_receiver::UrlPolicy::public_base(common::PUBLIC_BASE).unwrap(),
            )))
            .route(
                "/json",
                web::post().to(|job: web::Json<Job>| async move {
                    HttpResponse::Ok().body(format!("{}:{}", job.task, job.n))
                }),
            )
            .route(
                "/bytes",
                web::post().to(|b: web::Bytes| async move { HttpResponse::Ok().body(b) }),
            )
            .route(
                "/string",
                web::post().to(|s: String| async move { HttpResponse::Ok().body(s) }),
            )
            .route(
                "/verified-json",
                web::post().to(|Verified(job): Verified<web::Json<Job>>| async move {
                    HttpResponse::Ok().body(format!("{}:{}", job.task, job.n))
                }),
            ),
    )
    .await;
    let body = br#"{"task":"mail","n":7}"#;
    for (path, expected) in [
        ("/json", &b"mail:7"[..]),
        ("/bytes", &body[..]),
        ("/string", &body[..]),
        ("/verified-json", &b"mail:7"[..]),
    ] {
        let url = format!("{}{path}", common::PUBLIC_BASE);
        let delivery = Signer::new(common::NEXT_KEY).delivery(&url, body);
        let req =
            delivered(&delivery, path, body).insert_header(("content-type", "application/json"));
        let res = test::call_service(&app, req.to_request()).await;
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(test::read_body(res).await, expected, "{path}");
    }
}

#[actix_web::test]
async fn claims_and_delivery_in_extensions_and_as_extractors() {
    async fn handler(req: HttpRequest, delivery: Delivery, claims: Claims) -> HttpResponse {
        let ext = req.extensions();
        assert_eq!(ext.get::<Delivery>(), Some(&delivery));
        assert_eq!(ext.get::<Claims>(), Some(&claims));
        HttpResponse::Ok().json(serde_json::json!({
            "message_id": delivery.message_id(),
            "retried": delivery.retried(),
            "url": claims.url(),
            "next_key": claims.matched_key() == MatchedKey::Next,
        }))
    }
    let app = test::init_service(
        App::new().service(
            web::resource("/jobs")
                .wrap(QStashMiddleware::new(common::receiver()))
                .route(web::post().to(handler)),
        ),
    )
    .await;
    let d = Signer::new(common::NEXT_KEY).delivery_with_id(URL, b"x", "msg_abc", 2);
    let req = delivered(&d, "/jobs", b"x");
    let json: serde_json::Value = test::call_and_read_body_json(&app, req.to_request()).await;
    assert_eq!(
        json,
        serde_json::json!({"message_id":"msg_abc","retried":2,"url":URL,"next_key":true})
    );
}

#[actix_web::test]
async fn standalone_extractor_leaves_claims_and_delivery_in_extensions() {
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(common::receiver()))
            .route(
                "/jobs",
                web::post().to(
                    |req: HttpRequest, Verified(b): Verified<String>| async move {
                        let ext = req.extensions();
                        let id = ext
                            .get::<Delivery>()
                            .unwrap()
                            .message_id()
                            .unwrap()
                            .to_owned();
                        let url = ext.get::<Claims>().unwrap().url().to_owned();
                        HttpResponse::Ok().body(format!("{b} {id} {url}"))
                    },
                ),
            ),
    )
    .await;
    let d = Signer::new(common::CURRENT_KEY).delivery_with_id(URL, b"hi", "msg_x", 0);
    let req = delivered(&d, "/jobs", b"hi");
    let body = test::call_and_read_body(&app, req.to_request()).await;
    assert_eq!(body, format!("hi msg_x {URL}"));
}

#[actix_web::test]
async fn delivery_and_claims_without_the_middleware_are_a_typed_500() {
    let app = test::init_service(
        App::new()
            .route(
                "/delivery",
                web::post().to(|_: Delivery| async { HttpResponse::Ok().finish() }),
            )
            .route(
                "/claims",
                web::post().to(|_: Claims| async { HttpResponse::Ok().finish() }),
            )
            .route("/verified", web::post().to(echo_verified)),
    )
    .await;
    for path in ["/delivery", "/claims", "/verified"] {
        let res = test::call_service(&app, signed(b"x").uri(path).to_request()).await;
        assert_eq!(res.status(), 500, "{path}");
        let json: serde_json::Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
        assert_eq!(json["error"], "misconfigured", "{path}");
        assert!(
            json["message"]
                .as_str()
                .unwrap()
                .contains("QStashMiddleware"),
            "{path}"
        );
    }
}

/// A payload stream that records whether anyone polled it, and yields one chunk.
struct WatchedPayload {
    polled: Arc<AtomicBool>,
    done: bool,
}

impl futures_util::Stream for WatchedPayload {
    type Item = Result<Bytes, PayloadError>;
    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.polled.store(true, Ordering::SeqCst);
        if std::mem::replace(&mut self.done, true) {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Ok(Bytes::from_static(b"x"))))
        }
    }
}

fn watched_request(req: test::TestRequest) -> (actix_http::Request, Arc<AtomicBool>) {
    let polled = Arc::new(AtomicBool::new(false));
    let mut req = req.to_request();
    let stream: Pin<Box<dyn futures_util::Stream<Item = Result<Bytes, PayloadError>>>> =
        Box::pin(WatchedPayload {
            polled: Arc::clone(&polled),
            done: false,
        });
    *req.payload() = Payload::from(stream);
    (req, polled)
}

#[actix_web::test]
async fn payload_is_not_read_after_an_early_rejection() {
    let mw = test::init_service(
        App::new().service(
            web::resource("/jobs")
                .wrap(QStashMiddleware::new(common::receiver()))
                .route(web::post().to(echo)),
        ),
    )
    .await;
    let ex = test::init_service(
        App::new()
            .app_data(common::receiver())
            .route("/jobs", web::post().to(echo_verified)),
    )
    .await;
    for (name, app) in [("middleware", &mw), ("extractor", &ex)] {
        // A token from an unknown key: refused on the headers alone.
        let bad = Signer::new("sig_unknownKey").delivery(URL, b"x");
        let mut req = test::TestRequest::post().uri("/jobs");
        for (n, v) in &bad.headers {
            req = req.insert_header((n.as_str(), v.as_str()));
        }
        let (req, polled) = watched_request(req);
        let res = app.call(req).await.unwrap();
        assert_eq!(res.status(), 401, "{name}");
        assert!(!polled.load(Ordering::SeqCst), "{name}: payload was read");

        // Content-Length over the limit: refused unread.
        let (req, polled) = watched_request(
            signed(b"x").insert_header(("content-length", (common::LIMIT + 1).to_string())),
        );
        let res = app.call(req).await.unwrap();
        assert_eq!(res.status(), 413, "{name}");
        assert!(!polled.load(Ordering::SeqCst), "{name}: payload was read");

        // A good token: the payload is read (the watcher works).
        let (req, polled) = watched_request(signed(b"x"));
        let res = app.call(req).await.unwrap();
        assert_eq!(res.status(), 200, "{name}");
        assert!(polled.load(Ordering::SeqCst), "{name}");
        assert_eq!(test::read_body(res).await, "x");
    }
}

#[actix_web::test]
async fn guard_routes_qstash_traffic_and_middleware_still_checks_the_body() {
    let receiver = common::receiver();
    let app = test::init_service(
        App::new()
            .service(
                web::resource("/jobs")
                    .guard(QStashGuard::new(receiver.clone()))
                    .wrap(QStashMiddleware::new(receiver))
                    .route(web::post().to(|b: web::Bytes| async move {
                        HttpResponse::Ok().body([&b"qstash:"[..], &b].concat())
                    })),
            )
            .route(
                "/jobs",
                web::post().to(|| async { HttpResponse::Ok().body("other") }),
            ),
    )
    .await;
    // Signed: the QStash handler.
    assert_eq!(
        test::call_and_read_body(&app, signed(b"hi").to_request()).await,
        "qstash:hi"
    );
    // Unsigned, unknown key, other route's token, expired: the other handler.
    let unsigned = test::TestRequest::post().uri("/jobs").set_payload("hi");
    assert_eq!(
        test::call_and_read_body(&app, unsigned.to_request()).await,
        "other"
    );
    for signer_url in [
        (Signer::new("sig_unknownKey"), URL),
        (
            Signer::new(common::CURRENT_KEY),
            "https://receiver.test/admin",
        ),
        (
            Signer::new(common::CURRENT_KEY)
                .issued_at(SystemTime::now() - std::time::Duration::from_secs(3600)),
            URL,
        ),
    ] {
        let (signer, url) = signer_url;
        let d = signer.delivery(url, b"hi");
        let mut req = test::TestRequest::post().uri("/jobs").set_payload("hi");
        for (n, v) in &d.headers {
            req = req.insert_header((n.as_str(), v.as_str()));
        }
        assert_eq!(
            test::call_and_read_body(&app, req.to_request()).await,
            "other"
        );
    }
    // The guard matches a tampered body (it cannot see it); the middleware refuses it.
    let d = Signer::new(common::CURRENT_KEY).delivery(URL, b"hi");
    let mut req = test::TestRequest::post()
        .uri("/jobs")
        .set_payload("tampered");
    for (n, v) in &d.headers {
        req = req.insert_header((n.as_str(), v.as_str()));
    }
    let res = test::call_service(&app, req.to_request()).await;
    assert_eq!(res.status(), 401);
    let json: serde_json::Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
    assert_eq!(json["error"], "body_mismatch");
}

#[actix_web::test]
async fn unparsable_verified_payload_is_400_or_489() {
    for non_retryable in [false, true] {
        let receiver = common::receiver().non_retryable_invalid_payload(non_retryable);
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(receiver.clone()))
                .route(
                    "/jobs",
                    web::post().to(|Verified(job): Verified<web::Json<Job>>| async move {
                        HttpResponse::Ok().body(job.task.clone())
                    }),
                )
                .service(
                    web::resource("/callbacks")
                        .wrap(QStashMiddleware::new(receiver))
                        .route(web::post().to(|Callback(e): Callback| async move {
                            HttpResponse::Ok().body(e.source_message_id)
                        })),
                ),
        )
        .await;
        let (status, header) = if non_retryable {
            (489, Some("true"))
        } else {
            (400, None)
        };
        let body = br#"{"task":5}"#;
        let req = signed(body).insert_header(("content-type", "application/json"));
        let res = test::call_service(&app, req.to_request()).await;
        assert_eq!(res.status().as_u16(), status);
        assert_eq!(
            res.headers()
                .get("upstash-nonretryable-error")
                .map(|v| v.to_str().unwrap()),
            header
        );
        let json: serde_json::Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
        assert_eq!(json["error"], "invalid_payload");

        // A callback body that is not a callback event, through the middleware.
        let url = format!("{}/callbacks", common::PUBLIC_BASE);
        let d = Signer::new(common::CURRENT_KEY).delivery(&url, body);
        let mut req = test::TestRequest::post()
            .uri("/callbacks")
            .set_payload(&body[..]);
        for (n, v) in &d.headers {
            req = req.insert_header((n.as_str(), v.as_str()));
        }
        let res = test::call_service(&app, req.to_request()).await;
        assert_eq!(res.status().as_u16(), status);
        let json: serde_json::Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
        assert_eq!(json["error"], "invalid_payload");
    }
}

#[actix_web::test]
async fn callbacks_and_failure_callbacks_parse_standalone() {
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(common::receiver()))
            .route(
                "/callbacks",
                web::post().to(|Callback(e): Callback| async move {
                    HttpResponse::Ok().body(format!(
                        "{} {} {}",
                        e.source_message_id,
                        e.status,
                        e.body_text().unwrap()
                    ))
                }),
            )
            .route(
                "/failures",
                web::post().to(|e: FailureCallback| async move {
                    HttpResponse::Ok().body(format!(
                        "{} {}",
                        e.source_message_id,
                        e.dlq_id.clone().unwrap()
                    ))
                }),
            ),
    )
    .await;
    let event = br#"{"status":500,"body":"Ym9vbQ==","sourceMessageId":"msg_1","retried":3,"maxRetries":3,"dlqId":"dlq_7"}"#;
    for (path, expected) in [
        ("/callbacks", "msg_1 500 boom"),
        ("/failures", "msg_1 dlq_7"),
    ] {
        let url = format!("{}{path}", common::PUBLIC_BASE);
        let d = Signer::new(common::CURRENT_KEY).delivery(&url, event);
        let mut req = test::TestRequest::post().uri(path).set_payload(&event[..]);
        for (n, v) in &d.headers {
            req = req.insert_header((n.as_str(), v.as_str()));
        }
        assert_eq!(
            test::call_and_read_body(&app, req.to_request()).await,
            expected
        );
    }
}

#[actix_web::test]
async fn custom_rejection_response_in_middleware_and_extractors() {
    fn teapot(r: &Rejection) -> HttpResponse {
        HttpResponse::ImATeapot()
            .insert_header(("x-code", r.code()))
            .body(format!("nope: {}", r.code()))
    }
    let app = test::init_service(
        App::new()
            .service(
                web::resource("/jobs")
                    .wrap(QStashMiddleware::new(common::receiver()).rejection_handler(teapot))
                    .route(
                        web::post().to(|Verified(j): Verified<web::Json<Job>>| async move {
                            HttpResponse::Ok().body(j.task.clone())
                        }),
                    ),
            )
            .service(
                web::scope("/alone")
                    .app_data(common::receiver())
                    .app_data(RejectionHandler::new(teapot))
                    .route("/jobs", web::post().to(echo_verified)),
            ),
    )
    .await;
    // Middleware refusal.
    let req = test::TestRequest::post().uri("/jobs").set_payload("x");
    let res = test::call_service(&app, req.to_request()).await;
    assert_eq!(res.status(), 418);
    assert_eq!(res.headers().get("x-code").unwrap(), "missing_signature");
    assert_eq!(test::read_body(res).await, "nope: missing_signature");
    // Extractor refusal under the middleware uses the middleware's handler.
    let req = signed(b"[1]").insert_header(("content-type", "application/json"));
    let res = test::call_service(&app, req.to_request()).await;
    assert_eq!(res.status(), 418);
    assert_eq!(test::read_body(res).await, "nope: invalid_payload");
    // Standalone extractor with the handler from app data.
    let req = test::TestRequest::post()
        .uri("/alone/jobs")
        .set_payload("x");
    let res = test::call_service(&app, req.to_request()).await;
    assert_eq!(res.status(), 418);
    assert_eq!(test::read_body(res).await, "nope: missing_signature");
}

#[actix_web::test]
async fn standalone_extractor_honours_payload_config() {
    let app = test::init_service(
        App::new()
            .app_data(common::receiver())
            .app_data(web::PayloadConfig::new(16))
            .route("/jobs", web::post().to(echo_verified)),
    )
    .await;
    // Under the receiver's limit (64 KiB) but over PayloadConfig's (16 bytes).
    let res = test::call_service(&app, signed(&[b'a'; 17]).to_request()).await;
    assert_eq!(res.status(), 413);
    let json: serde_json::Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
    assert_eq!(json["error"], "payload_too_large");
    let res = test::call_service(&app, signed(&[b'a'; 16]).to_request()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(test::read_body(res).await, [b'a'; 16].as_slice());
}

/// A callback event whose `sourceBody` is `n` base64 characters: the callback about a message
/// of about `n * 3 / 4` bytes.
fn callback_body(n: usize) -> Vec<u8> {
    format!(
        r#"{{"status":200,"sourceMessageId":"msg_1","sourceBody":"{}"}}"#,
        "A".repeat(n)
    )
    .into_bytes()
}

async fn on_callback(Callback(event): Callback) -> HttpResponse {
    HttpResponse::Ok().body(format!(
        "{} {}",
        event.source_message_id,
        event.source_body.len()
    ))
}

#[actix_web::test]
async fn callbacks_read_under_the_receivers_limit_not_payload_configs() {
    // A 300 KiB callback (about a 225 KiB message): over `web::PayloadConfig`'s default
    // (256 KiB), under the receiver's 1 MiB. Refused, it would be refused on every attempt.
    let receiver = || common::receiver().max_body_bytes(1024 * 1024);
    let body = callback_body(300 * 1024);
    let with_middleware = test::init_service(
        App::new().service(
            web::resource("/jobs")
                .wrap(QStashMiddleware::new(receiver()))
                .route(web::post().to(on_callback)),
        ),
    )
    .await;
    let standalone = test::init_service(
        App::new()
            .app_data(web::Data::new(receiver()))
            .route("/jobs", web::post().to(on_callback)),
    )
    .await;
    for (app, how) in [
        (&with_middleware, "middleware"),
        (&standalone, "standalone"),
    ] {
        let res = test::call_service(app, signed(&body).to_request()).await;
        assert_eq!(res.status(), 200, "{how}");
        assert_eq!(
            test::read_body(res).await,
            format!("msg_1 {}", 300 * 1024 / 4 * 3),
            "{how}"
        );
    }
    // Standalone, the callback limit (3 × the body limit) applies: a 2 MiB callback (about a
    // message of 1.5 MiB, over the body limit) is accepted; over 3 MiB is a 413.
    let res = test::call_service(
        &standalone,
        signed(&callback_body(2 * 1024 * 1024)).to_request(),
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = test::call_service(
        &standalone,
        signed(&callback_body(3 * 1024 * 1024 + 1)).to_request(),
    )
    .await;
    assert_eq!(res.status(), 413);
    // Under the middleware, the middleware's receiver's limit applies: one made
    // `for_callbacks` takes callbacks up to the callback limit.
    let callbacks_middleware = test::init_service(
        App::new().service(
            web::resource("/jobs")
                .wrap(QStashMiddleware::new(receiver().for_callbacks()))
                .route(web::post().to(on_callback)),
        ),
    )
    .await;
    for (app, status) in [(&with_middleware, 413), (&callbacks_middleware, 200)] {
        let res =
            test::call_service(app, signed(&callback_body(2 * 1024 * 1024)).to_request()).await;
        assert_eq!(res.status(), status);
    }
}

/// gzip of `{"task":"mail"}` (mtime 0).
const GZIPPED: [u8; 35] = [
    31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 171, 86, 42, 73, 44, 206, 86, 178, 82, 202, 77, 204, 204, 81,
    170, 5, 0, 240, 112, 249, 218, 15, 0, 0, 0,
];

#[derive(Deserialize)]
struct Task {
    task: String,
}

async fn task(Verified(job): Verified<web::Json<Task>>) -> HttpResponse {
    HttpResponse::Ok().body(job.into_inner().task)
}

#[actix_web::test]
async fn a_compressed_body_is_verified_as_sent_then_decoded_by_the_route() {
    // QStash signs the bytes it sends; a publisher's forwarded `Content-Encoding: gzip` body is
    // signed compressed. actix-web decompresses for `web::Json` / `web::Bytes`: the hash must
    // be over the raw bytes, in the standalone extractor as in the middleware.
    let standalone = test::init_service(
        App::new()
            .app_data(web::Data::new(common::receiver()))
            .route("/jobs", web::post().to(task)),
    )
    .await;
    let with_middleware = test::init_service(
        App::new().service(
            web::resource("/jobs")
                .wrap(QStashMiddleware::new(common::receiver()))
                .route(web::post().to(task)),
        ),
    )
    .await;
    for (app, how) in [
        (&standalone, "standalone"),
        (&with_middleware, "middleware"),
    ] {
        let req = signed(&GZIPPED)
            .insert_header(("content-encoding", "gzip"))
            .insert_header(("content-type", "application/json"))
            .to_request();
        let res = test::call_service(app, req).await;
        assert_eq!(res.status(), 200, "{how}");
        assert_eq!(test::read_body(res).await, "mail", "{how}");
    }
    // The decompressed bytes, signed as such, are not what was sent: refused.
    let decoded = Signer::new(common::CURRENT_KEY).delivery(URL, br#"{"task":"mail"}"#);
    let forged = delivered(&decoded, "/jobs", &GZIPPED)
        .insert_header(("content-encoding", "gzip"))
        .insert_header(("content-type", "application/json"));
    let res = test::call_service(&standalone, forged.to_request()).await;
    assert_eq!(res.status(), 401);
    let json: serde_json::Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
    assert_eq!(json["error"], "body_mismatch");
}

#[actix_web::test]
async fn unparsable_payload_messages_do_not_quote_the_body() {
    #[derive(Deserialize)]
    struct Count {
        #[allow(dead_code)]
        count: u32,
    }
    async fn count(Verified(_): Verified<web::Json<Count>>) -> HttpResponse {
        HttpResponse::Ok().finish()
    }
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(common::receiver()))
            .route("/jobs", web::post().to(count))
            .route("/callbacks", web::post().to(on_callback)),
    )
    .await;
    let secret = "s3cr3t-customer-data";
    let callback = format!(r#"{{"status":"{secret}","sourceMessageId":"msg_1"}}"#);
    let delivery = Signer::new(common::CURRENT_KEY).delivery(
        &format!("{}/callbacks", common::PUBLIC_BASE),
        callback.as_bytes(),
    );
    let req = delivered(&delivery, "/callbacks", callback.as_bytes());
    let job = format!(r#"{{"count":"{secret}"}}"#);
    let requests = [
        (
            req.to_request(),
            "not a qstash callback event: data error at line 1 column",
        ),
        (
            signed(job.as_bytes())
                .insert_header(("content-type", "application/json"))
                .to_request(),
            "not the route's JSON type: data error at line 1 column",
        ),
    ];
    for (req, expected) in requests {
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), 400);
        let text = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(!text.contains(secret), "{text}");
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["error"], "invalid_payload");
        assert!(
            json["message"].as_str().unwrap().contains(expected),
            "{text}"
        );
    }
}

#[actix_web::test]
async fn app_data_rejection_handler_answers_under_a_middleware_without_one() {
    let app = test::init_service(
        App::new()
            .app_data(RejectionHandler::new(|r| {
                HttpResponse::build(actix_web::http::StatusCode::from_u16(r.status()).unwrap())
                    .body(format!("custom: {}", r.code()))
            }))
            .service(
                web::resource("/jobs")
                    .wrap(QStashMiddleware::new(common::receiver()))
                    .route(web::post().to(task)),
            ),
    )
    .await;
    let req = signed(br#"{"nope":1}"#)
        .insert_header(("content-type", "application/json"))
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), 400);
    assert_eq!(test::read_body(res).await, "custom: invalid_payload");
}

#[actix_web::test]
async fn forwarded_headers_policy_uses_its_default_scheme_behind_a_tls_proxy() {
    // TLS ends at a proxy that sends no `X-Forwarded-Proto`: actix-web serves plain HTTP, which
    // says nothing about the public scheme; the policy's default (`https`) decides, as in the
    // tower layer.
    use qstash_receiver::UrlPolicy;
    let receiver = common::receiver().url_policy(UrlPolicy::trust_forwarded_headers("https"));
    let app = test::init_service(
        App::new().service(
            web::resource("/jobs")
                .wrap(QStashMiddleware::new(receiver))
                .route(web::post().to(echo)),
        ),
    )
    .await;
    let delivery = Signer::new(common::CURRENT_KEY).delivery("https://app.example/jobs", b"{}");
    let request = |proto: Option<&str>| {
        let mut req = delivered(&delivery, "/jobs", b"{}").insert_header(("host", "app.example"));
        if let Some(proto) = proto {
            req = req.insert_header(("x-forwarded-proto", proto));
        }
        req.to_request()
    };
    let res = test::call_service(&app, request(None)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(test::read_body(res).await, "{}");
    // The proxy's word wins when it gives one.
    let res = test::call_service(&app, request(Some("http"))).await;
    assert_eq!(res.status(), 401);
    let json: serde_json::Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
    assert_eq!(json["error"], "url_mismatch");
}

#[actix_web::test]
async fn a_json_limit_under_the_receivers_is_reported_as_such() {
    // `web::JsonConfig` keeps its own limit after verification: its 413 says its limit, not the
    // receiver's (64 KiB here).
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(common::receiver()))
            .app_data(web::JsonConfig::default().limit(8))
            .route("/jobs", web::post().to(task)),
    )
    .await;
    let req = signed(br#"{"task":"mail"}"#)
        .insert_header(("content-type", "application/json"))
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), 413);
    let json: serde_json::Value = serde_json::from_slice(&test::read_body(res).await).unwrap();
    assert_eq!(json["error"], "payload_too_large");
    assert_eq!(
        json["message"],
        "request body is larger than the limit of 8 bytes"
    );
}

/// A POST of `body` to `/jobs` with `headers`, appended in order.
fn with_headers(headers: &[(String, String)], body: &[u8]) -> test::TestRequest {
    let mut req = test::TestRequest::post()
        .uri("/jobs")
        .set_payload(body.to_vec());
    for (name, value) in headers {
        req = req.append_header((name.as_str(), value.as_str()));
    }
    req
}

/// The status and JSON `error` of a response.
async fn status_and_code(res: ServiceResponse) -> (u16, String) {
    let status = res.status().as_u16();
    let body = test::read_body(res).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    (status, json["error"].as_str().unwrap_or("").to_owned())
}

#[actix_web::test]
async fn a_huge_message_id_on_an_unauthenticated_request_logs_one_short_debug_line() {
    let (logs, _guard) = common::Logs::capture();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(common::receiver()))
            .service(
                web::scope("/mw")
                    .wrap(QStashMiddleware::new(common::receiver()))
                    .route("/jobs", web::post().to(echo)),
            )
            .route("/jobs", web::post().to(echo_verified)),
    )
    .await;
    let mut id = b"msg_\t\xff".to_vec();
    id.resize(200_000, b'm');
    let id = actix_web::http::header::HeaderValue::from_bytes(&id).unwrap();
    for path in ["/mw/jobs", "/jobs"] {
        let req = test::TestRequest::post()
            .uri(path)
            .insert_header(("upstash-message-id", id.clone()))
            .set_payload("{}")
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(
            status_and_code(res).await,
            (401, "missing_signature".to_owned()),
            "{path}"
        );
        let lines = logs.take();
        common::assert_quiet_and_short(&lines);
        assert!(
            lines.iter().any(|l| l.contains("msg_\\t\\xffmmm")),
            "{path}: {lines:?}"
        );
    }
}

#[actix_web::test]
async fn a_misconfigured_receiver_logs_an_error_only_for_authenticated_requests() {
    for (what, receiver) in common::misconfigured_receivers() {
        let (logs, _guard) = common::Logs::capture();
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(receiver.clone()))
                .service(
                    web::scope("/mw")
                        .wrap(QStashMiddleware::new(receiver.clone()))
                        .route("/jobs", web::post().to(echo)),
                )
                .service(
                    web::resource("/guarded")
                        .guard(QStashGuard::new(receiver))
                        .route(web::post().to(|| async { HttpResponse::Ok().body("qstash") })),
                )
                .route("/jobs", web::post().to(echo_verified)),
        )
        .await;
        let forged = Signer::new("sig_notTheReceiversKey0123456789").delivery(URL, b"{}");
        for path in ["/mw/jobs", "/jobs"] {
            let res = test::call_service(&app, with_headers(&[], b"{}").uri(path).to_request());
            assert_eq!(status_and_code(res.await).await.0, 401, "{what} {path}");
            let req = delivered(&forged, path, b"{}").to_request();
            let res = test::call_service(&app, req).await;
            assert_eq!(status_and_code(res).await.0, 401, "{what} {path}");
        }
        let req = delivered(&forged, "/guarded", b"{}").to_request();
        assert_eq!(test::call_service(&app, req).await.status(), 404);
        common::assert_quiet_and_short(&logs.take());

        // Signed with the receiver's key: each one reports the misconfiguration.
        for path in ["/mw/jobs", "/jobs", "/guarded"] {
            let res = test::call_service(&app, signed(b"{}").uri(path).to_request()).await;
            if path == "/guarded" {
                assert_eq!(
                    res.status(),
                    404,
                    "{what}: a misconfigured guard matches nothing"
                );
            } else {
                assert_eq!(
                    status_and_code(res).await,
                    (500, "misconfigured".to_owned()),
                    "{what} {path}"
                );
            }
            let lines = logs.take();
            assert!(
                lines
                    .iter()
                    .any(|l| common::level_of(l) == "ERROR" && l.contains("misconfigured")),
                "{what} {path}: {lines:?}"
            );
        }
    }
}

#[actix_web::test]
async fn the_first_region_header_selects_the_keys_in_the_middleware_and_the_guard() {
    let receiver = common::regional_receiver();
    let app = test::init_service(
        App::new()
            .service(
                web::scope("/mw")
                    .wrap(QStashMiddleware::new(receiver.clone()))
                    .route("/jobs", web::post().to(echo)),
            )
            .service(
                web::resource("/jobs")
                    .guard(QStashGuard::new(receiver))
                    .route(web::post().to(|| async { HttpResponse::Ok().body("qstash") })),
            )
            .route(
                "/jobs",
                web::post().to(|| async { HttpResponse::Ok().body("other") }),
            ),
    )
    .await;
    let cases: [(&[&str], (u16, &str), &str); 3] = [
        (&["EU-CENTRAL-1"], (200, ""), "qstash"),
        // The first names the EU keys: the token verifies (the guard matches), then the
        // repeated header is refused.
        (
            &["EU-CENTRAL-1", "US-EAST-1"],
            (400, "invalid_delivery_header"),
            "qstash",
        ),
        // The first names the default keys: they do not match the EU token.
        (
            &["US-EAST-1", "EU-CENTRAL-1"],
            (401, "invalid_signature"),
            "other",
        ),
    ];
    for (regions, (status, code), routed) in cases {
        // The middleware's scope is mounted at /mw: the token is for its URL.
        let headers = common::eu_delivery("/mw/jobs", b"{}", regions);
        let req = with_headers(&headers, b"{}").uri("/mw/jobs").to_request();
        let (got_status, got_code) = status_and_code(test::call_service(&app, req).await).await;
        assert_eq!(
            (got_status, got_code.as_str()),
            (status, code),
            "{regions:?}"
        );

        let headers = common::eu_delivery("/jobs", b"{}", regions);
        let req = with_headers(&headers, b"{}").to_request();
        let body = test::call_and_read_body(&app, req).await;
        assert_eq!(&body[..], routed.as_bytes(), "{regions:?}");
    }
}
