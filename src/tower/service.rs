//! [`QStash`]: the service made by [`QStashLayer`](super::QStashLayer).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Config;
use super::{BoxError, ResponseBody};
use crate::Rejection;
use crate::head::RequestHead as _;

/// A service that verifies each request as a QStash delivery, then calls the inner service
/// with the verified body (a [`Full<Bytes>`]) and with [`Claims`](crate::Claims) and
/// [`Delivery`](crate::Delivery) in the request extensions. A refused request is answered
/// without calling the inner service.
///
/// Made by [`QStashLayer`](super::QStashLayer). Cheap to clone when `S` is.
#[derive(Clone, Debug)]
pub struct QStash<S> {
    pub(crate) inner: S,
    pub(crate) config: Arc<Config>,
}

impl<S> QStash<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, consuming this one.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for QStash<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<B, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone is not necessarily ready: keep the one that is, for this request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        let span = crate::head::span(&super::Head::of(&req));
        let entered = span.enter();
        let receiver = &config.receiver;

        // Everything that can be decided from the head is decided before any body byte is
        // polled: a bad token never costs a body read.
        let head = crate::head::check_head(receiver, &super::Head::of(&req), SystemTime::now());
        let future = match head {
            Ok((token, delivery)) => ResponseFuture::read_body(req, token, delivery, inner, config),
            Err(rejection) => {
                crate::log::refusal(&rejection, super::Head::of(&req).message_id());
                let response = config.response(&rejection);
                // The body is unread. A request whose token verified but whose length is over
                // the limit (a 413) has it drained before the answer (see `drain.rs`); any
                // other refusal of the head is answered at once, as an unauthenticated client
                // must not hold the connection by trickling a body.
                let budget = if matches!(rejection, Rejection::PayloadTooLarge { .. }) {
                    super::drain::budget_before_reading(
                        req.version(),
                        req.headers(),
                        req.body(),
                        config.drain_limit,
                    )
                } else {
                    0
                };
                ResponseFuture::rejected_draining(response, req.into_body(), budget)
            }
        };
        drop(entered);
        future.in_span(span)
    }
}
