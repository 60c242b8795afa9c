//! axum 0.8 extractors and responses for QStash deliveries (feature `axum`).
//!
//! Two ways to verify, with the same answers:
//!
//! - [`QStashLayer`](crate::tower::QStashLayer) on the routes (`Router::route_layer`): every
//!   request is verified before routing reaches the handler; handlers use axum's own `Json`,
//!   `Bytes`, `String` on the verified body, and the [`Delivery`](crate::Delivery),
//!   [`Claims`](crate::Claims), [`Verified<T>`], [`Callback`] and [`FailureCallback`] extractors,
//!   which read what the layer left: the router needs no state.
//! - No layer: [`Verified<T>`], [`Callback`] or [`FailureCallback`] verify by themselves with a
//!   [`Receiver`](crate::Receiver) from the router's state (`Receiver: FromRef<S>`, see
//!   [`ReceiverState`]). ([`Delivery`](crate::Delivery) and [`Claims`](crate::Claims) need the
//!   layer.)
//!
//! Refusals answer with [`Rejection`](crate::Rejection)'s status, headers and JSON body
//! (`impl IntoResponse for Rejection`), exactly as the tower layer and the actix-web middleware.
//!
//! A verified body the handler cannot use (it does not parse, or has the wrong shape) is
//! answered 400 by default, and QStash retries it until it dead-letters. With
//! [`Receiver::non_retryable_invalid_payload`](crate::Receiver::non_retryable_invalid_payload)
//! it is answered **489** with `Upstash-NonRetryable-Error: true` (QStash dead-letters it at
//! once), both through this module's extractors ([`Verified<T>`], [`Callback`],
//! [`FailureCallback`]: JSON `invalid_payload`) and through axum's own `Json`, `Form` or `Query`
//! behind the layer (the layer turns their 400, 415 or 422 into 489).
//! Handlers can steer QStash's retries with [`NonRetryable`] (489, to the dead-letter queue) and
//! [`RetryAfter`] (503 + `Retry-After`).
//!
//! ```
//! # #[cfg(feature = "test-utils")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use axum::{Json, Router, body::Body, http::Request, routing::post};
//! use qstash_receiver::axum::NonRetryable;
//! use qstash_receiver::tower::QStashLayer;
//! use qstash_receiver::{Delivery, Receiver, SigningKeys, Verifier, test_utils::Signer};
//! use tower::ServiceExt;
//!
//! #[derive(serde::Deserialize)]
//! struct Job { task: String }
//!
//! async fn jobs(delivery: Delivery, Json(job): Json<Job>) -> Result<String, NonRetryable> {
//!     match job.task.as_str() {
//!         "mail" => Ok(format!("attempt {} of {}", delivery.retried(), delivery.message_id().unwrap_or("-"))),
//!         other => Err(NonRetryable(format!("unknown task {other}"))),
//!     }
//! }
//!
//! let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
//!     .public_url("https://app.example.com")?;
//! let app = Router::new()
//!     .route("/jobs", post(jobs))
//!     .route_layer(QStashLayer::new(receiver));
//!
//! let body = br#"{"task":"mail"}"#;
//! let delivery = Signer::new("sig_current").delivery("https://app.example.com/jobs", body);
//! let mut request = Request::post("/jobs").header("content-type", "application/json");
//! for (name, value) in &delivery.headers {
//!     request = request.header(name, value);
//! }
//! let response = app.clone().oneshot(request.body(Body::from(&body[..]))?).await?;
//! assert_eq!(response.status(), 200);
//!
//! // The same body, changed after signing: 401 `body_mismatch`, the handler never runs.
//! let mut request = Request::post("/jobs").header("content-type", "application/json");
//! for (name, value) in &delivery.headers {
//!     request = request.header(name, value);
//! }
//! let response = app.oneshot(request.body(Body::from(r#"{"task":"drop"}"#))?).await?;
//! assert_eq!(response.status(), 401);
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "test-utils"))]
//! # fn main() {}
//! ```

mod callback;
mod parts;
mod response;
mod state;
mod verified;

pub use callback::{Callback, FailureCallback};
pub use response::{NonRetryable, RetryAfter};
pub use state::ReceiverState;
pub use verified::{Verified, VerifiedRejection};

/// The URI the router received, before a `nest` stripped a prefix (axum's `OriginalUri`): the
/// path the tower layer checks the signed URL against.
pub(crate) fn original_uri(extensions: &http::Extensions) -> Option<&http::Uri> {
    extensions
        .get::<axum::extract::OriginalUri>()
        .map(|original| &original.0)
}
