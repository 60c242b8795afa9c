//! What the adapters tell operators: the `qstash.delivery` span of each delivery and its fields,
//! the `error` line of a verified body over the limit, the `info` line of a next-key match, and
//! never a key, a token or a body. Captured with one global subscriber (see
//! `common::Logs::capture`), in-process on the test's thread.
#![cfg(all(feature = "axum", feature = "actix-web", feature = "test-utils"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use actix_web::{App, HttpResponse, test, web};
use axum::Router;
use axum::body::Bytes;
use axum::routing::any;
use common::{CURRENT_KEY, LIMIT, Logs, NEXT_KEY, PUBLIC_BASE, level_of};
use http_body_util::BodyExt as _;
use qstash_receiver::test_utils::{SignedDelivery, Signer};
use qstash_receiver::tower::QStashLayer;
use tower::ServiceExt as _;

/// A body no log line, span field or error may quote.
const SECRET_BODY: &[u8] = br#"{"card":"hunter2-4111"}"#;

fn delivery(key: &str, body: &[u8], id: &str) -> SignedDelivery {
    Signer::new(key)
        .delivery_with_id(&format!("{PUBLIC_BASE}/jobs"), body, id, 2)
        .with_method("PUT")
}

/// The adapters under test, each mounted at `/jobs` with an echo handler.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Adapter {
    /// The tower layer (axum's `route_layer`).
    Layer,
    /// axum's `Verified<Bytes>` with the receiver from the router's state.
    AxumVerified,
    /// actix-web's middleware.
    Middleware,
    /// actix-web's `Verified<web::Bytes>` with the receiver from app data.
    ActixVerified,
}

const ADAPTERS: [Adapter; 4] = [
    Adapter::Layer,
    Adapter::AxumVerified,
    Adapter::Middleware,
    Adapter::ActixVerified,
];

/// Sends `delivery` with `body` to `adapter` (a receiver with `receiver`'s policy), on this
/// thread: the status.
async fn send(
    adapter: Adapter,
    receiver: qstash_receiver::Receiver,
    delivery: &SignedDelivery,
    body: &[u8],
) -> u16 {
    async fn echo(body: Bytes) -> Bytes {
        body
    }
    async fn echo_verified(
        qstash_receiver::axum::Verified(body): qstash_receiver::axum::Verified<Bytes>,
    ) -> Bytes {
        body
    }
    async fn actix_echo(body: web::Bytes) -> HttpResponse {
        HttpResponse::Ok().body(body)
    }
    async fn actix_echo_verified(
        qstash_receiver::actix::Verified(body): qstash_receiver::actix::Verified<web::Bytes>,
    ) -> HttpResponse {
        HttpResponse::Ok().body(body)
    }
    let mut req = delivery.to_http_request().unwrap();
    *req.body_mut() = http_body_util::Full::new(bytes::Bytes::copy_from_slice(body));
    req.headers_mut()
        .insert("content-length", body.len().to_string().parse().unwrap());
    match adapter {
        Adapter::Layer => {
            let app = Router::new()
                .route("/jobs", any(echo))
                .route_layer(QStashLayer::new(receiver));
            let res = app.oneshot(req).await.unwrap();
            let status = res.status().as_u16();
            let _ = res.into_body().collect().await.unwrap();
            status
        }
        Adapter::AxumVerified => {
            let app = Router::new()
                .route("/jobs", any(echo_verified))
                .with_state(receiver);
            let res = app.oneshot(req).await.unwrap();
            let status = res.status().as_u16();
            let _ = res.into_body().collect().await.unwrap();
            status
        }
        Adapter::Middleware | Adapter::ActixVerified => {
            let req = delivery
                .to_actix_request()
                .unwrap()
                .set_payload(body.to_vec());
            let res = if adapter == Adapter::Middleware {
                let app = test::init_service(
                    App::new().service(
                        web::resource("/jobs")
                            .wrap(qstash_receiver::actix::QStashMiddleware::new(receiver))
                            .route(web::route().to(actix_echo)),
                    ),
                )
                .await;
                test::call_service(&app, req.to_request()).await
            } else {
                let app = test::init_service(
                    App::new()
                        .app_data(web::Data::new(receiver))
                        .route("/jobs", web::route().to(actix_echo_verified)),
                )
                .await;
                test::call_service(&app, req.to_request()).await
            };
            let status = res.status().as_u16();
            let _ = test::read_body(res).await;
            status
        }
    }
}

/// The `SPAN qstash.delivery{…}` lines of `lines`.
fn spans(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| l.starts_with("SPAN qstash.delivery{"))
        .collect()
}

/// Asserts that nothing in `lines` quotes a key, the token (or its parts) or the body.
fn assert_no_secrets(lines: &[String], delivery: &SignedDelivery, what: &str) {
    let all = lines.join("\n");
    assert!(
        !all.contains(CURRENT_KEY) && !all.contains(NEXT_KEY),
        "{what}: key: {all}"
    );
    for part in delivery.signature.split('.') {
        assert!(!all.contains(part), "{what}: token part {part}: {all}");
    }
    assert!(!all.contains("hunter2"), "{what}: body: {all}");
}

