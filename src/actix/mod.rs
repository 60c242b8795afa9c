//! actix-web 4 middleware, extractors and guard (feature `actix-web`).
//!
//! - [`QStashMiddleware`]: verifies every request of the scope it wraps before the handler runs.
//!   It refuses a bad token before reading a single body byte, refuses a body over the limit with
//!   413 (announced by `Content-Length` or not), checks the body hash over the raw bytes, then puts
//!   the verified bytes back so that `web::Json<T>`, `web::Bytes` and `String` work unchanged, and
//!   leaves [`Claims`](crate::Claims) and [`Delivery`] in the request extensions. Those extractors
//!   keep their own limits (`web::PayloadConfig`: 256 KiB by default; `web::JsonConfig`: 2 MiB):
//!   register `web::PayloadConfig::new(receiver.get_max_body_bytes())` to accept what the receiver accepts.
//! - Extractors: [`Verified<T>`] over any body extractor (verifies by itself without the
//!   middleware), [`Callback`], [`FailureCallback`], and [`Delivery`] /
//!   [`Claims`](crate::Claims) from the middleware's verdict.
//! - [`QStashGuard`]: a *routing aid* that matches requests whose token verifies on everything but
//!   the body. It is not a security boundary: pair it with the middleware or [`Verified<T>`].
//! - Every refusal is the core [`Rejection`]: the same status, headers and JSON body
//!   (`{"error":"<code>","message":"…"}`) as the axum and tower adapters. Replace the response
//!   with [`RejectionHandler`].
//!
//! ```
//! # #[cfg(feature = "test-utils")] {
//! use actix_web::{App, HttpResponse, test, web};
//! use qstash_receiver::actix::QStashMiddleware;
//! use qstash_receiver::{Delivery, Receiver, SigningKeys, UrlPolicy, Verifier};
//! # use qstash_receiver::test_utils::Signer;
//!
//! #[derive(serde::Deserialize)]
//! struct Job {
//!     task: String,
//! }
//!
//! async fn job(job: web::Json<Job>, delivery: Delivery) -> HttpResponse {
//!     HttpResponse::Ok().body(format!("{} (attempt {})", job.task, delivery.retried()))
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
//!     .url_policy(UrlPolicy::public_base("https://app.example.com")?);
//!
//! let app = test::init_service(
//!     App::new().service(
//!         web::scope("/qstash")
//!             .wrap(QStashMiddleware::new(receiver))
//!             .route("/jobs", web::post().to(job)),
//!     ),
//! )
//! .await;
//!
//! // A delivery signed as QStash signs it is accepted…
//! # let body = br#"{"task":"mail"}"#;
//! let delivery = Signer::new("sig_current").delivery("https://app.example.com/qstash/jobs", body);
//! let mut req = test::TestRequest::post().uri("/qstash/jobs").set_payload(&body[..]);
//! for (name, value) in &delivery.headers {
//!     req = req.insert_header((name.as_str(), value.as_str()));
//! }
//! let req = req.insert_header(("content-type", "application/json")).to_request();
//! let res = test::call_service(&app, req).await;
//! assert_eq!(res.status(), 200);
//! assert_eq!(test::read_body(res).await, "mail (attempt 0)");
//!
//! // …anything else is refused with a typed JSON answer.
//! let req = test::TestRequest::post().uri("/qstash/jobs").set_payload(&body[..]).to_request();
//! let res = test::call_service(&app, req).await;
//! assert_eq!(res.status(), 401);
//! assert_eq!(
//!     test::read_body(res).await,
//!     r#"{"error":"missing_signature","message":"missing upstash-signature header"}"#
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! # }
//! ```
//!
//! The crate's test helper [`Signer`](crate::test_utils::Signer) (feature `test-utils`) signs
//! requests exactly as QStash does, for tests of your own handlers.

mod body;
mod extract;
mod guard;
mod middleware;
mod response;

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use actix_web::body::BoxBody;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};

use crate::head::{Answer, RequestHead};
use crate::{Delivery, Receiver, Rejection};

pub use extract::{Callback, FailureCallback, QStashRejection, Verified};
pub use guard::QStashGuard;
pub use middleware::{QStashMiddleware, QStashMiddlewareService};
pub use response::{non_retryable, retry_after};

impl ResponseError for Rejection {
    fn status_code(&self) -> StatusCode {
        status_of(self)
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        response(Answer::rejection(self))
    }
}

/// The core's answer as an actix-web response.
fn response(answer: Answer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::try_from(value) {
            response.insert_header((HeaderName::from_static(name), value));
        }
    }
    response.body(answer.body)
}

