//! [`Verified<T>`]: any body extractor, over a verified delivery.

use std::fmt;
use std::time::SystemTime;

use axum::RequestExt as _;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::ReceiverState;
use crate::head::RequestHead as _;
use crate::log::refusal;
use crate::tower::drain::{ReadBody, check_read};
use crate::tower::{Head, VerifiedByLayer};
use crate::{Receiver, Rejection};

/// Extracts `T` (`Json<_>`, `Bytes`, `String`, `Form<_>`… any body extractor) from a verified
/// QStash delivery.
///
/// - Behind [`QStashLayer`](crate::tower::QStashLayer), the layer's verdict is trusted (no
///   second verification) and `T` runs on the verified body.
///   The router needs no state for it (see [`ReceiverState`]).
/// - Without the layer, it verifies by itself with the [`Receiver`] taken from the router's
///   state (`Receiver: FromRef<S>`, see [`ReceiverState`]): the token before reading the body, then the body read
///   under both axum's `DefaultBodyLimit` and the receiver's limit (413 past either), then the
///   body hash. `T` runs on a request rebuilt with the verified bytes, with
///   [`Claims`](crate::Claims) and [`Delivery`](crate::Delivery) in its extensions.
///
/// Refusals are a [`VerifiedRejection`].
///
/// Alone, it does **not** deduplicate: an extractor runs before the handler and cannot see its
/// response, which decides whether the message id is completed or released. Put
/// [`QStashLayer`](crate::tower::QStashLayer), built from a receiver with [`Receiver::dedup`],
/// in front of the routes for that.
///
/// ```
/// use axum::{Json, Router, extract::FromRef, routing::post};
/// use qstash_receiver::{Receiver, SigningKeys, UrlPolicy, Verifier, axum::Verified};
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64 }
///
/// #[derive(Clone)]
/// struct AppState { receiver: Receiver }
///
/// impl FromRef<AppState> for Receiver {
///     fn from_ref(state: &AppState) -> Receiver { state.receiver.clone() }
/// }
///
/// async fn orders(Verified(Json(order)): Verified<Json<Order>>) -> String {
///     format!("order {}", order.id)
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
///     .url_policy(UrlPolicy::public_base("https://app.example.com")?);
/// let app: Router = Router::new().route("/orders", post(orders)).with_state(AppState { receiver });
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified<T>(pub T);

impl<T> std::ops::Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Why [`Verified<T>`] refused a request.
#[derive(Debug)]
#[non_exhaustive]
pub enum VerifiedRejection<R> {
    /// The request is not a verified QStash delivery (answered as the [`Rejection`]).
    Rejected(Rejection),
    /// The delivery verified, but the inner extractor refused its body. A refusal of the
    /// payload (the inner rejection answers 400, 415 or 422: axum's `Json`, `Form`, `Query`) is
    /// answered as [`Rejection::InvalidPayload`], like every adapter of this crate answers it:
    /// JSON `invalid_payload`, 400, or 489 with `Upstash-NonRetryable-Error: true` when the
    /// receiver is configured with [`Receiver::non_retryable_invalid_payload`] (retrying cannot
    /// fix a verified body). Any other inner rejection keeps its own response.
    Payload {
        /// The inner extractor's rejection.
        rejection: R,
        /// Whether a payload refusal is answered 489 (non-retryable).
        non_retryable: bool,
    },
}

impl<R> VerifiedRejection<R> {
    /// The verification rejection, when the request did not verify.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Self::Rejected(r) => Some(r),
            Self::Payload { .. } => None,
        }
    }
}

impl<R: fmt::Display> fmt::Display for VerifiedRejection<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(r) => r.fmt(f),
            Self::Payload { rejection, .. } => write!(f, "verified payload refused: {rejection}"),
        }
    }
}

impl<R> std::error::Error for VerifiedRejection<R>
where
    R: std::error::Error + 'static,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Rejected(r) => Some(r),
            Self::Payload { rejection, .. } => Some(rejection),
        }
    }
}

