//! Extractors: [`Verified<T>`], [`Callback`], [`FailureCallback`], [`Delivery`], [`Claims`].

use std::fmt;
use std::future::{Ready, ready};
use std::ops::Deref;

use actix_web::body::BoxBody;
use actix_web::error::{JsonPayloadError, PayloadError};
use actix_web::http::StatusCode;
use actix_web::{
    FromRequest, HttpMessage as _, HttpRequest, HttpResponse, ResponseError, dev, web,
};
use bytes::Bytes;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use tracing::Instrument as _;

use super::body::{payload_error, read_limited};
use super::{
    RejectionHandler, Verdict, log_rejection, message_id, respond, status_of, verify_payload,
};
use crate::callback::json_error_summary;
use crate::{CallbackEvent, Claims, Delivery, FailureCallbackEvent, Receiver, Rejection};

/// The error of this module's extractors: a [`Rejection`] answered like the middleware answers it
/// (its status, headers and JSON body), or with the [`RejectionHandler`] in effect for the
/// request (the middleware's, else one registered as app data).
#[derive(Debug)]
pub struct QStashRejection {
    rejection: Rejection,
    handler: Option<RejectionHandler>,
}

impl QStashRejection {
    fn new(rejection: Rejection, req: &HttpRequest, handler: Option<RejectionHandler>) -> Self {
        log_rejection(&rejection, req.headers());
        Self { rejection, handler }
    }

    /// A misconfiguration found before any token could be checked (no middleware, no receiver):
    /// logged so that callers cannot fill the logs with errors.
    fn misconfigured(
        rejection: Rejection,
        req: &HttpRequest,
        handler: Option<RejectionHandler>,
    ) -> Self {
        crate::log::unchecked_misconfiguration(&rejection, message_id(req.headers()));
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

impl fmt::Display for QStashRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.rejection.fmt(f)
    }
}

impl std::error::Error for QStashRejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.rejection)
    }
}

impl ResponseError for QStashRejection {
    fn status_code(&self) -> StatusCode {
        status_of(&self.rejection)
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        respond(&self.rejection, self.handler.as_ref())
    }
}

/// A body extractor `T` (`web::Json<U>`, `web::Bytes`, `String`, …) run on a **verified** body.
///
/// - Under [`QStashMiddleware`](super::QStashMiddleware) (which leaves its verdict in the request
///   extensions), the request is already verified: `Verified<T>` just runs `T`.
/// - Alone, it verifies by itself with the [`Receiver`] registered as app data, either
///   `web::Data<Receiver>` (`App::app_data(web::Data::new(receiver))`) or the `Receiver` itself
///   (`App::app_data(receiver)`); without one, it answers 500 `misconfigured`. Same steps as the
///   middleware: the token before reading the body, `Content-Length` over the limit → 413, then
///   the body is read as it came (not decompressed: QStash signs the bytes it sends) under the
///   receiver's limit, then the body hash. `T` then runs on that body with its own
///   configuration (`web::JsonConfig`, `web::PayloadConfig`: their limits and content types
///   apply too, a limit exceeded is a 413). [`Claims`] and [`Delivery`] are then in the request
///   extensions (`req.extensions().get::<Delivery>()`); the [`Delivery`] and [`Claims`]
///   *extractors* need the middleware, since they may run before this extractor has finished.
///
/// Alone, it does **not** deduplicate, even with a [`Receiver::dedup`]: an extractor runs
/// before the handler and cannot see its response, which decides whether the message id is
/// completed or released. Wrap the routes in [`QStashMiddleware`](super::QStashMiddleware) for
/// that.
///
/// A verified body that `T` refuses is answered with [`Receiver::invalid_payload`]: 400, or 489
/// with `Upstash-NonRetryable-Error: true` (QStash sends it to the dead-letter queue) when the
/// receiver is configured so; a `T` limit exceeded is a 413.
///
/// ```
/// # #[cfg(feature = "test-utils")] {
/// use actix_web::{App, HttpResponse, test, web};
/// use qstash_receiver::actix::Verified;
/// use qstash_receiver::{Receiver, SigningKeys, Verifier};
/// # use qstash_receiver::test_utils::Signer;
///
/// #[derive(serde::Deserialize)]
/// struct Job {
///     task: String,
/// }
///
/// async fn job(Verified(job): Verified<web::Json<Job>>) -> HttpResponse {
///     HttpResponse::Ok().body(job.into_inner().task)
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
///     .expected_url("https://app.example.com/jobs")
///     .non_retryable_invalid_payload(true);
/// let app = test::init_service(
///     App::new()
///         .app_data(web::Data::new(receiver))
///         .route("/jobs", web::post().to(job)),
/// )
/// .await;
///
/// // Signed, but not a `Job`: 489, QStash stops retrying.
/// let body = br#"{"nope":1}"#;
/// let delivery = Signer::new("sig_current").delivery("https://app.example.com/jobs", body);
/// let mut req = test::TestRequest::post().uri("/jobs").set_payload(&body[..]);
/// for (name, value) in &delivery.headers {
///     req = req.insert_header((name.as_str(), value.as_str()));
/// }
/// let req = req.insert_header(("content-type", "application/json")).to_request();
/// let res = test::call_service(&app, req).await;
/// assert_eq!(res.status(), 489);
/// assert_eq!(res.headers().get("upstash-nonretryable-error").unwrap(), "true");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
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
        let req = req.clone();
        let payload = payload.take();
        Box::pin(async move {
            let (mut payload, receiver, handler) = verified_payload(&req, payload, false).await?;
            match T::from_request(&req, &mut payload).await {
                Ok(inner) => Ok(Verified(inner)),
                Err(e) => {
                    let rejection = inner_error(e.into(), &receiver);
                    Err(QStashRejection::new(rejection, &req, handler))
                }
            }
        })
    }
}

