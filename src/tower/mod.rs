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
//!         // Only verified deliveries get here: the verified bytes, `Delivery` and `Claims`.
//!         let id = req.extensions().get::<Delivery>().and_then(|d| d.message_id()).map(str::to_owned);
//!         Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(id.unwrap_or_default()))))
//!     }));
//!
//! // A delivery signed as QStash signs it:
//! let delivery = Signer::new("sig_current").delivery("https://app.example.com/jobs", b"{}");
//! let response = service.clone().oneshot(delivery.to_http_request()?).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.into_body().collect().await?.to_bytes(), delivery.message_id);
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
//!    URL from the [`UrlPolicy`](crate::UrlPolicy)) and the delivery headers
//!    ([`Receiver::check_request`]). The URL policy sees the request's original path and query
//!    (under axum, before any `nest` stripped a prefix), `Host` and the first
//!    `X-Forwarded-Proto` / `X-Forwarded-Host` values.
//! 2. The body, read under the limit (like [`http_body_util::Limited`], chunked bodies too):
//!    413 by `Content-Length` without reading, or once it exceeds the limit.
//! 3. The body hash ([`Receiver::check_body`]). The inner service gets the request's own parts
//!    (extensions kept) with the verified bytes as a [`Full<Bytes>`](http_body_util::Full) body
//!    (for `Json`, `Bytes`, `String` extractors) and [`Claims`](crate::Claims) and [`Delivery`]
//!    in its extensions.
//! 4. With deduplication ([`Receiver::dedup`], see [`crate::dedup`]): a new message id runs the
//!    inner service under a lease, completed by a 2xx and released by anything else (an `Err`,
//!    a panic, a dropped future) before the response goes out. A completed id: `200` with
//!    `qstash-duplicate: true` and `{"duplicate":true,"messageId":"…"}`, without calling the
//!    inner service. Held elsewhere: `409` + `Retry-After`; store down: `503` + `Retry-After`.
//! 5. Every refusal is a response (`type Error = S::Error`): [`Rejection::status`],
//!    [`headers`](Rejection::headers) and JSON [`body`](Rejection::json_body), or
//!    [`QStashLayer::on_rejection`]'s; logged as the [crate docs](crate#logging) say (never the
//!    token nor the body). A 413 of a verified token first drains the upload
//!    ([`QStashLayer::drain_limit`]).
//! 6. The inner service's response goes out as it is, but with
//!    [`Receiver::non_retryable_invalid_payload`] a 400, 415 or 422 (axum's `Json`, `Form`,
//!    `Query` rejections) becomes 489 with `Upstash-NonRetryable-Error: true`: the body is
//!    verified, retrying cannot help, so QStash dead-letters the message at once.
//!
//! The URL policy is the [`Receiver`]'s: **unconfigured by default, which refuses every delivery
//! signed with the receiver's keys with 500 `misconfigured`** (QStash retries; anyone else gets a
//! 401). Choose one with [`Receiver::public_url`], [`Receiver::expected_url`] or
//! [`Receiver::url_policy`].

mod body;
pub(crate) mod drain;
mod future;
mod layer;
mod service;

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;

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

/// The layer's mark on each request it verified: the axum extractors above it trust it (and use
/// its receiver) instead of verifying again. Private: no client nor other layer can forge it.
#[derive(Clone, Debug)]
#[allow(dead_code)]
pub(crate) struct VerifiedByLayer(pub(crate) Arc<Config>);

/// An `http` 1 request's head, as the core reads it ([`RequestHead`]).
pub(crate) struct Head<'a, B>(&'a http::Request<B>);

impl<'a, B> Head<'a, B> {
    /// The head of `req`.
    pub(crate) fn of(req: &'a http::Request<B>) -> Self {
        Self(req)
    }
}

impl<B> RequestHead for Head<'_, B> {
    fn method(&self) -> &str {
        self.0.method().as_str()
    }

    /// The original URI's (before a router above stripped a prefix), else the request's.
    fn path_and_query(&self) -> Option<&str> {
        crate::original_uri(self.0.extensions())
            .unwrap_or(self.0.uri())
            .path_and_query()
            .map(http::uri::PathAndQuery::as_str)
    }

    fn scheme(&self) -> Option<&str> {
        self.0.uri().scheme_str()
    }

    fn authority(&self) -> Option<&str> {
        self.0.uri().authority().map(http::uri::Authority::as_str)
    }

    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0.headers().get(name).map(HeaderValue::as_bytes)
    }

    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
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
