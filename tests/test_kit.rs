//! The testing kit (`test_utils`) used as users use it: real axum and actix-web apps, requests
//! made from signed deliveries in one call, signed callbacks, and retries that deduplication
//! must recognise.
#![cfg(all(feature = "test-utils", feature = "axum", feature = "actix-web"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use qstash_receiver::dedup::{Dedup, MemoryStore};
use qstash_receiver::test_utils::{CallbackBuilder, Signer};
use qstash_receiver::{Receiver, SigningKeys, UrlPolicy, Verifier};
use serde::Deserialize;

const CURRENT: &str = "sig_kitCurrent0123456789abcdef";
const NEXT: &str = "sig_kitNext0123456789abcdefghi";
const BASE: &str = "https://app.example.com";

fn receiver() -> Receiver {
    Receiver::new(Verifier::new(SigningKeys::new(CURRENT, NEXT).unwrap()))
        .url_policy(UrlPolicy::public_base(BASE).unwrap())
}

#[derive(Debug, Deserialize)]
struct Job {
    task: String,
}

mod axum_app {
    use super::*;

    use axum::body::{Body, to_bytes};
    use axum::extract::State;
    use axum::http::{Response, StatusCode};
    use axum::routing::{post, put};
    use axum::{Json, Router};
    use qstash_receiver::Delivery;
    use qstash_receiver::axum::{Callback, FailureCallback, Verified};
    use qstash_receiver::tower::QStashLayer;
    use tower::ServiceExt as _;