/// A verified [`CallbackEvent`]: the body of a delivery to an `Upstash-Callback` URL, verified
/// like [`Verified<T>`] (with or without the middleware), then parsed from JSON whatever its
/// `Content-Type`. A body that is not a callback event is [`Receiver::invalid_payload`].
///
/// Size: a callback carries the message's body and the response's body in base64, so it is
/// larger than the message. Alone, this extractor reads up to the receiver's
/// [callback limit](Receiver::get_callback_max_body_bytes) (3 × its body limit unless set);
/// `web::PayloadConfig` does not apply. Under the middleware, the middleware's receiver limit
/// applies: wrap callback routes in a middleware built with [`Receiver::for_callbacks`].
///
/// ```
/// use actix_web::HttpResponse;
/// use qstash_receiver::actix::Callback;
///
/// async fn callback(Callback(event): Callback) -> HttpResponse {
///     if !event.is_success() {
///         tracing::warn!(message_id = %event.source_message_id, status = event.status, "delivery failed");
///     }
///     HttpResponse::Ok().finish()
/// }
/// # let _ = callback;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback(pub CallbackEvent);

/// A verified [`FailureCallbackEvent`] (the body of a delivery to an `Upstash-Failure-Callback`
/// URL, once a message failed for good): like [`Callback`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureCallback(pub FailureCallbackEvent);

impl Deref for Callback {
    type Target = CallbackEvent;
    fn deref(&self) -> &CallbackEvent {
        &self.0
    }
}

impl Deref for FailureCallback {
    type Target = FailureCallbackEvent;
    fn deref(&self) -> &FailureCallbackEvent {
        &self.0
    }
}

impl FromRequest for Callback {
    type Error = QStashRejection;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut dev::Payload) -> Self::Future {
        let fut =
            verified_json::<CallbackEvent>(req.clone(), payload.take(), "a qstash callback event");
        Box::pin(async move { fut.await.map(Callback) })
    }
}

impl FromRequest for FailureCallback {
    type Error = QStashRejection;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut dev::Payload) -> Self::Future {
        let fut = verified_json::<FailureCallbackEvent>(
            req.clone(),
            payload.take(),
            "a qstash failure callback event",
        );
        Box::pin(async move { fut.await.map(FailureCallback) })
    }
}

/// The delivery metadata left by [`QStashMiddleware`](super::QStashMiddleware). Without the
/// middleware in front of the route: 500 `misconfigured` (QStash retries; nothing is lost).
impl FromRequest for Delivery {
    type Error = QStashRejection;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut dev::Payload) -> Self::Future {
        ready(from_extensions::<Delivery>(req, "Delivery"))
    }
}

/// The verified claims left by [`QStashMiddleware`](super::QStashMiddleware). Without the
/// middleware in front of the route: 500 `misconfigured`.
impl FromRequest for Claims {
    type Error = QStashRejection;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut dev::Payload) -> Self::Future {
        ready(from_extensions::<Claims>(req, "Claims"))
    }
}

