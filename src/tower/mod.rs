//! A tower [`Layer`](tower_layer::Layer) that verifies QStash deliveries in any tower or hyper
//! stack, and under axum's `Router::layer` / `route_layer` (feature `tower`).
//!
//! ```
//! # #[cfg(feature = "test-utils")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use qstash_receiver::tower::QStashLayer;
//! use qstash_receiver::{Delivery, Receiver, SigningKeys, Verifier, test_utils::Signer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
//!     // The URL QStash delivers to: the public base + each request's path and query.
//!     .public_url("https://app.example.com")?;
//! let service = ServiceBuilder::new()
//!     .layer(QStashLayer::new(receiver))
//!     .service(service_fn(|req: Request<Full<Bytes>>| async move {
//!         // Only verified deliveries get here, with the verified bytes as the body.
//!         let id = req.extensions().get::<Delivery>().and_then(|d| d.message_id()).map(str::to_owned);
//!         let body = req.into_body().collect().await?.to_bytes();
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(format!(
//!             "{} bytes from {}", body.len(), id.unwrap_or_default()
//!         )))))
//!     }));
//!
//! // A delivery signed as QStash signs it:
//! let delivery = Signer::new("sig_current").delivery("https://app.example.com/jobs", b"{}");
//! let mut request = Request::post("/jobs");
//! for (name, value) in &delivery.headers {
//!     request = request.header(name, value);
//! }
//! let response = service.clone().oneshot(request.body(Full::new(Bytes::from_static(b"{}")))?).await?;
//! assert_eq!(response.status(), 200);
//!
//! // No signature: 401 with a JSON body, and the handler never runs.
//! let response = service.oneshot(Request::post("/jobs").body(Full::new(Bytes::new()))?).await?;
//! assert_eq!(response.status(), 401);
//! let body = response.into_body().collect().await?.to_bytes();
//! assert_eq!(&body[..], br#"{"error":"missing_signature","message":"missing upstash-signature header"}"#);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "test-utils"))]
//! # fn main() {}
//! ```
//!
//! # What happens to each request
//!
//! 1. Before any body byte is read: the `Upstash-Signature` token (keys, issuer, expiry, the
//!    expected URL from the [`UrlPolicy`](crate::UrlPolicy)) and the delivery headers
//!    ([`Receiver::check_request`]). The URL policy sees the request's original path and query
//!    (under axum, before any `nest` stripped a prefix), the `Host` header and the first
//!    `X-Forwarded-Proto` / `X-Forwarded-Host` values.
//! 2. A `Content-Length` over the limit is answered 413 without buffering; otherwise the body
//!    is read under the limit (like [`http_body_util::Limited`]), and 413 once it exceeds it
//!    (chunked bodies too).
//! 3. The body hash ([`Receiver::check_body`]). The request is rebuilt from its original parts
//!    (extensions kept) with the verified bytes as a [`Full<Bytes>`](http_body_util::Full)
//!    body, so `Json`, `Bytes` or `String` extractors work downstream, and with
//!    [`Claims`](crate::Claims) and [`Delivery`] in its extensions.
//! 4. With deduplication ([`Receiver::dedup`], see [`crate::dedup`]): the message id is claimed ([`Dedup::begin`](crate::dedup::Dedup::begin)).
//!    A new id: the inner service runs under a lease, and once its response head is known a 2xx
//!    completes the id and anything else releases it, before the response goes out; an `Err`,
//!    a panic or a dropped request future releases it too. A completed id: `200` with
//!    `qstash-duplicate: true` and `{"duplicate":true,"messageId":"…"}`, the inner service is
//!    not called. Held elsewhere: `409` + `Retry-After`; store down: `503` + `Retry-After`
//!    (fail closed), answered like the other refusals. Without deduplication, none of this
//!    runs (no claim, no allocation).
//! 5. Every refusal is a response (`type Error = S::Error`): [`Rejection::status`], its
//!    [`headers`](Rejection::headers) and its JSON [`body`](Rejection::json_body), unless
//!    replaced with [`QStashLayer::on_rejection`]. Each is logged with `tracing` with its code,
//!    status and the message id (escaped, at most 256 bytes; never the token nor the body), the
//!    same way in every adapter: `debug` until the token verified (a missing, malformed,
//!    invalid or expired signature: anyone can send those), then `warn`, `info` for a body that
//!    could not be read or a message in progress elsewhere, `error` for a misconfiguration or a
//!    deduplication store down (see the [crate docs](crate#logging)).
//! 6. A 413 (a verified token, a body over the limit) first **drains** the rest of the upload:
//!    read and dropped frame by frame (O(1) memory), until it ends or
//!    [`QStashLayer::drain_limit`] bytes (default 64 MiB) were read, then the answer goes out.
//!    Otherwise hyper would close the connection with the upload unread, the kernel would
//!    reset it, and a client still sending could lose its answer. HTTP/1 only, and never for
//!    an unauthenticated request (answered at once); see [`QStashLayer::drain_limit`].
//! 7. A response of the inner service is passed through as it is, but one: when the receiver
//!    is configured with [`Receiver::non_retryable_invalid_payload`], an answer of 400, 415 or
//!    422 (what axum's `Json`, `Form` and `Query` answer a body they cannot use with) becomes
//!    489 with `Upstash-NonRetryable-Error: true`: the body is verified, so retrying it cannot
//!    help, and QStash moves the message to the dead-letter queue at once instead of retrying
//!    it until it gets there.
//!
//! The URL policy is the [`Receiver`]'s: **unconfigured by default, which refuses every delivery
//! signed with the receiver's keys with 500 `misconfigured`** (QStash retries; the check is
//! never skipped silently; anyone else gets a 401 and no error in the logs). Choose one
//! with [`Receiver::public_url`], [`Receiver::expected_url`] or [`Receiver::url_policy`].

mod body;
pub(crate) mod drain;
mod future;
mod layer;
mod service;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Uri};

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::QStashLayer;
pub use service::QStash;

pub(crate) use layer::Config;

use crate::Rejection;
use crate::head::{Answer, RequestHead};
#[cfg(doc)]
use crate::{Delivery, Receiver};

/// The error type the request body's errors must convert into.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Inserted by the layer into the extensions of each request it verified: the extractors above
/// it trust it instead of verifying twice, and use the layer's receiver. Private: it cannot be
/// forged by a client or another layer. (Read only by the extractors of a framework above the
/// layer: without one, nobody reads it.)
#[derive(Clone, Debug)]
#[allow(dead_code)]
pub(crate) struct VerifiedByLayer(pub(crate) Arc<Config>);

/// An `http` 1 request head, as the core reads it ([`RequestHead`]).
#[derive(Clone, Copy)]
pub(crate) struct Head<'a> {
    pub(crate) method: &'a http::Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) extensions: &'a http::Extensions,
}

