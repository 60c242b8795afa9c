//! Extractors: [`Verified<T>`], [`Callback`], [`FailureCallback`], [`Delivery`], [`Claims`].

use std::future::{Ready, ready};
use std::ops::Deref;
use std::sync::Arc;

use actix_web::body::BoxBody;
use actix_web::error::{JsonPayloadError, PayloadError};
use actix_web::http::StatusCode;
use actix_web::{
    FromRequest, HttpMessage as _, HttpRequest, HttpResponse, ResponseError, dev, web,
};
use futures_util::future::{FutureExt as _, LocalBoxFuture, TryFutureExt as _};
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use super::{Head, RejectionHandler, Setup, payload_error, read_limited, respond, verify};
use crate::callback::json_error_summary;
use crate::head::RequestHead as _;
use crate::{CallbackEvent, Claims, Delivery, FailureCallbackEvent, Receiver, Rejection};

/// The error of this module's extractors: a [`Rejection`], answered as the middleware answers it
/// (with its [`RejectionHandler`], else one registered as app data).
#[derive(Debug, thiserror::Error)]
#[error("{rejection}")]
pub struct QStashRejection {
    #[source]
    rejection: Rejection,
    handler: Option<RejectionHandler>,
}

impl QStashRejection {
    fn new(rejection: Rejection, req: &HttpRequest, handler: Option<RejectionHandler>) -> Self {
        crate::log::refusal(&rejection, Head::of(req).message_id());
        Self { rejection, handler }
    }

    /// A misconfiguration found before any token could be checked (no middleware, no receiver),
    /// logged so that callers cannot fill the logs with errors.
    fn misconfigured(message: String, req: &HttpRequest) -> Self {
        let rejection = Rejection::Misconfigured(message);
        crate::log::unchecked_misconfiguration(&rejection, Head::of(req).message_id());
        let handler = RejectionHandler::from_app_data(req);
        Self { rejection, handler }
    }

    /// Why the request was refused.
    pub fn rejection(&self) -> &Rejection {
        &self.rejection
    }

    /// The rejection, without the response handler.
    pub fn into_rejection(self) -> Rejection {
        self.rejection
    }
}

impl ResponseError for QStashRejection {
    fn status_code(&self) -> StatusCode {
        self.rejection.status_code()
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        respond(&self.rejection, self.handler.as_ref())
    }
}

/// A body extractor `T` (`web::Json<U>`, `web::Bytes`, `String`, …) run on a **verified** body.
///
/// Under [`QStashMiddleware`](super::QStashMiddleware) it just runs `T`. Alone, it verifies as
/// the middleware does with the [`Receiver`] in app data (`web::Data<Receiver>` or a `Receiver`;
/// none: 500 `misconfigured`), leaves [`Claims`] and [`Delivery`] in the request extensions and
/// runs `T` (under `web::JsonConfig`, `web::PayloadConfig`), but does **not** deduplicate (it
/// cannot see the handler's response). A body `T` refuses is [`Receiver::invalid_payload`].
///
/// ```
/// use actix_web::{App, HttpResponse, web};
/// use qstash_receiver::{Receiver, SigningKeys, Verifier, actix::Verified};
///
/// #[derive(serde::Deserialize)]
/// struct Job { task: String }
///
/// async fn job(Verified(job): Verified<web::Json<Job>>) -> HttpResponse {
///     HttpResponse::Ok().body(job.into_inner().task)
/// }
///
/// # fn main() -> Result<(), qstash_receiver::KeyError> {
/// let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
///     .expected_url("https://app.example.com/jobs");
/// let app = App::new().app_data(web::Data::new(receiver)).route("/jobs", web::post().to(job));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verified<T>(pub T);

impl<T> Verified<T> {
    /// The inner extractor.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> FromRequest for Verified<T>
where
    T: FromRequest + 'static,
{
    type Error = QStashRejection;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut dev::Payload) -> Self::Future {
        let (req, payload) = (req.clone(), payload.take());
        Box::pin(async move {
            let (mut payload, receiver, handler) =
                verified_payload(&req, payload, |receiver| receiver).await?;
            T::from_request(&req, &mut payload)
                .await
                .map(Verified)
                .map_err(|e| QStashRejection::new(inner_error(e.into(), &receiver), &req, handler))
        })
    }
}

/// A verified [`CallbackEvent`] (the body of a delivery to an `Upstash-Callback` URL), verified
/// like [`Verified<T>`] and parsed from JSON whatever its `Content-Type` (else
/// [`Receiver::invalid_payload`]). It carries two bodies in base64: alone, it reads up to
/// [`Receiver::get_callback_max_body_bytes`] (not `web::PayloadConfig`'s limit); under the
/// middleware, build that one's receiver with [`Receiver::for_callbacks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback(pub CallbackEvent);

/// A verified [`FailureCallbackEvent`] (the body of a delivery to an `Upstash-Failure-Callback`
/// URL, once a message failed for good): like [`Callback`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureCallback(pub FailureCallbackEvent);

