//! [`Callback`] and [`FailureCallback`]: verified callback deliveries, parsed.

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::ReceiverState;
use super::verified::verified_request;
use crate::{CallbackEvent, FailureCallbackEvent, Rejection};

/// A verified QStash callback (sent after each delivery attempt), parsed. Verifies as
/// [`Verified`](super::Verified) does (trusting [`QStashLayer`](crate::tower::QStashLayer) when
/// it ran, else with the state's [`Receiver`](crate::Receiver)). A verified body that is not a
/// callback event is answered with
/// [`Receiver::invalid_payload`](crate::Receiver::invalid_payload): 400, or 489 when configured
/// non-retryable.
///
/// Size: a callback carries the message's body and the response's body in base64, so it is
/// larger than the message. Verifying by itself, this extractor reads up to the receiver's
/// [callback limit](crate::Receiver::get_callback_max_body_bytes) (3 × its body limit unless
/// set), still under axum's `DefaultBodyLimit` (2 MB unless configured: raise it on callback
/// routes, e.g. `DefaultBodyLimit::max(receiver.get_callback_max_body_bytes())`). Behind the
/// layer, the layer's receiver limit applies: build the layer of callback routes with
/// [`Receiver::for_callbacks`](crate::Receiver::for_callbacks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback(pub CallbackEvent);

/// A verified QStash failure callback (sent once a message failed for good), parsed. Same rules
/// as [`Callback`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureCallback(pub FailureCallbackEvent);

async fn event<T, S>(req: Request, state: &S, what: &str) -> Result<T, Rejection>
where
    T: DeserializeOwned,
    S: ReceiverState + Send + Sync,
{
    let (req, receiver) = verified_request(req, state, true).await?;
    let bytes = axum::body::to_bytes(req.into_body(), receiver.get_max_body_bytes())
        .await
        .map_err(|_| Rejection::BodyRead("the verified body could not be read".to_owned()))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        let rejection = receiver.invalid_payload(crate::callback::json_error_summary(
            &format!("a qstash {what}"),
            &e,
        ));
        crate::log::refusal(&rejection, None);
        rejection
    })
}

impl<S> FromRequest<S> for Callback
where
    S: ReceiverState + Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        event(req, state, "callback event").await.map(Callback)
    }
}

impl<S> FromRequest<S> for FailureCallback
where
    S: ReceiverState + Send + Sync,
{
    type Rejection = Rejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        event(req, state, "failure callback event")
            .await
            .map(FailureCallback)
    }
}
