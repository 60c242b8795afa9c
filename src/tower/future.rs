//! [`ResponseFuture`]: reads the body under the limit, checks it, then calls the inner service.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::layer::Config;
use super::{BoxError, ResponseBody, VerifiedByLayer};
use crate::{Delivery, Rejection, VerifiedToken};

pin_project! {
    /// The response future of [`QStash`](super::QStash).
    pub struct ResponseFuture<B, S>
    where
        B: Body,
        B::Error: Into<BoxError>,
        S: Service<Request<Full<Bytes>>>,
    {
        #[pin]
        state: State<B, S>,
    }
}

/// What the request waits for, once its head passed.
struct Pending<S> {
    parts: http::request::Parts,
    token: VerifiedToken,
    delivery: Delivery,
    inner: S,
    config: Arc<Config>,
}

pin_project! {
    #[project = StateProj]
    enum State<B, S>
    where
        B: Body,
        B::Error: Into<BoxError>,
        S: Service<Request<Full<Bytes>>>,
    {
        /// Refused: the response is ready.
        Rejected { response: Option<Response<Bytes>> },
        /// Reading the body, at most the limit.
        Reading {
            #[pin]
            body: Collect<Limited<B>>,
            pending: Option<Pending<S>>,
        },
        /// The one place the inner service runs and its response is seen.
        Calling {
            #[pin]
            future: S::Future,
        },
    }
}

impl<B, S> ResponseFuture<B, S>
where
    B: Body,
    B::Error: Into<BoxError>,
    S: Service<Request<Full<Bytes>>>,
{
    pub(crate) fn rejected(response: Response<Bytes>) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }

    pub(crate) fn read_body(
        req: Request<B>,
        token: VerifiedToken,
        delivery: Delivery,
        inner: S,
        config: Arc<Config>,
    ) -> Self {
        let (parts, body) = req.into_parts();
        let body = Limited::new(body, config.receiver.limit()).collect();
        Self {
            state: State::Reading {
                body,
                pending: Some(Pending {
                    parts,
                    token,
                    delivery,
                    inner,
                    config,
                }),
            },
        }
    }
}

impl<B, S> std::fmt::Debug for ResponseFuture<B, S>
where
    B: Body,
    B::Error: Into<BoxError>,
    S: Service<Request<Full<Bytes>>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Rejected { .. } => "rejected",
            State::Reading { .. } => "reading body",
            State::Calling { .. } => "calling inner service",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

/// Whether a body error is (or wraps) the limit being exceeded.
pub(crate) fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

fn into_response<ResBody>(response: Response<Bytes>) -> Response<ResponseBody<ResBody>> {
    response.map(|bytes| ResponseBody::rejection(Full::new(bytes)))
}

impl<B, S, ResBody> Future for ResponseFuture<B, S>
where
    B: Body,
    B::Error: Into<BoxError>,
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Rejected { response } => {
                    let response = response.take().unwrap_or_else(|| {
                        super::json_response(&Rejection::Misconfigured(
                            "response future polled after completion".to_owned(),
                        ))
                    });
                    return Poll::Ready(Ok(into_response(response)));
                }
                StateProj::Reading { body, pending } => {
                    let collected = ready!(body.poll(cx));
                    let Some(Pending {
                        mut parts,
                        token,
                        delivery,
                        mut inner,
                        config,
                    }) = pending.take()
                    else {
                        let rejection = Rejection::Misconfigured(
                            "response future polled after completion".to_owned(),
                        );
                        return Poll::Ready(Ok(into_response(super::json_response(&rejection))));
                    };
                    let receiver = &config.receiver;
                    let checked = match collected {
                        Ok(collected) => {
                            let bytes = collected.to_bytes();
                            receiver
                                .check_body(token, &bytes)
                                .map(|claims| (bytes, claims))
                        }
                        Err(error) if is_length_limit(&*error) => Err(receiver.too_large()),
                        Err(_) => Err(Rejection::BodyRead(
                            "the connection failed while the body was read".to_owned(),
                        )),
                    };
                    match checked {
                        Ok((bytes, claims)) => {
                            parts.extensions.insert(claims);
                            parts.extensions.insert(delivery);
                            parts
                                .extensions
                                .insert(VerifiedByLayer(Arc::clone(&config)));
                            let req = Request::from_parts(parts, Full::new(bytes));
                            State::Calling {
                                future: inner.call(req),
                            }
                        }
                        Err(rejection) => {
                            super::log_rejection(&rejection, delivery.message_id());
                            return Poll::Ready(Ok(into_response(config.response(&rejection))));
                        }
                    }
                }
                StateProj::Calling { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
            };
            this.state.set(next);
        }
    }
}
