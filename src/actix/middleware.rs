//! The middleware: verifies every request of the scope it wraps.

use std::fmt;
use std::future::{Ready, ready};
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{self, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{Error, HttpMessage as _, HttpResponse};
use futures_util::future::LocalBoxFuture;
use tracing::Instrument as _;

use super::{Head, RejectionHandler, Setup, respond, response, verify};
use crate::dedup::{Begin, Dedup, Lease};
use crate::head::{Answer, RequestHead as _};
use crate::{NON_RETRYABLE_HEADER, NON_RETRYABLE_STATUS, Receiver, Rejection};

/// actix-web middleware that verifies QStash deliveries before the handler runs.
///
/// The token, the URL ([`UrlPolicy`](crate::UrlPolicy)) and the delivery headers are checked
/// **before the payload is read**; then the payload, as it came and under the limit (413 past
/// it), against the token's body hash. The verified bytes become the payload again (for
/// `web::Json<T>`, `web::Bytes`, `String`: raise `web::PayloadConfig`'s 256 KiB to
/// [`Receiver::get_max_body_bytes`]), with [`Claims`](crate::Claims) and
/// [`Delivery`](crate::Delivery) in the request extensions. With [`Receiver::dedup`] the handler
/// runs under a lease on the message id ([`crate::dedup`]; a completed id is answered 200
/// without running it). A refusal is answered with the [`Rejection`] (or by
/// [`rejection_handler`](Self::rejection_handler)) and logged ([crate docs](crate#logging)); with
/// [`Receiver::non_retryable_invalid_payload`], a 400, 415 or 422 from the handler (`web::Json`,
/// `web::Form` rejections) goes out as 489.
///
/// Cheap to clone: build it once, outside `HttpServer::new`. Example: the [module docs](super).
#[derive(Clone, Debug)]
pub struct QStashMiddleware {
    setup: Arc<Setup>,
}

impl QStashMiddleware {
    /// A middleware verifying with `receiver` (the whole policy: keys, URL, limit, dedup).
    #[must_use]
    pub fn new(receiver: Receiver) -> Self {
        let setup = Arc::new(Setup {
            receiver,
            handler: None,
        });
        Self { setup }
    }

    /// Deduplicates deliveries by message id (see [`crate::dedup`]).
    #[deprecated(since = "0.2.0", note = "set it on the receiver: `Receiver::dedup`")]
    #[must_use]
    pub fn dedup(mut self, dedup: Dedup) -> Self {
        let setup = Arc::make_mut(&mut self.setup);
        setup.receiver = setup.receiver.clone().dedup(dedup);
        self
    }

    /// Answers every rejection with `f(rejection)` instead of the default JSON response. Keep a
    /// non-2xx status: QStash retries only those. Extractors downstream use it too.
    #[must_use]
    pub fn rejection_handler<F>(mut self, f: F) -> Self
    where
        F: Fn(&Rejection) -> HttpResponse + Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.setup).handler = Some(RejectionHandler::new(f));
        self
    }

    /// The receiver this middleware verifies with.
    pub fn receiver(&self) -> &Receiver {
        &self.setup.receiver
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
        let (service, setup) = (Rc::new(service), Arc::clone(&self.setup));
        ready(Ok(QStashMiddlewareService { service, setup }))
    }
}

/// The [`Service`] made by [`QStashMiddleware`] around the inner service.
pub struct QStashMiddlewareService<S> {
    service: Rc<S>,
    setup: Arc<Setup>,
}

impl<S> fmt::Debug for QStashMiddlewareService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QStashMiddlewareService")
            .field("receiver", &self.setup.receiver)
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
        let service = Rc::clone(&self.service);
        let setup = Arc::clone(&self.setup);
        let span = crate::head::span(&Head::of(req.request()));
        let answer =
            |req: ServiceRequest, response| Ok(req.into_response(response).map_into_right_body());
        let call = async move {
            let mut payload = req.take_payload();
            let verified = verify(&setup.receiver, req.request(), &mut payload).await;
            let (body, claims, delivery) = match verified {
                Ok(verified) => verified,
                Err(rejection) => {
                    crate::log::refusal(&rejection, Head::of(req.request()).message_id());
                    return answer(req, respond(&rejection, setup.handler.as_ref()));
                }
            };
            req.set_payload(dev::Payload::from(body));
            let lease = match setup.receiver.get_dedup() {
                None => None,
                Some(dedup) => match dedup.begin(&delivery, &claims).await {
                    Begin::Run(lease) => Some(lease),
                    Begin::RunUnguarded { .. } => None,
                    Begin::Duplicate { message_id } => {
                        return answer(req, response(Answer::duplicate(&message_id)));
                    }
                    // `Dedup::begin` logged it.
                    Begin::Refuse(rejection) => {
                        return answer(req, respond(&rejection, setup.handler.as_ref()));
                    }
                },
            };
            req.extensions_mut().insert(claims);
            req.extensions_mut().insert(delivery);
            req.extensions_mut().insert(Arc::clone(&setup));
            let response = match lease {
                None => service.call(req).await?,
                Some(lease) => call_leased(&*service, req, lease).await?,
            };
            Ok(passed(response, &setup.receiver).map_into_left_body())
        };
        Box::pin(call.instrument(span))
    }
}

/// The inner service under a lease: its response completes (2xx) or releases it before it goes
/// out ([`Lease::finish`]: a 2xx completes even if this future is dropped meanwhile); an error or
/// a panic releases it here (not in the lease's drop, on a worker that may be going away). A
/// future dropped while the handler runs drops the lease, which releases itself.
async fn call_leased<S, B>(
    service: &S,
    req: ServiceRequest,
    lease: Lease,
) -> Result<ServiceResponse<B>, Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
{
    use futures_util::FutureExt as _;
    let called = AssertUnwindSafe(service.call(req)).catch_unwind().await;
    // Outcomes and store errors are logged by the lease itself.
    let _ = match &called {
        Ok(Ok(response)) => lease.finish(response.status().as_u16()).await,
        _ => lease.release().await,
    };
    called.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The handler's response as it goes out: a payload refusal (400, 415, 422) of a verified body
/// becomes 489 `Upstash-NonRetryable-Error: true` when the receiver says so.
fn passed<B>(mut response: ServiceResponse<B>, receiver: &Receiver) -> ServiceResponse<B> {
    let status = response.status().as_u16();
    if crate::head::handler_answered(receiver, status) {
        let head = response.response_mut().head_mut();
        head.status = super::status(NON_RETRYABLE_STATUS);
        let name = HeaderName::from_static(NON_RETRYABLE_HEADER);
        head.headers.insert(name, HeaderValue::from_static("true"));
    }
    response
}
