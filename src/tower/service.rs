//! [`QStash`]: the service made by [`QStashLayer`](super::QStashLayer).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower_service::Service;
use tracing::Instrument as _;

use super::future::{ResponseFuture, respond};
use super::layer::Config;
use super::{BoxError, Head, ResponseBody};

/// A service that verifies each request as a QStash delivery, then calls the inner service
/// with the verified body (a [`Full<Bytes>`]) and with [`Claims`](crate::Claims) and
/// [`Delivery`](crate::Delivery) in the request extensions. A refused request is answered
/// without calling the inner service.
///
/// Made by [`QStashLayer`](super::QStashLayer). Cheap to clone when `S` is. Each request runs
/// as one boxed future ([`ResponseFuture`]): the request body (and its chunks), the inner
/// service, its future and its response body must be `Send + 'static`, its error `'static`
/// (as they are under axum and hyper).
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
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone is not necessarily ready: keep the one that is, for this request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        let span = crate::head::span(&Head::of(&req));
        // Everything the head decides is decided here, before any body byte is polled.
        let head = span.in_scope(|| {
            crate::head::check_head(&config.receiver, &Head::of(&req), SystemTime::now())
        });
        ResponseFuture(Box::pin(respond(req, head, inner, config).instrument(span)))
    }
}
