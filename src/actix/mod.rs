//! actix-web 4 middleware, extractors and guard (feature `actix-web`).
//!
//! [`QStashMiddleware`] verifies every request of the scope it wraps; handlers then take
//! `web::Json<T>`, `web::Bytes`, `String`, [`Delivery`] and [`Claims`]. Without it,
//! [`Verified<T>`], [`Callback`] and [`FailureCallback`] verify by themselves. [`QStashGuard`]
//! routes QStash traffic. A refusal is answered as the other adapters answer the [`Rejection`]
//! (`{"error":"<code>","message":"…"}`), or by a [`RejectionHandler`].
//!
//! ```
//! # #[cfg(feature = "test-utils")] {
//! use actix_web::{App, HttpResponse, test, web};
//! use qstash_receiver::actix::QStashMiddleware;
//! use qstash_receiver::test_utils::Signer; // feature `test-utils`: signs as QStash does
//! use qstash_receiver::{Delivery, Receiver, SigningKeys, UrlPolicy, Verifier};
//!
//! async fn job(body: String, delivery: Delivery) -> HttpResponse {
//!     HttpResponse::Ok().body(format!("{body} (attempt {})", delivery.retried()))
//! }
//!
//! # actix_web::rt::System::new().block_on(async {
//! let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
//!     .url_policy(UrlPolicy::public_base("https://app.example.com")?);
//! let scope = web::scope("/qstash").wrap(QStashMiddleware::new(receiver));
//! let app = test::init_service(App::new().service(scope.route("/jobs", web::post().to(job)))).await;
//!
//! // A delivery signed as QStash signs it is accepted…
//! let delivery = Signer::new("sig_current").delivery("https://app.example.com/qstash/jobs", b"mail");
//! let res = test::call_service(&app, delivery.to_actix_request()?.to_request()).await;
//! assert_eq!(res.status(), 200);
//! assert_eq!(test::read_body(res).await, "mail (attempt 0)");
//!
//! // …anything else is refused with a typed JSON answer.
//! let res = test::call_service(&app, test::TestRequest::post().uri("/qstash/jobs").to_request());
//! assert_eq!(res.await.status(), 401);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! # }
//! ```

mod extract;
mod guard;
mod middleware;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::body::BoxBody;
use actix_web::error::PayloadError;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, ResponseError, dev, web};
use bytes::Bytes;
use futures_util::StreamExt as _;

use crate::buffer::BodyBuffer;
use crate::head::{Answer, RequestHead};
use crate::{Claims, Delivery, NON_RETRYABLE_HEADER, NON_RETRYABLE_STATUS, Receiver, Rejection};

pub use extract::{Callback, FailureCallback, QStashRejection, Verified};
pub use guard::QStashGuard;
pub use middleware::{QStashMiddleware, QStashMiddlewareService};

impl ResponseError for Rejection {
    fn status_code(&self) -> StatusCode {
        status(self.status())
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        response(Answer::rejection(self))
    }
}

/// `code` as an actix-web (`http` 0.2) status (the core's are all valid: 500 never shows).
fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The core's answer as an actix-web response.
fn response(answer: Answer) -> HttpResponse {
    let mut response = HttpResponse::build(status(answer.status));
    for header in answer.headers {
        response.insert_header(header); // the core's names and values, all valid
    }
    response.body(answer.body)
}

/// Status 489 with `Upstash-NonRetryable-Error: true`: QStash stops retrying and moves the message
/// to the dead-letter queue. Add a body and finish it (`.json(…)`, `.body(…)`, `.finish()`).
///
/// ```
/// use qstash_receiver::actix::non_retryable;
///
/// let res = non_retryable().body("unknown task");
/// assert_eq!(res.status().as_u16(), 489);
/// assert_eq!(res.headers().get("upstash-nonretryable-error").unwrap(), "true");
/// ```
pub fn non_retryable() -> HttpResponseBuilder {
    let mut builder = HttpResponseBuilder::new(status(NON_RETRYABLE_STATUS));
    builder.insert_header((NON_RETRYABLE_HEADER, "true"));
    builder
}

