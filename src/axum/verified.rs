//! The body extractors: [`Verified<T>`] (any body extractor, over a verified delivery),
//! [`Callback`] and [`FailureCallback`].

use std::time::SystemTime;

use axum::RequestExt as _;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::response::{IntoResponse, Response};
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
/// Behind [`QStashLayer`](crate::tower::QStashLayer), `T` runs on the body the layer verified
/// (the router needs no state). Without the layer, it verifies as the layer does (the token
/// before any body byte is read) with the [`Receiver`] of the router's state ([`ReceiverState`]),
/// the body under axum's `DefaultBodyLimit` too (413 past either limit), and leaves
/// [`Claims`](crate::Claims) and [`Delivery`](crate::Delivery) in the request extensions; it does
/// **not** deduplicate (an extractor cannot see the handler's response): put the layer in front.
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
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifiedRejection<R> {
    /// The request is not a verified QStash delivery (answered as the [`Rejection`]).
    #[error("{0}")]
    Rejected(#[source] Rejection),
    /// The delivery verified, but the inner extractor refused its body: a payload refusal (400,
    /// 415, 422: axum's `Json`, `Form`, `Query`) is answered as [`Rejection::InvalidPayload`]
    /// (see [`Receiver::non_retryable_invalid_payload`]), any other with its own response.
    #[error("verified payload refused: {rejection}")]
    Payload {
        /// The inner extractor's rejection.
        #[source]
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

impl<R: IntoResponse> IntoResponse for VerifiedRejection<R> {
    fn into_response(self) -> Response {
        let (response, non_retryable) = match self {
            Self::Rejected(r) => return r.into_response(),
            Self::Payload {
                rejection,
                non_retryable,
            } => (rejection.into_response(), non_retryable),
        };
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
        let verified = verified_request(req, state, |receiver| receiver).await;
        let (req, receiver) = verified.map_err(VerifiedRejection::Rejected)?;
        let non_retryable = receiver.get_non_retryable_invalid_payload();
        let inner = T::from_request(req, state).await;
        inner
            .map(Verified)
            .map_err(|rejection| VerifiedRejection::Payload {
                rejection,
                non_retryable,
            })
    }
}

/// A verified QStash callback (sent after each delivery attempt), parsed; a verified body that
/// is not a callback event is [`Receiver::invalid_payload`]. Verified as [`Verified`] verifies, up
/// to the receiver's [callback limit](Receiver::get_callback_max_body_bytes) (a callback carries
/// two bodies in base64): alone, under axum's `DefaultBodyLimit` too (2 MB unless raised on
/// callback routes); behind the layer, build the layer of callback routes with
/// [`Receiver::for_callbacks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback(pub CallbackEvent);

/// A verified QStash failure callback (sent once a message failed for good), parsed, as
/// [`Callback`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureCallback(pub FailureCallbackEvent);

/// `FromRequest`: the verified body, parsed as the event (`$what`, for the refusal's message).
macro_rules! event_extractor {
    ($($name:ident: $what:literal),*) => {$(
        impl<S: ReceiverState + Send + Sync> FromRequest<S> for $name {
            type Rejection = Rejection;

            async fn from_request(req: Request, state: &S) -> Result<Self, Rejection> {
                let (req, receiver) = verified_request(req, state, Receiver::for_callbacks).await?;
                let limit = receiver.get_max_body_bytes();
                let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| {
                    Rejection::BodyRead("the verified body could not be read".to_owned())
                })?;
                serde_json::from_slice(&bytes).map($name).map_err(|e| {
                    let summary = crate::callback::json_error_summary($what, &e);
                    let rejection = receiver.invalid_payload(summary);
                    refusal(&rejection, None);
                    rejection
                })
            }
        }
    )*};
}

event_extractor!(
    Callback: "a qstash callback event",
    FailureCallback: "a qstash failure callback event"
);

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
    let receiver = adapt(receiver);
    async move {
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
    .instrument(span)
    .await
}