fn status_of(rejection: &Rejection) -> StatusCode {
    StatusCode::from_u16(rejection.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

type ResponseFn = dyn Fn(&Rejection) -> HttpResponse + Send + Sync;

/// Replaces the response of every [`Rejection`] (by default: [`Rejection::status`],
/// [`Rejection::headers`] and the JSON of [`Rejection::json_body`]).
///
/// Give it to the middleware with [`QStashMiddleware::rejection_handler`]; for the extractors,
/// register it as app data (`App::app_data(handler)` or `web::Data<RejectionHandler>`). Requests
/// that went through a middleware with a handler use the middleware's.
///
/// Keep the status: QStash retries anything but a 2xx (and 489), and a refused message must be
/// retried, so a handler that answers 2xx to a rejection loses the message.
///
/// ```
/// use actix_web::HttpResponse;
/// use qstash_receiver::actix::RejectionHandler;
///
/// let handler = RejectionHandler::new(|rejection| {
///     HttpResponse::build(actix_web::http::StatusCode::from_u16(rejection.status()).unwrap())
///         .body(format!("refused: {}", rejection.code()))
/// });
/// # let _ = handler;
/// ```
#[derive(Clone)]
pub struct RejectionHandler(Arc<ResponseFn>);

impl RejectionHandler {
    /// A handler that answers each rejection with `f(rejection)`.
    pub fn new<F>(f: F) -> Self
    where
        F: Fn(&Rejection) -> HttpResponse + Send + Sync + 'static,
    {
        Self(Arc::new(f))
    }

    /// The response for `rejection`.
    pub fn respond(&self, rejection: &Rejection) -> HttpResponse {
        (self.0)(rejection)
    }

    fn from_app_data(req: &HttpRequest) -> Option<Self> {
        req.app_data::<Self>().cloned().or_else(|| {
            req.app_data::<web::Data<Self>>()
                .map(|d| d.get_ref().clone())
        })
    }
}

impl fmt::Debug for RejectionHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RejectionHandler(..)")
    }
}

/// A middleware's set-up: the receiver and the response handler.
#[derive(Debug)]
struct Setup {
    receiver: Receiver,
    handler: Option<RejectionHandler>,
}

/// What the middleware leaves in the request extensions once a request is verified: the proof
/// [`Verified<T>`] trusts (only this crate can make one), with the middleware's set-up (the
/// receiver for the later `invalid_payload` answer, and the response handler), shared.
#[derive(Clone)]
struct Verdict(Arc<Setup>);

/// The response for `rejection`: the handler's, or the default.
fn respond(rejection: &Rejection, handler: Option<&RejectionHandler>) -> HttpResponse {
    match handler {
        Some(handler) => handler.respond(rejection),
        None => rejection.error_response(),
    }
}

/// Logs a rejection as every adapter does ([`crate::log`]), with the message id as sent.
fn log_rejection(rejection: &Rejection, headers: &HeaderMap) {
    crate::log::refusal(rejection, message_id(headers));
}

/// The `Upstash-Message-Id` header as sent, for logs.
fn message_id(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(crate::MESSAGE_ID_HEADER)
        .map(HeaderValue::as_bytes)
}

/// An actix-web (`http` 0.2) request head, as the core reads it ([`RequestHead`]).
struct Head<'a> {
    method: &'a actix_web::http::Method,
    uri: &'a actix_web::http::Uri,
    headers: &'a HeaderMap,
    /// Whether this server terminated TLS itself; `None`: unknown (the guard).
    secure: Option<bool>,
}

impl<'a> Head<'a> {
    fn of(req: &'a HttpRequest) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            secure: Some(req.app_config().secure()),
        }
    }
}

impl RequestHead for Head<'_> {
    fn method(&self) -> &str {
        self.method.as_str()
    }

    fn path_and_query(&self) -> Option<&str> {
        self.uri.path_and_query().map(|pq| pq.as_str())
    }

    /// A server that terminated TLS itself saw `https`; one that did not may sit behind a proxy
    /// that did, so "http" is not known: the policy's default scheme decides then (as in the
    /// tower layer, where hyper gives no scheme).
    fn scheme(&self) -> Option<&str> {
        self.uri
            .scheme_str()
            .or(self.secure.and_then(|secure| secure.then_some("https")))
    }

    fn authority(&self) -> Option<&str> {
        self.uri.authority().map(|a| a.as_str())
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name).map(HeaderValue::as_bytes)
    }

    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))
    }
}

/// The receiver's steps on a request: the head (token, URL, delivery headers, announced
/// length), then the payload read **as it came** (not decompressed: QStash signs the bytes it
/// sends) under the receiver's limit, and its hash. The verified body, its claims and delivery.
async fn verify_payload(
    receiver: &Receiver,
    req: &HttpRequest,
    payload: &mut actix_web::dev::Payload,
) -> Result<(bytes::Bytes, crate::Claims, Delivery), Rejection> {
    let head = Head::of(req);
    let (token, delivery) = crate::head::check_head(receiver, &head, SystemTime::now())?;
    let body = body::read_limited(payload, receiver, head.content_length()).await?;
    let claims = receiver.check_body(token, &body)?;
    Ok((body, claims, delivery))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn head_scheme_is_known_only_from_tls_or_the_uri() {
        let req = TestRequest::post()
            .uri("/jobs?a=1")
            .insert_header(("host", "internal:8080"))
            .to_http_request();
        let mut head = Head::of(&req);
        assert_eq!(head.path_and_query(), Some("/jobs?a=1"));
        // A plain connection says nothing of the public scheme (a TLS proxy may be in front):
        // the policy's default decides. One whose TLS this server terminated says `https`.
        assert_eq!(head.scheme(), None);
        head.secure = Some(true);
        assert_eq!(head.scheme(), Some("https"));
        assert_eq!(head.header("host"), Some(&b"internal:8080"[..]));
    }

    #[test]
    fn rejection_response_has_status_headers_and_json() {
        let r = Rejection::InvalidPayload {
            message: "bad".into(),
            non_retryable: true,
        };
        let res = r.error_response();
        assert_eq!(res.status().as_u16(), 489);
        assert_eq!(
            res.headers().get("upstash-nonretryable-error").unwrap(),
            "true"
        );
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "application/json"
        );
    }
}
