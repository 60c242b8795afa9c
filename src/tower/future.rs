//! [`ResponseFuture`]: one request through the layer, as one `async` block, boxed once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower_service::Service;

use super::drain::{budget_for, check_read, collect, drain};
use super::layer::Config;
use super::{BoxError, Head, ResponseBody, VerifiedByLayer};
use crate::dedup::Begin;
use crate::head::{Answer, RequestHead as _};
use crate::{Delivery, NON_RETRYABLE_HEADER, NON_RETRYABLE_STATUS, Rejection, VerifiedToken};

/// The response future of [`QStash`](super::QStash): `ResBody` is the inner service's response
/// body, `E` its error.
pub struct ResponseFuture<ResBody, E>(
    pub(crate) BoxFuture<'static, Result<Response<ResponseBody<ResBody>>, E>>,
);

impl<ResBody, E> Future for ResponseFuture<ResBody, E> {
    type Output = Result<Response<ResponseBody<ResBody>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

impl<ResBody, E> std::fmt::Debug for ResponseFuture<ResBody, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// A request whose head was checked in `call` (`head`: the verified token and the delivery
/// headers, or the refusal), as the [module docs](super) say: read and check the body, claim the
/// message id, call `inner`, map its answer.
pub(crate) async fn respond<B, S, ResBody>(
    req: Request<B>,
    head: Result<(VerifiedToken, Delivery), Rejection>,
    mut inner: S,
    config: Arc<Config>,
) -> Result<Response<ResponseBody<ResBody>>, S::Error>
where
    B: Body,
    B::Error: Into<BoxError>,
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>>,
{
    let receiver = &config.receiver;
    let (token, delivery) = match head {
        Ok(checked) => checked,
        Err(rejection) => {
            crate::log::refusal(&rejection, Head::of(&req).message_id());
            // Only a 413 of a verified token is drained (see `drain.rs`): an unauthenticated
            // client must not hold the connection by trickling a body.
            if matches!(rejection, Rejection::PayloadTooLarge { .. }) {
                let budget = budget_for(req.version(), req.headers(), config.drain_limit, true);
                drain(req.into_body(), budget).await;
            }
            return Ok(config.response(&rejection));
        }
    };
    let (mut parts, body) = req.into_parts();
    let drain = budget_for(parts.version, &parts.headers, config.drain_limit, false);
    let read = collect(body, receiver.get_max_body_bytes(), drain).await;
    let (bytes, claims) = match check_read(receiver, token, read) {
        Ok(checked) => checked,
        Err(rejection) => {
            crate::log::refusal(&rejection, delivery.message_id().map(str::as_bytes));
            return Ok(config.response(&rejection));
        }
    };
    let lease = match receiver.get_dedup() {
        None => None,
        Some(dedup) => match dedup.begin_at(&delivery, &claims, SystemTime::now()).await {
            Begin::Run(lease) => Some(lease),
            Begin::RunUnguarded { .. } => None,
            Begin::Duplicate { message_id } => {
                let answer = super::response(Answer::duplicate(&message_id));
                return Ok(answer.map(ResponseBody::rejection));
            }
            // `Dedup::begin` logged it (with the message id).
            Begin::Refuse(rejection) => return Ok(config.response(&rejection)),
        },
    };
    // The request's own parts (extensions kept) with the verified bytes, the claims, the
    // delivery and the layer's mark for the extractors above.
    parts.extensions.insert(claims);
    parts.extensions.insert(delivery);
    parts
        .extensions
        .insert(VerifiedByLayer(Arc::clone(&config)));
    let mut req = Request::from_parts(parts, Full::new(bytes));
    crate::allow_verified_body(&mut req, receiver.get_max_body_bytes());
    // An `Err`, a panic or this future dropped drops the lease: the message id is released.
    let mut response = inner.call(req).await?;
    let status = response.status().as_u16();
    if let Some(lease) = lease {
        // A 2xx is committed to completing from here, even if this future is dropped (see
        // `Lease::finish`); the lease logs its outcome.
        let _ = lease.finish(status).await;
    }
    // The body is verified: retrying a payload the handler refused cannot help.
    if crate::head::handler_answered(receiver, status) {
        if let Ok(dlq) = http::StatusCode::from_u16(NON_RETRYABLE_STATUS) {
            *response.status_mut() = dlq;
        }
        response.headers_mut().insert(
            http::HeaderName::from_static(NON_RETRYABLE_HEADER),
            http::HeaderValue::from_static("true"),
        );
    }
    Ok(response.map(ResponseBody::inner))
}
