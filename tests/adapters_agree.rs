//! The same bad input gets the same answer from every adapter: the axum route behind
//! `QStashLayer`, the axum extractor alone (the router's state holds the receiver), the actix-web
//! middleware, and the actix-web extractor alone (the receiver in app data). Each handler takes
//! the crate's own extractor over the framework's JSON (`Verified<Json<Job>>`,
//! `Verified<web::Json<Job>>`). Compared: the status, `content-type`, `retry-after`,
//! `upstash-nonretryable-error`, `qstash-duplicate`, and the JSON `error` code; and each against
//! the answer the crate documents.
#![cfg(all(feature = "axum", feature = "actix-web", feature = "test-utils"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::{App, test as actix_test, web};
use axum::body::Body;
use axum::{Json, Router, routing::post};
use http_body_util::BodyExt as _;
use qstash_receiver::axum::Verified;
use qstash_receiver::dedup::{Dedup, MemoryStore};
use qstash_receiver::test_utils::Signer;
use qstash_receiver::tower::QStashLayer;
use qstash_receiver::{Receiver, SigningKeys, UrlPolicy, Verifier};
use tower::ServiceExt as _;

const CURRENT: &str = "sig_agreeCurrentKey0123456789a";
const NEXT: &str = "sig_agreeNextKey0123456789abcd";
const BASE: &str = "https://agree.example";
const URL: &str = "https://agree.example/jobs";
const LIMIT: usize = 64;
const GOOD: &[u8] = br#"{"task":"mail"}"#;

#[derive(serde::Deserialize)]
struct Job {
    task: String,
}

fn receiver(non_retryable: bool) -> Receiver {
    Receiver::new(Verifier::new(SigningKeys::new(CURRENT, NEXT).unwrap()))
        .url_policy(UrlPolicy::public_base(BASE).unwrap())
        .max_body_bytes(LIMIT)
        .non_retryable_invalid_payload(non_retryable)
}

fn with_dedup(receiver: Receiver) -> Receiver {
    receiver.dedup(Dedup::new(Arc::new(MemoryStore::new())))
}

/// What an adapter answered, reduced to what must agree.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<String>,
    non_retryable: Option<String>,
    duplicate: Option<String>,
    /// The JSON body's `error`, or the body itself when it is not a JSON error.
    error: String,
}

impl Answer {
    fn new(status: u16, header: impl Fn(&str) -> Option<String>, body: &[u8]) -> Self {
        let error = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(json) if json.get("error").is_some() => json["error"].as_str().unwrap().to_owned(),
            _ => String::from_utf8_lossy(body).into_owned(),
        };
        Self {
            status,
            content_type: header("content-type"),
            retry_after: header("retry-after"),
            non_retryable: header("upstash-nonretryable-error"),
            duplicate: header("qstash-duplicate"),
            error,
        }
    }
}