    async fn text(res: Response<Body>) -> String {
        String::from_utf8(to_bytes(res.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap()
    }

    async fn job(delivery: Delivery, Json(job): Json<Job>) -> String {
        format!("{} (attempt {})", job.task, delivery.retried())
    }

    fn app(receiver: Receiver) -> Router {
        Router::new()
            .route("/jobs", post(job))
            .route("/jobs/{id}", put(job))
            .route_layer(QStashLayer::new(receiver))
    }

    #[tokio::test]
    async fn handler_gets_the_delivery() {
        let signer = Signer::new(CURRENT);
        let delivery = signer
            .delivery(&format!("{BASE}/jobs"), br#"{"task":"mail"}"#)
            .with_header("content-type", "application/json");
        let res = app(receiver())
            .oneshot(delivery.to_http_request().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(text(res).await, "mail (attempt 0)");

        // Another method, a retry, another key: still one call each.
        let put = signer
            .delivery(&format!("{BASE}/jobs/7"), br#"{"task":"put"}"#)
            .with_method("PUT")
            .with_header("content-type", "application/json")
            .retry();
        let res = app(receiver())
            .oneshot(put.to_http_request().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(text(res).await, "put (attempt 1)");

        // A delivery signed with an unknown key is refused before the handler.
        let forged = Signer::new("sig_other").delivery(&format!("{BASE}/jobs"), b"{}");
        let res = app(receiver())
            .oneshot(forged.to_http_request().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(text(res).await.contains(r#""error":"invalid_signature""#));
    }

    /// The standalone extractor (no layer) with the receiver as router state.
    #[tokio::test]
    async fn standalone_extractor_gets_the_body() {
        let receiver = receiver().expected_url(format!("{BASE}/jobs"));
        let app = Router::new()
            .route(
                "/jobs",
                post(|Verified(body): Verified<String>| async move { body }),
            )
            .with_state(receiver);
        let delivery = Signer::new(CURRENT).delivery(&format!("{BASE}/jobs"), b"hi");
        let res = app
            .oneshot(delivery.to_http_request().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(text(res).await, "hi");
    }

    async fn callback(Callback(event): Callback) -> String {
        format!(
            "{} {} {} {}",
            event.source_message_id,
            event.status,
            event.body_text().unwrap(),
            event.source_body_text().unwrap()
        )
    }

    async fn failure(FailureCallback(event): FailureCallback) -> String {
        format!(
            "{} {}/{} {}",
            event.source_message_id,
            event.retried,
            event.max_retries,
            event.dlq_id.as_deref().unwrap_or("no dlq")
        )
    }

    #[tokio::test]
    async fn callbacks_reach_the_typed_extractors() {
        let signer = Signer::new(CURRENT);
        let job = signer.delivery(&format!("{BASE}/jobs"), br#"{"task":"mail"}"#);
        let app = Router::new()
            .route("/callbacks", post(callback))
            .route("/failures", post(failure))
            .with_state(receiver());

        let cb = CallbackBuilder::callback(&job)
            .status(503)
            .response_body("busy")
            .sign(&signer, &format!("{BASE}/callbacks"));
        let res = app
            .clone()
            .oneshot(cb.to_http_request().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            text(res).await,
            format!(r#"{} 503 busy {{"task":"mail"}}"#, job.message_id)
        );

        let failed = CallbackBuilder::failure_callback(&job)
            .max_retries(5)
            .dlq_id(Some("dlq_1".to_owned()))
            .sign(&signer, &format!("{BASE}/failures"));
        let res = app
            .clone()
            .oneshot(failed.to_http_request().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(text(res).await, format!("{} 5/5 dlq_1", job.message_id));

        // A callback signed for the failure URL is not accepted at the callback URL.
        let misrouted = CallbackBuilder::callback(&job).sign(&signer, &format!("{BASE}/failures"));
        let mut req = misrouted.to_http_request().unwrap();
        *req.uri_mut() = "/callbacks".parse().unwrap();
        let res = app.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(text(res).await.contains(r#""error":"url_mismatch""#));
    }

    async fn counted(State(runs): State<Arc<AtomicU32>>, body: String) -> String {
        let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
        format!("run {n}: {body}")
    }

    #[tokio::test]
    async fn a_retry_is_a_duplicate_with_dedup_on() {
        let runs = Arc::new(AtomicU32::new(0));
        let receiver = receiver().dedup(Dedup::new(Arc::new(MemoryStore::new())));
        let app = Router::new()
            .route("/jobs", post(counted))
            .route_layer(QStashLayer::new(receiver))
            .with_state(Arc::clone(&runs));
        let first = Signer::new(CURRENT).delivery(&format!("{BASE}/jobs"), b"once");

        let res = app
            .clone()
            .oneshot(first.to_http_request().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(text(res).await, "run 1: once");

        let retry = first.retry();
        let res = app
            .clone()
            .oneshot(retry.to_http_request().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["qstash-duplicate"], "true");
        let body: serde_json::Value = serde_json::from_str(&text(res).await).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"duplicate": true, "messageId": first.message_id})
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");

        // Another message with the same body is not a duplicate.
        let other = Signer::new(CURRENT).delivery(&format!("{BASE}/jobs"), b"once");
        let res = app.oneshot(other.to_http_request().unwrap()).await.unwrap();
        assert_eq!(text(res).await, "run 2: once");
    }
}

mod actix_app {
    use super::*;

    use actix_web::{App, HttpResponse, test, web};
    use qstash_receiver::Delivery;
    use qstash_receiver::actix::{Callback, FailureCallback, QStashMiddleware, Verified};

    async fn job(delivery: Delivery, job: web::Json<Job>) -> HttpResponse {
        HttpResponse::Ok().body(format!("{} (attempt {})", job.task, delivery.retried()))
    }

    #[actix_web::test]
    async fn handler_gets_the_delivery() {
        let app = test::init_service(
            App::new()
                .wrap(QStashMiddleware::new(receiver()))
                .route("/jobs", web::post().to(job)),
        )
        .await;
        let delivery = Signer::new(CURRENT)
            .delivery(&format!("{BASE}/jobs"), br#"{"task":"mail"}"#)
            .with_header("content-type", "application/json")
            .retry()
            .retry();
        let req = delivery.to_actix_request().unwrap().to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), 200);
        assert_eq!(test::read_body(res).await, "mail (attempt 2)");

        let tampered = Signer::new(CURRENT).delivery(&format!("{BASE}/jobs"), b"{}");
        let req = tampered
            .to_actix_request()
            .unwrap()
            .set_payload(&b"{ }"[..])
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(res.status(), 401);
        let body = test::read_body(res).await;
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains(r#""error":"body_mismatch""#)
        );
    }

    async fn verified(Verified(body): Verified<String>) -> HttpResponse {
        HttpResponse::Ok().body(body)
    }

    async fn callback(Callback(event): Callback) -> HttpResponse {
        HttpResponse::Ok().body(format!(
            "{} {} {}",
            event.source_message_id,
            event.status,
            event.header["Content-Type"].join(",")
        ))
    }

    async fn failure(FailureCallback(event): FailureCallback) -> HttpResponse {
        HttpResponse::Ok().body(format!(
            "{} final={}",
            event.source_message_id,
            event.is_final_attempt()
        ))
    }

    #[actix_web::test]
    async fn callbacks_reach_the_typed_extractors() {
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(receiver()))
                .route("/jobs", web::post().to(verified))
                .route("/callbacks", web::post().to(callback))
                .route("/failures", web::post().to(failure)),
        )
        .await;
        let signer = Signer::new(NEXT);
        let job = signer.delivery(&format!("{BASE}/jobs"), b"payload");
        // The standalone extractors (no middleware) take the receiver from app data.
        let res = test::call_service(&app, job.to_actix_request().unwrap().to_request()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(test::read_body(res).await, "payload");

        let cb = CallbackBuilder::callback(&job)
            .response_header("content-type", "text/plain")
            .sign(&signer, &format!("{BASE}/callbacks"));
        let res = test::call_service(&app, cb.to_actix_request().unwrap().to_request()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            test::read_body(res).await,
            format!("{} 200 text/plain", job.message_id)
        );

        let failed =
            CallbackBuilder::failure_callback(&job).sign(&signer, &format!("{BASE}/failures"));
        let res = test::call_service(&app, failed.to_actix_request().unwrap().to_request()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            test::read_body(res).await,
            format!("{} final=true", job.message_id)
        );
    }

    async fn counted(runs: web::Data<AtomicU32>, body: String) -> HttpResponse {
        let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
        HttpResponse::Ok().body(format!("run {n}: {body}"))
    }

    #[actix_web::test]
    async fn a_retry_is_a_duplicate_with_dedup_on() {
        let runs = web::Data::new(AtomicU32::new(0));
        let receiver = receiver().dedup(Dedup::new(Arc::new(MemoryStore::new())));
        let app = test::init_service(
            App::new()
                .app_data(runs.clone())
                .wrap(QStashMiddleware::new(receiver))
                .route("/jobs", web::post().to(counted)),
        )
        .await;
        let first = Signer::new(CURRENT).delivery(&format!("{BASE}/jobs"), b"once");
        let res = test::call_service(&app, first.to_actix_request().unwrap().to_request()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(test::read_body(res).await, "run 1: once");

        let res =
            test::call_service(&app, first.retry().to_actix_request().unwrap().to_request()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers().get("qstash-duplicate").unwrap(), "true");
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(
            body,
            serde_json::json!({"duplicate": true, "messageId": first.message_id})
        );
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the handler ran once");
    }
}