/// `Deref` to the event, and `FromRequest` through [`verified_json`].
macro_rules! event_extractor {
    ($($name:ident($event:ty): $what:literal),*) => {$(
        impl Deref for $name {
            type Target = $event;
            fn deref(&self) -> &$event {
                &self.0
            }
        }

        impl FromRequest for $name {
            type Error = QStashRejection;
            type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

            fn from_request(req: &HttpRequest, payload: &mut dev::Payload) -> Self::Future {
                let event = verified_json(req.clone(), payload.take(), $what);
                event.map_ok($name).boxed_local()
            }
        }
    )*};
}

event_extractor!(
    Callback(CallbackEvent): "a qstash callback event",
    FailureCallback(FailureCallbackEvent): "a qstash failure callback event"
);

/// `FromRequest` for what the middleware leaves in the request extensions.
macro_rules! from_middleware {
    ($($name:ident),*) => {$(
        #[doc = concat!("The verified [`", stringify!($name), "`] left by [`QStashMiddleware`]",
            "(super::QStashMiddleware); without it: 500 `misconfigured` (QStash retries).")]
        impl FromRequest for $name {
            type Error = QStashRejection;
            type Future = Ready<Result<Self, Self::Error>>;

            fn from_request(req: &HttpRequest, _: &mut dev::Payload) -> Self::Future {
                let found = req.extensions().get::<$name>().cloned();
                ready(found.ok_or_else(|| {
                    let what = stringify!($name);
                    let message = format!("no verified {what} in the request: wrap the route in QStashMiddleware");
                    QStashRejection::misconfigured(message, req)
                }))
            }
        }
    )*};
}

from_middleware!(Delivery, Claims);

/// The verified body parsed as JSON, read under the receiver's (callback) limit: under
/// `web::PayloadConfig`'s 256 KiB, a callback about a message of ~190 KiB would always fail.
async fn verified_json<T: DeserializeOwned>(
    req: HttpRequest,
    payload: dev::Payload,
    what: &'static str,
) -> Result<T, QStashRejection> {
    let (mut payload, receiver, handler) =
        verified_payload(&req, payload, Receiver::for_callbacks).await?;
    let body = read_limited(&mut payload, &receiver, None).await;
    body.and_then(|body| {
        serde_json::from_slice(&body)
            .map_err(|e| receiver.invalid_payload(json_error_summary(what, &e)))
    })
    .map_err(|rejection| QStashRejection::new(rejection, &req, handler))
}

/// The verified payload, the receiver that answers for it and the response handler: as the
/// middleware left them, or verified here with the receiver from app data, `adapt`ed (for a
/// callback: [`Receiver::for_callbacks`]).
async fn verified_payload(
    req: &HttpRequest,
    mut payload: dev::Payload,
    adapt: fn(Receiver) -> Receiver,
) -> Result<(dev::Payload, Receiver, Option<RejectionHandler>), QStashRejection> {
    let handler = RejectionHandler::from_app_data(req);
    let verdict = req.extensions().get::<Arc<Setup>>().cloned();
    if let Some(setup) = verdict {
        let handler = setup.handler.clone().or(handler);
        return Ok((payload, setup.receiver.clone(), handler));
    }
    let receiver = req.app_data::<web::Data<Receiver>>().map(|d| d.get_ref());
    let Some(receiver) = receiver.or_else(|| req.app_data::<Receiver>()).cloned() else {
        let message = "no Receiver in app data: register web::Data<Receiver> or wrap the route \
                       in QStashMiddleware";
        return Err(QStashRejection::misconfigured(message.to_owned(), req));
    };
    let receiver = adapt(receiver);
    async move {
        match verify(&receiver, req, &mut payload).await {
            Ok((body, claims, delivery)) => {
                req.extensions_mut().insert(claims);
                req.extensions_mut().insert(delivery);
                Ok((dev::Payload::from(body), receiver, handler))
            }
            Err(rejection) => Err(QStashRejection::new(rejection, req, handler)),
        }
    }
    .instrument(crate::head::span(&Head::of(req)))
    .await
}

/// What an inner extractor's error means here: a read error, a limit (413), or a body that does
/// not parse.
fn inner_error(e: actix_web::Error, receiver: &Receiver) -> Rejection {
    if let Some(payload) = e.as_error::<PayloadError>() {
        return payload_error(payload, receiver);
    }
    match e.as_error::<JsonPayloadError>() {
        // serde's message may quote the body: its category and position only.
        Some(JsonPayloadError::Deserialize(json)) => {
            receiver.invalid_payload(json_error_summary("the route's JSON type", json))
        }
        // `web::JsonConfig`'s limit, not the receiver's.
        Some(
            JsonPayloadError::Overflow { limit }
            | JsonPayloadError::OverflowKnownLength { limit, .. },
        ) => Rejection::PayloadTooLarge { limit: *limit },
        _ if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE => {
            receiver.too_large()
        }
        _ => receiver.invalid_payload(e.to_string()),
    }
}