/// `status` (use a non-2xx one: QStash retries only those) with `Retry-After` set to `delay` in
/// whole seconds, rounded up, at least 1 (as the axum `RetryAfter`): QStash waits that long
/// before the next attempt instead of its backoff.
///
/// ```
/// use std::time::Duration;
/// use actix_web::http::StatusCode;
/// use qstash_receiver::actix::retry_after;
///
/// let res = retry_after(StatusCode::SERVICE_UNAVAILABLE, Duration::from_millis(1500)).finish();
/// assert_eq!(res.status(), 503);
/// assert_eq!(res.headers().get("retry-after").unwrap(), "2");
/// let res = retry_after(StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO).finish();
/// assert_eq!(res.headers().get("retry-after").unwrap(), "1");
/// ```
pub fn retry_after(status: StatusCode, delay: Duration) -> HttpResponseBuilder {
    let mut builder = HttpResponseBuilder::new(status);
    builder.insert_header((RETRY_AFTER, crate::head::retry_after_secs(delay)));
    builder
}

/// Replaces the response of every [`Rejection`] (by default: its status, headers and JSON body).
///
/// Give it to [`QStashMiddleware::rejection_handler`], or register it as app data for the
/// extractors (`App::app_data(handler)` or `web::Data<RejectionHandler>`; a middleware's comes
/// first). Keep a non-2xx status: QStash retries only those, so a 2xx answer loses the message.
#[derive(Clone)]
pub struct RejectionHandler(Arc<dyn Fn(&Rejection) -> HttpResponse + Send + Sync>);

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
        req.app_data::<Self>()
            .or_else(|| req.app_data::<web::Data<Self>>().map(|d| d.get_ref()))
            .cloned()
    }
}

impl fmt::Debug for RejectionHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RejectionHandler(..)")
    }
}

/// A middleware's set-up, also left in the extensions of each request it verified: the proof
/// [`Verified<T>`] trusts (private: only this crate can make one).
#[derive(Clone, Debug)]
struct Setup {
    receiver: Receiver,
    handler: Option<RejectionHandler>,
}

/// The response for `rejection`: the handler's, or the default.
fn respond(rejection: &Rejection, handler: Option<&RejectionHandler>) -> HttpResponse {
    handler.map_or_else(|| rejection.error_response(), |h| h.respond(rejection))
}

/// An actix-web (`http` 0.2) request head, as the core reads it ([`RequestHead`]), and whether
/// this server terminated TLS itself (`false` when unknown: the guard cannot see it).
struct Head<'a> {
    head: &'a dev::RequestHead,
    tls: bool,
}

impl<'a> Head<'a> {
    fn of(req: &'a HttpRequest) -> Self {
        let (head, tls) = (req.head(), req.app_config().secure());
        Self { head, tls }
    }
}

impl RequestHead for Head<'_> {
    fn method(&self) -> &str {
        self.head.method.as_str()
    }

    fn path_and_query(&self) -> Option<&str> {
        self.head.uri.path_and_query().map(|pq| pq.as_str())
    }

    /// Without TLS here, unknown (a proxy may have terminated it): the policy's default decides.
    fn scheme(&self) -> Option<&str> {
        self.head.uri.scheme_str().or(self.tls.then_some("https"))
    }

    fn authority(&self) -> Option<&str> {
        self.head.uri.authority().map(|a| a.as_str())
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.head.headers.get(name).map(HeaderValue::as_bytes)
    }

    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let headers = self.head.headers.iter();
        headers.map(|(n, v)| (n.as_str(), v.as_bytes()))
    }
}

/// The receiver's steps: the head before any body byte is read, then the payload **as it came**
/// (not decompressed: QStash signs the bytes it sends) under the limit, then its hash.
async fn verify(
    receiver: &Receiver,
    req: &HttpRequest,
    payload: &mut dev::Payload,
) -> Result<(Bytes, Claims, Delivery), Rejection> {
    let head = Head::of(req);
    let (token, delivery) = crate::head::check_head(receiver, &head, SystemTime::now())?;
    let body = read_limited(payload, receiver, head.content_length()).await?;
    let claims = receiver.check_body(token, &body)?;
    Ok((body, claims, delivery))
}

/// The whole payload in one [`BodyBuffer`] (sized by `announced`), refused (413) as soon as it
/// exceeds the receiver's limit.
async fn read_limited(
    payload: &mut dev::Payload,
    receiver: &Receiver,
    announced: Option<u64>,
) -> Result<Bytes, Rejection> {
    let mut buffer = BodyBuffer::new(receiver.get_max_body_bytes(), announced);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| payload_error(&e, receiver))?;
        buffer.push(chunk).map_err(|_| receiver.too_large())?;
    }
    Ok(buffer.finish())
}

/// A transport error while reading; an overflow reported by actix itself is a 413.
fn payload_error(e: &PayloadError, receiver: &Receiver) -> Rejection {
    match e {
        PayloadError::Overflow => receiver.too_large(),
        other => Rejection::BodyRead(other.to_string()),
    }
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
        head.tls = true;
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
