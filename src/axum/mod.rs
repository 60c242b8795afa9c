//! axum 0.8 extractors and responses for QStash deliveries (feature `axum`).
//!
//! With [`QStashLayer`](crate::tower::QStashLayer) on the routes (`Router::route_layer`), every
//! request is verified before the handler runs; handlers take axum's own `Json`, `Bytes`,
//! `String` and this module's extractors, which read what the layer left (no router state
//! needed). Without the layer, [`Verified<T>`], [`Callback`] and [`FailureCallback`] verify by
//! themselves with a [`Receiver`](crate::Receiver) from the state ([`ReceiverState`]);
//! [`Delivery`] and [`Claims`] need the layer. A refusal is the [`Rejection`]'s answer, as in
//! every adapter.
//!
//! A verified body the handler cannot use (refused by these extractors or axum's `Json`, `Form`,
//! `Query`) is answered 400, or 489, dead-lettered at once, with
//! [`Receiver::non_retryable_invalid_payload`](crate::Receiver::non_retryable_invalid_payload).
//! Handlers steer retries with [`NonRetryable`] (489) and [`RetryAfter`] (503 + `Retry-After`).
//!
//! ```
//! # #[cfg(feature = "test-utils")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Router, body::Body, http::Request, routing::post};
//! use qstash_receiver::{Delivery, Receiver, SigningKeys, Verifier, test_utils::Signer};
//! use qstash_receiver::{axum::NonRetryable, tower::QStashLayer};
//! use tower::ServiceExt;
//!
//! async fn jobs(delivery: Delivery, task: String) -> Result<String, NonRetryable> {
//!     match task.as_str() {
//!         "mail" => Ok(format!("attempt {} of {}", delivery.retried(), delivery.message_id().unwrap_or("-"))),
//!         other => Err(NonRetryable(format!("unknown task {other}"))),
//!     }
//! }
//!
//! let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
//!     .public_url("https://app.example.com")?;
//! let app = Router::new().route("/jobs", post(jobs)).route_layer(QStashLayer::new(receiver));
//!
//! let delivery = Signer::new("sig_current").delivery("https://app.example.com/jobs", b"mail");
//! let response = app.clone().oneshot(delivery.to_http_request()?).await?;
//! assert_eq!(response.status(), 200);
//!
//! // Unsigned (or signed for another body): 401, the handler never runs.
//! let response = app.oneshot(Request::post("/jobs").body(Body::from("mail"))?).await?;
//! assert_eq!(response.status(), 401);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "test-utils"))]
//! # fn main() {}
//! ```

mod response;
mod state;
mod verified;

use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use http::request::Parts;

use crate::tower::json_response;
use crate::{Claims, Delivery, Rejection};

pub use response::{NonRetryable, RetryAfter};
pub use state::ReceiverState;
pub use verified::{Callback, FailureCallback, Verified, VerifiedRejection};

/// Every adapter's answer: [`Rejection::status`], [`Rejection::headers`], [`Rejection::json_body`].
impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        json_response(&self).map(Body::from)
    }
}

/// `T` as the layer left it in the request extensions; without the layer: 500 `misconfigured`.
fn from_layer<T: Clone + Send + Sync + 'static>(parts: &Parts, what: &str) -> Result<T, Rejection> {
    parts.extensions.get::<T>().cloned().ok_or_else(|| {
        let rejection = Rejection::Misconfigured(format!(
            "no verified {what} in the request: install qstash_receiver::tower::QStashLayer on this route"
        ));
        let message_id = parts.headers.get(crate::MESSAGE_ID_HEADER);
        crate::log::unchecked_misconfiguration(&rejection, message_id.map(|v| v.as_bytes()));
        rejection
    })
}

/// `FromRequestParts` through the `from_layer` function.
macro_rules! from_layer {
    ($($name:ident: $what:literal),*) => {$(
        #[doc = concat!("The verified [`", stringify!($name), "`], left by the layer; without it: 500 `misconfigured`.")]
        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = Rejection;

            async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Rejection> {
                from_layer(parts, $what)
            }
        }
    )*};
}

from_layer!(Claims: "claims", Delivery: "delivery");