impl<R: IntoResponse> IntoResponse for VerifiedRejection<R> {
    fn into_response(self) -> Response {
        match self {
            Self::Rejected(r) => r.into_response(),
            Self::Payload {
                rejection,
                non_retryable,
            } => {
                let response = rejection.into_response();
                let status = response.status().as_u16();
                if !crate::head::is_payload_refusal(status) {
                    return response;
                }
                // The inner rejection's text may quote the body: only its status is kept.
                let rejection = Rejection::InvalidPayload {
                    message: format!("the route's extractor refused the verified body ({status})"),
                    non_retryable,
                };
                refusal(&rejection, None);
                rejection.into_response()
            }
        }
    }
}

impl<S, T> FromRequest<S> for Verified<T>
where
    S: ReceiverState + Send + Sync,
    T: FromRequest<S>,
{
    type Rejection = VerifiedRejection<T::Rejection>;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (req, receiver) = verified_request(req, state, false)
            .await
            .map_err(VerifiedRejection::Rejected)?;
        let non_retryable = receiver.get_non_retryable_invalid_payload();
        T::from_request(req, state)
            .await
            .map(Verified)
            .map_err(|rejection| VerifiedRejection::Payload {
                rejection,
                non_retryable,
            })
    }
}

/// The request with a verified body, and the receiver that answers for it: the layer's when the
/// layer verified it, else a verification with the state's receiver (for a callback: with its
/// callback limit, [`Receiver::for_callbacks`]).
pub(crate) async fn verified_request<S>(
    req: Request,
    state: &S,
    callback: bool,
) -> Result<(Request, Receiver), Rejection>
where
    S: ReceiverState + Send + Sync,
{
    if let Some(VerifiedByLayer(config)) = req.extensions().get::<VerifiedByLayer>() {
        let receiver = config.receiver.clone();
        return Ok((req, receiver));
    }
    let Some(receiver) = state.receiver() else {
        return Err(no_receiver(&req));
    };
    let receiver = if callback {
        receiver.for_callbacks()
    } else {
        receiver
    };
    let span = crate::head::span(&Head::of(&req));
    verify_alone(req, receiver).instrument(span).await
}

/// The standalone verification (no layer in front), inside the delivery's span.
async fn verify_alone(req: Request, receiver: Receiver) -> Result<(Request, Receiver), Rejection> {
    let head = crate::head::check_head(&receiver, &Head::of(&req), SystemTime::now());
    let (token, delivery) = match head {
        Ok(checked) => checked,
        Err(rejection) => {
            refusal(&rejection, Head::of(&req).message_id());
            return Err(rejection);
        }
    };
    // axum's `DefaultBodyLimit` (through its own limited body), then the receiver's limit.
    let (mut parts, body) = req.with_limited_body().into_parts();
    // No draining here: axum's own body handling follows the extractor.
    let read = ReadBody::collect(body, receiver.get_max_body_bytes(), 0).await;
    let checked = check_read(&receiver, token, read);
    match checked {
        Ok((bytes, claims)) => {
            parts.extensions.insert(claims);
            parts.extensions.insert(delivery);
            Ok((Request::from_parts(parts, Body::from(bytes)), receiver))
        }
        Err(rejection) => {
            refusal(&rejection, delivery.message_id().map(str::as_bytes));
            Err(rejection)
        }
    }
}

/// Neither the layer nor the state can verify: a mistake in the router's set-up, refused as
/// `misconfigured` (500, so QStash retries once it is fixed).
fn no_receiver(req: &Request) -> Rejection {
    let rejection = Rejection::Misconfigured(
        "this route has no QStashLayer and the router's state has no Receiver (add \
         `.route_layer(QStashLayer::new(receiver))`, or implement `FromRef<YourState> for Receiver`)"
            .to_owned(),
    );
    crate::log::unchecked_misconfiguration(&rejection, Head::of(req).message_id());
    rejection
}