fn from_extensions<T: Clone + 'static>(
    req: &HttpRequest,
    name: &str,
) -> Result<T, QStashRejection> {
    if let Some(value) = req.extensions().get::<T>() {
        return Ok(value.clone());
    }
    let rejection = Rejection::Misconfigured(format!(
        "no verified {name} in the request: wrap the route in QStashMiddleware"
    ));
    Err(QStashRejection::misconfigured(
        rejection,
        req,
        RejectionHandler::from_app_data(req),
    ))
}

async fn verified_json<T: DeserializeOwned>(
    req: HttpRequest,
    payload: dev::Payload,
    what: &'static str,
) -> Result<T, QStashRejection> {
    let (mut payload, receiver, handler) = verified_payload(&req, payload, true).await?;
    // The verified body under the receiver's callback limit, not `web::PayloadConfig`'s
    // (256 KiB by default): a callback carries the original message's body in base64, so a
    // callback about a message of ~190 KiB or more is larger than that, and would be refused on
    // every attempt.
    let parsed = match read_limited(&mut payload, &receiver, None).await {
        Ok(body) => serde_json::from_slice(&body)
            .map_err(|e| receiver.invalid_payload(json_error_summary(what, &e))),
        Err(rejection) => Err(rejection),
    };
    parsed.map_err(|rejection| QStashRejection::new(rejection, &req, handler))
}

/// The payload to run the inner extractor on, verified: as left by the middleware, or verified
/// here with the receiver from app data.
async fn verified_payload(
    req: &HttpRequest,
    payload: dev::Payload,
    callback: bool,
) -> Result<(dev::Payload, Receiver, Option<RejectionHandler>), QStashRejection> {
    let verdict = req.extensions().get::<Verdict>().cloned();
    if let Some(Verdict(setup)) = verdict {
        // The middleware's handler, else one registered as app data (as for the other
        // extractors).
        let handler = setup
            .handler
            .clone()
            .or_else(|| RejectionHandler::from_app_data(req));
        return Ok((payload, setup.receiver.clone(), handler));
    }
    let handler = RejectionHandler::from_app_data(req);
    let Some(receiver) = receiver_from_app_data(req).map(|receiver| {
        if callback {
            receiver.for_callbacks()
        } else {
            receiver
        }
    }) else {
        let rejection = Rejection::Misconfigured(
            "no Receiver in app data: register web::Data<Receiver> or wrap the route in \
             QStashMiddleware"
                .to_owned(),
        );
        return Err(QStashRejection::misconfigured(rejection, req, handler));
    };
    let span = crate::head::span(&super::Head::of(req));
    async {
        match verify_here(req, payload, &receiver).await {
            Ok(body) => Ok((dev::Payload::from(body), receiver, handler)),
            Err(rejection) => Err(QStashRejection::new(rejection, req, handler)),
        }
    }
    .instrument(span)
    .await
}

fn receiver_from_app_data(req: &HttpRequest) -> Option<Receiver> {
    req.app_data::<web::Data<Receiver>>()
        .map(|d| d.get_ref().clone())
        .or_else(|| req.app_data::<Receiver>().cloned())
}

/// The receiver's steps without the middleware, the same as the middleware's: the body as it
/// came, under the receiver's limit. [`Claims`] and [`Delivery`] go into the request extensions.
async fn verify_here(
    req: &HttpRequest,
    mut payload: dev::Payload,
    receiver: &Receiver,
) -> Result<Bytes, Rejection> {
    let (body, claims, delivery) = verify_payload(receiver, req, &mut payload).await?;
    let mut extensions = req.extensions_mut();
    extensions.insert(claims);
    extensions.insert(delivery);
    Ok(body)
}

/// What an actix extractor's error means here: a read error, a limit (413), or a body that does
/// not parse.
fn inner_error(e: actix_web::Error, receiver: &Receiver) -> Rejection {
    if let Some(payload) = e.as_error::<PayloadError>() {
        return payload_error(payload, receiver);
    }
    match e.as_error::<JsonPayloadError>() {
        // serde's message may quote the body: its category and position only.
        Some(JsonPayloadError::Deserialize(json)) => {
            return receiver.invalid_payload(json_error_summary("the route's JSON type", json));
        }
        // `web::JsonConfig`'s limit, not the receiver's.
        Some(
            JsonPayloadError::Overflow { limit }
            | JsonPayloadError::OverflowKnownLength { limit, .. },
        ) => return Rejection::PayloadTooLarge { limit: *limit },
        _ => {}
    }
    if e.as_response_error().status_code() == StatusCode::PAYLOAD_TOO_LARGE {
        return receiver.too_large();
    }
    receiver.invalid_payload(e.to_string())
}