/// One request: its headers and body.
#[derive(Debug, Clone)]
struct Req {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn delivery(signer: &Signer, url: &str, body: &[u8]) -> Vec<(String, String)> {
    let mut headers = signer.delivery(url, body).headers;
    headers.push(("content-type".into(), "application/json".into()));
    headers
}

fn signed(body: &[u8]) -> Req {
    Req {
        headers: delivery(&Signer::new(CURRENT), URL, body),
        body: body.to_vec(),
    }
}

fn replace(headers: &mut [(String, String)], name: &str, value: &str) {
    for (n, v) in headers.iter_mut() {
        if n.eq_ignore_ascii_case(name) {
            *v = value.to_owned();
        }
    }
}

/// Every kind of bad input, with the answer the crate documents for it (status, `error`).
fn cases() -> Vec<(&'static str, Req, u16, &'static str)> {
    let mut missing = signed(GOOD);
    missing
        .headers
        .retain(|(n, _)| !n.eq_ignore_ascii_case("upstash-signature"));
    let mut malformed = signed(GOOD);
    replace(&mut malformed.headers, "upstash-signature", "not.a-token");
    let bad_signature = Req {
        headers: delivery(&Signer::new("sig_someoneElsesKey0123456789"), URL, GOOD),
        body: GOOD.to_vec(),
    };
    let expired = Req {
        headers: delivery(
            &Signer::new(CURRENT).issued_at(SystemTime::now() - Duration::from_secs(3600)),
            URL,
            GOOD,
        ),
        body: GOOD.to_vec(),
    };
    let url_mismatch = Req {
        headers: delivery(&Signer::new(CURRENT), "https://agree.example/admin", GOOD),
        body: GOOD.to_vec(),
    };
    let mut body_mismatch = signed(GOOD);
    body_mismatch.body = br#"{"task":"drop"}"#.to_vec();
    let mut bad_header = signed(GOOD);
    replace(&mut bad_header.headers, "upstash-retried", "x");
    let big = format!(r#"{{"task":"{}"}}"#, "x".repeat(LIMIT));
    vec![
        ("missing signature", missing, 401, "missing_signature"),
        ("malformed token", malformed, 401, "malformed_token"),
        ("bad signature", bad_signature, 401, "invalid_signature"),
        ("expired", expired, 401, "token_expired"),
        ("url mismatch", url_mismatch, 401, "url_mismatch"),
        ("body mismatch", body_mismatch, 401, "body_mismatch"),
        (
            "bad delivery header",
            bad_header,
            400,
            "invalid_delivery_header",
        ),
        (
            "oversized body",
            signed(big.as_bytes()),
            413,
            "payload_too_large",
        ),
        (
            "unparsable payload",
            signed(b"{not json"),
            400,
            "invalid_payload",
        ),
        (
            "ill-typed payload",
            signed(br#"{"task":1}"#),
            400,
            "invalid_payload",
        ),
    ]
}

async fn axum_call(app: &Router, req: &Req) -> Answer {
    let mut builder = http::Request::post("/jobs");
    for (n, v) in &req.headers {
        builder = builder.header(n, v);
    }
    let response = app
        .clone()
        .oneshot(builder.body(Body::from(req.body.clone())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer::new(
        status,
        |n| headers.get(n).map(|v| v.to_str().unwrap().to_owned()),
        &body,
    )
}

async fn job(Verified(Json(job)): Verified<Json<Job>>) -> String {
    job.task
}

fn axum_layer(receiver: Receiver) -> Router {
    Router::new()
        .route("/jobs", post(job))
        .route_layer(QStashLayer::new(receiver))
}

fn axum_alone(receiver: Receiver) -> Router {
    Router::new().route("/jobs", post(job)).with_state(receiver)
}

async fn actix_job(
    qstash_receiver::actix::Verified(job): qstash_receiver::actix::Verified<web::Json<Job>>,
) -> String {
    job.into_inner().task
}

/// The actix-web app under test: the middleware, or the extractor alone with the receiver in
/// app data.
macro_rules! actix_app {
    (middleware, $receiver:expr) => {
        actix_test::init_service(
            App::new().service(
                web::scope("")
                    .wrap(qstash_receiver::actix::QStashMiddleware::new($receiver))
                    .route("/jobs", web::post().to(actix_job)),
            ),
        )
        .await
    };
    (alone, $receiver:expr) => {
        actix_test::init_service(
            App::new()
                .app_data(web::Data::new($receiver))
                .route("/jobs", web::post().to(actix_job)),
        )
        .await
    };
}

async fn actix_call<S, B>(app: &S, req: &Req) -> Answer
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let mut request = actix_test::TestRequest::post()
        .uri("/jobs")
        .insert_header(("host", "agree.example"))
        .set_payload(req.body.clone());
    for (n, v) in &req.headers {
        request = request.append_header((n.as_str(), v.as_str()));
    }
    let response = actix_test::call_service(app, request.to_request()).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = actix_test::read_body(response).await;
    Answer::new(
        status,
        |n| headers.get(n).map(|v| v.to_str().unwrap().to_owned()),
        &body,
    )
}

fn expected(status: u16, code: &str) -> Answer {
    Answer {
        status,
        content_type: Some("application/json".into()),
        retry_after: None,
        non_retryable: (status == 489).then(|| "true".to_owned()),
        duplicate: None,
        error: code.to_owned(),
    }
}

#[actix_web::test]
async fn every_adapter_gives_the_same_answer_to_each_bad_input() {
    for non_retryable in [false, true] {
        let axum_layer = axum_layer(with_dedup(receiver(non_retryable)));
        let axum_alone = axum_alone(receiver(non_retryable));
        let actix_middleware = actix_app!(middleware, with_dedup(receiver(non_retryable)));
        let actix_alone = actix_app!(alone, receiver(non_retryable));

        // A good delivery passes everywhere (so the refusals below are the cases' doing).
        let good = signed(GOOD);
        for answer in [
            axum_call(&axum_layer, &good).await,
            axum_call(&axum_alone, &signed(GOOD)).await,
            actix_call(&actix_middleware, &signed(GOOD)).await,
            actix_call(&actix_alone, &signed(GOOD)).await,
        ] {
            assert_eq!((answer.status, answer.error.as_str()), (200, "mail"));
        }

        for (name, req, status, code) in cases() {
            let status = if non_retryable && code == "invalid_payload" {
                489
            } else {
                status
            };
            let want = expected(status, code);
            let answers = [
                ("axum layer", axum_call(&axum_layer, &req).await),
                ("axum extractor", axum_call(&axum_alone, &req).await),
                (
                    "actix middleware",
                    actix_call(&actix_middleware, &req).await,
                ),
                ("actix extractor", actix_call(&actix_alone, &req).await),
            ];
            for (adapter, answer) in answers {
                assert_eq!(
                    answer, want,
                    "{name} (non_retryable: {non_retryable}) through the {adapter}"
                );
            }
        }
    }
}

/// Deduplication runs in the layer and the middleware (it needs the handler's answer): a
/// completed message and a delivery without a message id are answered alike.
#[actix_web::test]
async fn the_layer_and_the_middleware_deduplicate_alike() {
    let axum_layer = axum_layer(with_dedup(receiver(false)));
    let actix_middleware = actix_app!(middleware, with_dedup(receiver(false)));
    let signer = Signer::new(CURRENT);

    let mut answers = Vec::new();
    for (adapter, id) in [("axum", "msg_agree_axum"), ("actix", "msg_agree_actix")] {
        let first = signer.delivery_with_id(URL, GOOD, id, 0);
        let retry = signer.delivery_with_id(URL, GOOD, id, 1);
        let mut no_id = signer.delivery(URL, GOOD);
        no_id
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("upstash-message-id"));
        let req = |headers: Vec<(String, String)>| {
            let mut headers = headers;
            headers.push(("content-type".into(), "application/json".into()));
            Req {
                headers,
                body: GOOD.to_vec(),
            }
        };
        let mut answer = Vec::new();
        for r in [req(first.headers), req(retry.headers), req(no_id.headers)] {
            answer.push(match adapter {
                "axum" => axum_call(&axum_layer, &r).await,
                _ => actix_call(&actix_middleware, &r).await,
            });
        }
        answers.push(answer);
    }
    let [axum, actix] = [&answers[0], &answers[1]];
    assert_eq!((axum[0].status, axum[0].error.as_str()), (200, "mail"));
    assert_eq!(
        axum[1],
        Answer {
            status: 200,
            content_type: Some("application/json".into()),
            retry_after: None,
            non_retryable: None,
            duplicate: Some("true".into()),
            // Not an error: the duplicate body.
            error: r#"{"duplicate":true,"messageId":"msg_agree_axum"}"#.into(),
        }
    );
    assert_eq!(axum[2], expected(400, "missing_message_id"));
    assert_eq!(actix[0], axum[0]);
    assert_eq!(
        actix[1],
        Answer {
            error: r#"{"duplicate":true,"messageId":"msg_agree_actix"}"#.into(),
            ..axum[1].clone()
        }
    );
    assert_eq!(actix[2], axum[2]);
}

/// Behind the layer and the middleware, the framework's own JSON extractor (not the crate's):
/// an unusable payload is answered 489 + `Upstash-NonRetryable-Error: true` when the receiver is
/// configured non-retryable, and left as the framework answers it otherwise.
#[actix_web::test]
async fn the_non_retryable_choice_reaches_the_frameworks_own_json() {
    async fn plain(Json(job): Json<Job>) -> String {
        job.task
    }
    async fn actix_plain(job: web::Json<Job>) -> String {
        job.into_inner().task
    }
    for non_retryable in [false, true] {
        let axum_app = Router::new()
            .route("/jobs", post(plain))
            .route_layer(QStashLayer::new(receiver(non_retryable)));
        let actix_app = actix_test::init_service(
            App::new().service(
                web::scope("")
                    .wrap(qstash_receiver::actix::QStashMiddleware::new(receiver(
                        non_retryable,
                    )))
                    .route("/jobs", web::post().to(actix_plain)),
            ),
        )
        .await;
        for body in [&b"{not json"[..], br#"{"task":1}"#] {
            let axum = axum_call(&axum_app, &signed(body)).await;
            let actix = actix_call(&actix_app, &signed(body)).await;
            if non_retryable {
                for answer in [&axum, &actix] {
                    assert_eq!(answer.status, 489, "{answer:?}");
                    assert_eq!(answer.non_retryable.as_deref(), Some("true"));
                }
            } else {
                // The frameworks' own answers (axum: 400 or 422; actix-web: 400), retried.
                assert!([400, 422].contains(&axum.status), "{axum:?}");
                assert_eq!(actix.status, 400, "{actix:?}");
                assert_eq!((axum.non_retryable, actix.non_retryable), (None, None));
            }
        }
        // A good delivery is not touched.
        assert_eq!(axum_call(&axum_app, &signed(GOOD)).await.status, 200);
        assert_eq!(actix_call(&actix_app, &signed(GOOD)).await.status, 200);
    }
}