impl<'a> Head<'a> {
    /// The head of `req`.
    pub(crate) fn of<B>(req: &'a http::Request<B>) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }
}

impl RequestHead for Head<'_> {
    fn method(&self) -> &str {
        self.method.as_str()
    }

    /// The original URI's (before a router above stripped a prefix), else the request's.
    fn path_and_query(&self) -> Option<&str> {
        crate::original_uri(self.extensions)
            .unwrap_or(self.uri)
            .path_and_query()
            .map(http::uri::PathAndQuery::as_str)
    }

    fn scheme(&self) -> Option<&str> {
        self.uri.scheme_str()
    }

    fn authority(&self) -> Option<&str> {
        self.uri.authority().map(http::uri::Authority::as_str)
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name).map(HeaderValue::as_bytes)
    }

    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))
    }
}

/// The core's answer as an `http` 1 response.
pub(crate) fn response(answer: Answer) -> http::Response<Bytes> {
    let mut response = http::Response::new(Bytes::from(answer.body));
    *response.status_mut() = http::StatusCode::from_u16(answer.status)
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in answer.headers {
        if let Ok(value) = HeaderValue::try_from(value) {
            headers.insert(name, value);
        }
    }
    response
}

/// The shared JSON answer to a rejection: status, headers, `{"error","message"}` body.
pub(crate) fn json_response(rejection: &Rejection) -> http::Response<Bytes> {
    response(Answer::rejection(rejection))
}

/// The announced body length, when there is a valid one.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    crate::head::content_length(
        headers
            .get(http::header::CONTENT_LENGTH)
            .map(HeaderValue::as_bytes),
    )
}