#[actix_web::test]
async fn each_delivery_has_one_span_with_its_fields_and_no_secrets() {
    for adapter in ADAPTERS {
        let (logs, _guard) = Logs::capture_with_spans();
        let id = format!("msg_span_{adapter:?}");
        let ok = delivery(CURRENT_KEY, SECRET_BODY, &id);
        assert_eq!(
            send(adapter, common::receiver(), &ok, SECRET_BODY).await,
            200
        );
        let lines = logs.take();
        let found = spans(&lines);
        assert_eq!(found.len(), 1, "{adapter:?}: {lines:#?}");
        let span = found[0];
        for field in [
            "otel.name=process qstash",
            "otel.kind=consumer",
            "messaging.system=qstash",
            "messaging.operation.type=process",
            "http.request.method=PUT",
            &format!("messaging.message.id={id}"),
            "messaging.qstash.retried=2",
            "messaging.qstash.region=US-EAST-1",
            "messaging.qstash.signing_key=current",
        ] {
            assert!(span.contains(field), "{adapter:?}: {field} in {span}");
        }
        // The layer and the middleware see the handler's answer; the extractors do not.
        let answered = matches!(adapter, Adapter::Layer | Adapter::Middleware);
        assert_eq!(
            span.contains("http.response.status_code=200"),
            answered,
            "{adapter:?}: {span}"
        );
        assert!(!span.contains("error.type"), "{adapter:?}: {span}");
        assert_no_secrets(&lines, &ok, &format!("{adapter:?} accepted"));

        // A tampered body: the refusal's code and status, the key that matched.
        let tampered = delivery(NEXT_KEY, b"{}", &id);
        assert_eq!(
            send(adapter, common::receiver(), &tampered, SECRET_BODY).await,
            401
        );
        let lines = logs.take();
        let found = spans(&lines);
        assert_eq!(found.len(), 1, "{adapter:?}: {lines:#?}");
        for field in [
            "error.type=body_mismatch",
            "http.response.status_code=401",
            "otel.status_code=ERROR",
        ] {
            assert!(
                found[0].contains(field),
                "{adapter:?}: {field} in {}",
                found[0]
            );
        }
        assert_no_secrets(&lines, &tampered, &format!("{adapter:?} tampered"));

        // A forged request with a hostile message id: escaped and cut in the span too.
        let mut hostile = delivery("sig_notTheReceiversKey0123456789", SECRET_BODY, "x");
        let long_id = format!("msg_\n{}", "m".repeat(10_000));
        hostile = hostile.with_header("upstash-message-id", long_id.replace('\n', "\t"));
        assert_eq!(
            send(adapter, common::receiver(), &hostile, SECRET_BODY).await,
            401
        );
        let lines = logs.take();
        let found = spans(&lines);
        assert_eq!(found.len(), 1, "{adapter:?}: {lines:#?}");
        assert!(
            found[0].contains("messaging.message.id=msg_\\tmmm"),
            "{}",
            found[0]
        );
        assert!(
            found[0].len() < 1500,
            "{adapter:?}: {} bytes",
            found[0].len()
        );
        assert!(
            found[0].contains("error.type=invalid_signature"),
            "{}",
            found[0]
        );
        assert!(
            !found[0].contains("messaging.qstash.retried"),
            "{}",
            found[0]
        );
        assert_no_secrets(&lines, &hostile, &format!("{adapter:?} forged"));
    }
}

#[actix_web::test]
async fn a_verified_body_over_the_limit_is_an_error_with_the_limit_and_the_fix() {
    for adapter in ADAPTERS {
        {
            let (logs, _guard) = Logs::capture();
            let big = vec![b'a'; LIMIT + 1];
            let d = delivery(CURRENT_KEY, &big, "msg_big");
            let status = send(adapter, common::receiver(), &d, &big).await;
            assert_eq!(status, 413, "{adapter:?}");
            let lines = logs.take();
            let errors: Vec<_> = lines.iter().filter(|l| level_of(l) == "ERROR").collect();
            assert_eq!(errors.len(), 1, "{adapter:?}: {lines:#?}");
            let line = errors[0];
            for part in [
                "payload_too_large",
                &format!("limit={LIMIT}"),
                "Receiver::max_body_bytes",
                "dead-letter",
                "msg_big",
            ] {
                assert!(line.contains(part), "{adapter:?}: {part} in {line}");
            }
        }
    }
}

#[actix_web::test]
async fn a_next_key_match_is_logged_at_info_once_per_receiver_in_every_adapter() {
    for adapter in ADAPTERS {
        let (logs, _guard) = Logs::capture();
        // A fresh verifier: its key pair has not seen the next key yet.
        let receiver = common::receiver();
        for n in 0..3 {
            let d = delivery(NEXT_KEY, b"{}", &format!("msg_next_{n}"));
            assert_eq!(send(adapter, receiver.clone(), &d, b"{}").await, 200);
        }
        let lines = logs.take();
        let rotation: Vec<_> = lines
            .iter()
            .filter(|l| l.contains("signed with the next signing key"))
            .collect();
        assert_eq!(rotation.len(), 1, "{adapter:?}: {lines:#?}");
        assert_eq!(level_of(rotation[0]), "INFO");
        assert!(!rotation[0].contains(NEXT_KEY), "{}", rotation[0]);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_handler_answering_413_behind_the_layer_is_an_error() {
    async fn refuse() -> axum::http::StatusCode {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE
    }
    let (logs, _guard) = Logs::capture();
    let app = Router::new()
        .route("/jobs", any(refuse))
        .route_layer(QStashLayer::new(common::receiver()));
    let d = delivery(CURRENT_KEY, b"{}", "msg_h413");
    let res = app.oneshot(d.to_http_request().unwrap()).await.unwrap();
    assert_eq!(res.status(), 413);
    let lines = logs.take();
    let errors: Vec<_> = lines.iter().filter(|l| level_of(l) == "ERROR").collect();
    assert_eq!(errors.len(), 1, "{lines:#?}");
    assert!(
        errors[0].contains("refused by the handler with 413"),
        "{}",
        errors[0]
    );
}
