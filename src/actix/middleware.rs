//! The middleware: verifies every request of the scope it wraps.

use std::fmt;
use std::future::{Ready, ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{self, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::{Error, HttpMessage as _, HttpResponse};
use futures_util::future::LocalBoxFuture;

use super::{RejectionHandler, Verdict, log_rejection, respond, verify_payload};
use crate::dedup::{Begin, Dedup};
use crate::head::Answer;
use crate::{Claims, Delivery, NON_RETRYABLE_HEADER, NON_RETRYABLE_STATUS, Receiver, Rejection};

/// actix-web middleware that verifies QStash deliveries before the handler runs.
///
/// Per request, in this order:
/// 1. the `Upstash-Signature` token, the expected URL (the [`Receiver`]'s
///    [`UrlPolicy`](crate::UrlPolicy), from the request's original path and query, the scheme the
///    server saw, `Host`, and the first `X-Forwarded-Proto` / `X-Forwarded-Host`) and the
///    delivery headers, **before reading the payload**: a bad token is refused unread;
/// 2. a `Content-Length` over [`Receiver::get_max_body_bytes`]: 413 without reading;
/// 3. the payload, read up to the limit (413 as soon as it is exceeded, chunked bodies too);
/// 4. the body hash over the raw bytes.
///
/// Then the verified bytes are put back as the payload (so `web::Json<T>`, `web::Bytes`, `String`
/// and [`Verified<T>`](super::Verified) work unchanged downstream) and [`Claims`] and [`Delivery`]
/// are inserted into the request extensions (and available as extractors).
///
/// With deduplication ([`Receiver::dedup`], see
/// [`crate::dedup`]), the message id is then claimed: a new id runs the handler under a lease
/// (its 2xx completes the id, even should the request be dropped meanwhile; anything else, an
/// error, a panic or a request dropped while the handler runs releases it, before the response
/// goes out); a completed id is answered `200` with `qstash-duplicate: true`
/// and `{"duplicate":true,"messageId":"…"}` without running the handler; an id held elsewhere
/// `409` + `Retry-After`, a failing store `503` + `Retry-After` (fail closed), like the other
/// refusals.
///
/// Every failure is answered with the [`Rejection`]'s status, headers and JSON body (or the
/// response of [`QStashMiddleware::rejection_handler`]) and logged with `tracing` as every
/// adapter logs it (code, status and the escaped message id; never the token nor the body):
/// `debug` until the token verified, then `warn`, `info` or `error` (see the
/// [crate docs](crate#logging)). The handler does not run.
///
/// The [`Receiver`] holds the whole policy (keys, URL policy, body limit, deduplication, the
/// answer to an unusable payload); the middleware adds only its own knob,
/// [`rejection_handler`](Self::rejection_handler). With
/// [`Receiver::non_retryable_invalid_payload`], an answer of 400, 415 or 422 from the handler
/// (actix-web's `web::Json`, `web::Form` rejections) is sent as 489 with
/// `Upstash-NonRetryable-Error: true`: QStash dead-letters the message instead of retrying it.
///
/// Cheap to clone: build it once, outside `HttpServer::new`, and clone it into each worker's app.
/// See the [module docs](super) for an example.
#[derive(Clone, Debug)]
pub struct QStashMiddleware {
    config: Arc<Config>,
}

/// The middleware's set-up, shared with the requests it verified ([`Verdict`]).
type Config = super::Setup;

impl QStashMiddleware {
    /// A middleware verifying with `receiver` (keys, URL policy, body limit).
    #[must_use]
    pub fn new(receiver: Receiver) -> Self {
        Self {
            config: Arc::new(Config {
                receiver,
                handler: None,
            }),
        }
    }

    /// Deduplicates deliveries by message id (see [`crate::dedup`]).
    #[deprecated(since = "0.2.0", note = "set it on the receiver: `Receiver::dedup`")]
    #[must_use]
    pub fn dedup(self, dedup: Dedup) -> Self {
        Self {
            config: Arc::new(Config {
                receiver: self.config.receiver.clone().dedup(dedup),
                handler: self.config.handler.clone(),
            }),
        }
    }

    /// Answers every rejection with `f(rejection)` instead of the default JSON response. Keep a
    /// non-2xx status: QStash retries only those. Extractors downstream use it too.
    #[must_use]
    pub fn rejection_handler<F>(self, f: F) -> Self
    where
        F: Fn(&Rejection) -> HttpResponse + Send + Sync + 'static,
    {
        Self {
            config: Arc::new(Config {
                receiver: self.config.receiver.clone(),
                handler: Some(RejectionHandler::new(f)),
            }),
        }
    }

    /// The receiver this middleware verifies with.
    pub fn receiver(&self) -> &Receiver {
        &self.config.receiver
    }
}

impl<S, B> Transform<S, ServiceRequest> for QStashMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = QStashMiddlewareService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(QStashMiddlewareService {
            service: Rc::new(service),
            config: Arc::clone(&self.config),
        }))
    }
}

