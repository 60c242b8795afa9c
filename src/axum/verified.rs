//! The body extractors: [`Verified<T>`] (any body extractor, over a verified delivery),
//! [`Callback`] and [`FailureCallback`].

use std::fmt;
use std::time::SystemTime;

use axum::RequestExt as _;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use super::ReceiverState;
use crate::head::RequestHead as _;
use crate::log::refusal;
use crate::tower::drain::{check_read, collect};
use crate::tower::{Head, VerifiedByLayer};
use crate::{CallbackEvent, FailureCallbackEvent, Receiver, Rejection};

/// Extracts `T` (`Json<_>`, `Bytes`, `String`, `Form<_>`… any body extractor) from a verified
/// QStash delivery; refusals are a [`VerifiedRejection`].
///
/// Behind [`QStashLayer`](crate::tower::QStashLayer), the layer's verdict is trusted and `T`
/// runs on the verified body (the router needs no state). Without the layer, it verifies by
/// itself with the [`Receiver`] of the router's state ([`ReceiverState`]): the token before
/// reading the body, the body under axum's `DefaultBodyLimit` and the receiver's limit (413 past
/// either), its hash; `T` then runs on the verified bytes, with [`Claims`](crate::Claims) and
/// [`Delivery`](crate::Delivery) in the request extensions. Alone, it does **not** deduplicate
/// (an extractor cannot see the handler's response): put the layer in front for that.
///
/// ```
/// use axum::{Json, Router, routing::post};
/// use qstash_receiver::{Receiver, axum::Verified};
///
/// async fn orders(Verified(Json(order)): Verified<Json<serde_json::Value>>) -> String {
///     format!("order {}", order["id"])
/// }
///
/// // No layer: the receiver is the state (or `Receiver: FromRef<YourState>`).
/// fn app(receiver: Receiver) -> Router {
///     Router::new().route("/orders", post(orders)).with_state(receiver)
/// }
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
    /// The delivery verified, but the inner extractor refused its body: a payload refusal (400,
    /// 415, 422: axum's `Json`, `Form`, `Query`) is answered as [`Rejection::InvalidPayload`]
    /// (see [`Receiver::non_retryable_invalid_payload`]), any other with its own response.
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
        let (rejection, non_retryable) = match self {
            Self::Rejected(r) => return r.into_response(),
            Self::Payload {
                rejection,
                non_retryable,
            } => (rejection, non_retryable),
        };
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

impl<S, T> FromRequest<S> for Verified<T>
where
    S: ReceiverState + Send + Sync,
    T: FromRequest<S>,
{
    type Rejection = VerifiedRejection<T::Rejection>;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (req, receiver) = verified_request(req, state, |receiver| receiver)
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

/// A verified QStash callback (sent after each delivery attempt), parsed; a verified body that
/// is not a callback event is [`Receiver::invalid_payload`]. Verified as [`Verified`] verifies,
/// up to the receiver's
/// [callback limit](Receiver::get_callback_max_body_bytes) (a callback carries two bodies in
/// base64): alone, under axum's `DefaultBodyLimit` too (2 MB unless raised on callback routes);
/// behind the layer, build the layer of callback routes with [`Receiver::for_callbacks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback(pub CallbackEvent);

/// A verified QStash failure callback (sent once a message failed for good), parsed, as
/// [`Callback`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureCallback(pub FailureCallbackEvent);

/// The verified body, parsed as `T` (`what`, for the refusal's message).
async fn event<T, S>(req: Request, state: &S, what: &str) -> Result<T, Rejection>
where
    T: DeserializeOwned,
    S: ReceiverState + Send + Sync,
{
    let (req, receiver) = verified_request(req, state, Receiver::for_callbacks).await?;
    let bytes = axum::body::to_bytes(req.into_body(), receiver.get_max_body_bytes())
        .await
        .map_err(|_| Rejection::BodyRead("the verified body could not be read".to_owned()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let rejection = receiver.invalid_payload(crate::callback::json_error_summary(what, &e));
        crate::log::refusal(&rejection, None);
        rejection
    })
}

impl<S: ReceiverState + Send + Sync> FromRequest<S> for Callback {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Rejection> {
        event(req, state, "a qstash callback event")
            .await
            .map(Callback)
    }
}

impl<S: ReceiverState + Send + Sync> FromRequest<S> for FailureCallback {
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Rejection> {
        let event = event(req, state, "a qstash failure callback event").await;
        event.map(FailureCallback)
    }
}

/// The request with a verified body and the receiver that answers for it: the layer's, else the
/// state's, `adapt`ed ([`Receiver::for_callbacks`] for a callback), verifying here.
pub(crate) async fn verified_request<S>(
    req: Request,
    state: &S,
    adapt: fn(Receiver) -> Receiver,
) -> Result<(Request, Receiver), Rejection>
where
    S: ReceiverState + Send + Sync,
{
    if let Some(VerifiedByLayer(config)) = req.extensions().get::<VerifiedByLayer>() {
        let receiver = config.receiver.clone();
        return Ok((req, receiver));
    }
    let Some(receiver) = state.receiver() else {
        // A mistake in the router's set-up: 500, so QStash retries once it is fixed.
        let rejection = Rejection::Misconfigured(
            "this route has no QStashLayer and the router's state has no Receiver (add \
             `.route_layer(QStashLayer::new(receiver))`, or implement `FromRef<YourState> for Receiver`)"
                .to_owned(),
        );
        crate::log::unchecked_misconfiguration(&rejection, Head::of(&req).message_id());
        return Err(rejection);
    };
    let span = crate::head::span(&Head::of(&req));
    verify_alone(req, adapt(receiver)).instrument(span).await
}

/// The standalone verification (no layer in front), inside the delivery's span.
async fn verify_alone(req: Request, receiver: Receiver) -> Result<(Request, Receiver), Rejection> {
    let (token, delivery) = {
        // Not held across an await: `Head` borrows the request, whose body is not `Sync`.
        let head = Head::of(&req);
        crate::head::check_head(&receiver, &head, SystemTime::now())
            .inspect_err(|rejection| refusal(rejection, head.message_id()))?
    };
    // axum's `DefaultBodyLimit`, then the receiver's limit; no draining (axum's own follows).
    let (mut parts, body) = req.with_limited_body().into_parts();
    let read = collect(body, receiver.get_max_body_bytes(), 0).await;
    let (bytes, claims) = check_read(&receiver, token, read).inspect_err(|rejection| {
        refusal(rejection, delivery.message_id().map(str::as_bytes));
    })?;
    parts.extensions.insert(claims);
    parts.extensions.insert(delivery);
    Ok((Request::from_parts(parts, Body::from(bytes)), receiver))
}