/// The [`Service`] made by [`QStashMiddleware`] around the inner service.
pub struct QStashMiddlewareService<S> {
    service: Rc<S>,
    config: Arc<Config>,
}

impl<S> fmt::Debug for QStashMiddlewareService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QStashMiddlewareService")
            .field("receiver", &self.config.receiver)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for QStashMiddlewareService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    dev::forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        use tracing::Instrument as _;
        let service = Rc::clone(&self.service);
        let config = Arc::clone(&self.config);
        let span = crate::head::span(&super::Head::of(req.request()));
        Box::pin(
            async move {
                match verify(&config.receiver, &mut req).await {
                    Ok((claims, delivery)) => {
                        let lease = match config.receiver.get_dedup() {
                            None => None,
                            Some(dedup) => match dedup.begin(&delivery, &claims).await {
                                Begin::Run(lease) => Some(lease),
                                Begin::RunUnguarded { .. } => None,
                                Begin::Duplicate { message_id } => {
                                    let response = super::response(Answer::duplicate(&message_id));
                                    return Ok(req.into_response(response).map_into_right_body());
                                }
                                // `Dedup::begin` logged it (with the message id).
                                Begin::Refuse(rejection) => {
                                    let response = respond(&rejection, config.handler.as_ref());
                                    return Ok(req.into_response(response).map_into_right_body());
                                }
                            },
                        };
                        {
                            let mut extensions = req.extensions_mut();
                            extensions.insert(claims);
                            extensions.insert(delivery);
                            extensions.insert(Verdict(Arc::clone(&config)));
                        }
                        let response = match lease {
                            None => call_verified(&*service, req).await?,
                            Some(lease) => call_leased(&*service, req, lease).await?,
                        };
                        let non_retryable = config.receiver.get_non_retryable_invalid_payload();
                        Ok(passed(response, non_retryable).map_into_left_body())
                    }
                    Err(rejection) => {
                        log_rejection(&rejection, req.headers());
                        let response = respond(&rejection, config.handler.as_ref());
                        Ok(req.into_response(response).map_into_right_body())
                    }
                }
            }
            .instrument(span),
        )
    }
}

/// Runs the receiver's steps on the request; on success the verified body is the request's
/// payload again.
async fn verify(
    receiver: &Receiver,
    req: &mut ServiceRequest,
) -> Result<(Claims, Delivery), Rejection> {
    let mut payload = req.take_payload();
    let (body, claims, delivery) = verify_payload(receiver, req.request(), &mut payload).await?;
    req.set_payload(dev::Payload::from(body));
    Ok((claims, delivery))
}

/// The one place where the inner service runs on a verified request and its response is seen.
async fn call_verified<S, B>(service: &S, req: ServiceRequest) -> Result<ServiceResponse<B>, Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    service.call(req).await
}

/// [`call_verified`] under a deduplication lease: a response completes (2xx) or releases it
/// before it goes out; an error releases it. A panic releases it too, then goes on unwinding
/// (released here rather than by the lease's drop, which could run on a worker that is going
/// away). A future dropped while the handler runs drops the lease, which releases it in the
/// background; dropped once the handler answered 2xx, the completion is still written (the
/// lease is committed to completing by [`Lease::finish`](crate::dedup::Lease::finish)).
async fn call_leased<S, B>(
    service: &S,
    req: ServiceRequest,
    lease: crate::dedup::Lease,
) -> Result<ServiceResponse<B>, Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    use futures_util::FutureExt as _;
    let called = std::panic::AssertUnwindSafe(call_verified(service, req))
        .catch_unwind()
        .await;
    match called {
        Ok(Ok(response)) => {
            // Outcomes and store errors are logged by the lease itself. With a 2xx, committed
            // to completing: dropped while awaiting, it completes.
            let _ = lease.finish(response.status().as_u16()).await;
            Ok(response)
        }
        Ok(Err(error)) => {
            let _ = lease.release().await;
            Err(error)
        }
        Err(panic) => {
            let _ = lease.release().await;
            std::panic::resume_unwind(panic)
        }
    }
}

/// The handler's response, as it goes out: with
/// [`Receiver::non_retryable_invalid_payload`], a payload refusal (400, 415, 422: actix-web's
/// `web::Json`, `web::Form` rejections) becomes 489 with `Upstash-NonRetryable-Error: true`; the
/// body is verified, so retrying cannot help.
fn passed<B>(mut response: ServiceResponse<B>, non_retryable: bool) -> ServiceResponse<B> {
    let status = response.status().as_u16();
    crate::observe::handled(status);
    if status == 413 {
        crate::log::handler_too_large();
    }
    if non_retryable && crate::head::is_payload_refusal(status) {
        crate::log::payload_refused_downstream(status);
        let head = response.response_mut().head_mut();
        if let Ok(dlq) = actix_web::http::StatusCode::from_u16(NON_RETRYABLE_STATUS) {
            head.status = dlq;
        }
        head.headers.insert(
            actix_web::http::header::HeaderName::from_static(NON_RETRYABLE_HEADER),
            actix_web::http::header::HeaderValue::from_static("true"),
        );
    }
    response
}
