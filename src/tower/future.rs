//! [`ResponseFuture`]: reads the body under the limit, checks it, then calls the inner service
//! (under a deduplication lease when the receiver has [`Dedup`](crate::dedup::Dedup)).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower_service::Service;

use super::drain::{ReadBody, check_read};
use super::layer::Config;
use super::{BoxError, ResponseBody, VerifiedByLayer};
use crate::dedup::{Begin, Lease};
use crate::head::Answer;
use crate::{Delivery, NON_RETRYABLE_HEADER, NON_RETRYABLE_STATUS, Rejection, VerifiedToken};

/// The boxed claim of a message id ([`Dedup::begin`](crate::dedup::Dedup::begin)).
type BeginFuture = Pin<Box<dyn Future<Output = (Begin, Delivery, crate::Claims)> + Send>>;
/// The boxed settlement of a lease ([`Lease::finish`]).
type FinishFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

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
        // The delivery's span, entered at each poll (the inner service's included).
        span: tracing::Span,
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
        /// Refused with 413 before the body was read (its token verified, its
        /// `Content-Length` over the limit): draining the body (within the budget) before
        /// answering, so that the client reads the answer (see `drain.rs`).
        Draining {
            #[pin]
            body: ReadBody<B>,
            response: Option<Response<Bytes>>,
        },
        /// Reading the body, at most the limit (past it, draining the rest).
        Reading {
            #[pin]
            body: ReadBody<B>,
            pending: Option<Pending<S>>,
        },
        /// The one place the inner service runs and its response is seen.
        Calling {
            #[pin]
            future: S::Future,
            non_retryable: bool,
        },
        /// Deduplication only: claiming the message id before the inner service may run.
        Claiming {
            begin: BeginFuture,
            pending: Option<(http::request::Parts, Bytes, S, Arc<Config>)>,
        },
        /// Deduplication only: the inner service runs under `lease`. Dropping this future (a
        /// client gone, a timeout, a panic) drops the lease, which releases the message id.
        CallingLeased {
            #[pin]
            future: S::Future,
            lease: Option<Lease>,
            non_retryable: bool,
        },
        /// Deduplication only: the inner service answered; completing (2xx) or releasing the
        /// lease before the response goes out. Dropped here, a 2xx's completion is still
        /// written (in the background: see [`Lease`]), never turned into a release.
        Finishing {
            finish: FinishFuture,
            response: Option<S::Response>,
            non_retryable: bool,
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
            span: tracing::Span::none(),
        }
    }

    /// Refused before the body was read: drains at most `budget` bytes of `body` (0: none,
    /// answers at once; the service gives a budget only to a 413), then answers `response`.
    pub(crate) fn rejected_draining(response: Response<Bytes>, body: B, budget: u64) -> Self {
        if budget == 0 {
            return Self::rejected(response);
        }
        Self {
            state: State::Draining {
                body: ReadBody::drain(body, budget),
                response: Some(response),
            },
            span: tracing::Span::none(),
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
        let drain =
            super::drain::budget_for(parts.version, &parts.headers, config.drain_limit, false);
        let body = ReadBody::collect(body, config.receiver.get_max_body_bytes(), drain);
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
            span: tracing::Span::none(),
        }
    }

    /// This future, polled inside `span` (the delivery's).
    pub(crate) fn in_span(mut self, span: tracing::Span) -> Self {
        self.span = span;
        self
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
            State::Draining { .. } => "rejected, draining the body",
            State::Reading { .. } => "reading body",
            State::Calling { .. } => "calling inner service",
            State::Claiming { .. } => "claiming the message id",
            State::CallingLeased { .. } => "calling inner service under a lease",
            State::Finishing { .. } => "settling the lease",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

fn into_response<ResBody>(response: Response<Bytes>) -> Response<ResponseBody<ResBody>> {
    response.map(|bytes| ResponseBody::rejection(Full::new(bytes)))
}

/// The inner service's response, as it goes out: with
/// [`Receiver::non_retryable_invalid_payload`](crate::Receiver::non_retryable_invalid_payload),
/// a payload refusal (400, 415, 422: axum's `Json`, `Form`, `Query` rejections) becomes 489 with
/// `Upstash-NonRetryable-Error: true`; the body is verified, so retrying cannot help.
fn passed<ResBody>(
    mut response: Response<ResBody>,
    non_retryable: bool,
) -> Response<ResponseBody<ResBody>> {
    let status = response.status().as_u16();
    crate::observe::handled(status);
    if status == 413 {
        crate::log::handler_too_large();
    }
    if non_retryable && crate::head::is_payload_refusal(status) {
        crate::log::payload_refused_downstream(status);
        if let Ok(dlq) = http::StatusCode::from_u16(NON_RETRYABLE_STATUS) {
            *response.status_mut() = dlq;
        }
        response.headers_mut().insert(
            http::HeaderName::from_static(NON_RETRYABLE_HEADER),
            http::HeaderValue::from_static("true"),
        );
    }
    response.map(ResponseBody::inner)
}

fn misused<ResBody>() -> Response<ResponseBody<ResBody>> {
    into_response(super::json_response(&Rejection::Misconfigured(
        "response future polled after completion".to_owned(),
    )))
}

/// What the claim of the message id decided: call the inner service (under the lease, or
/// unguarded) with the verified request, or answer (a duplicate, a refusal).
// The answer is returned from `poll` at once: boxing it would only add an allocation.
#[allow(clippy::result_large_err)]
fn after_claim<B, S, ResBody>(
    begin: Begin,
    delivery: Delivery,
    claims: crate::Claims,
    parts: http::request::Parts,
    bytes: Bytes,
    mut inner: S,
    config: Arc<Config>,
) -> Result<State<B, S>, Response<ResponseBody<ResBody>>>
where
    B: Body,
    B::Error: Into<BoxError>,
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>>,
{
    let non_retryable = config.receiver.get_non_retryable_invalid_payload();
    match begin {
        Begin::Run(lease) => Ok(State::CallingLeased {
            future: inner.call(verified_request(parts, claims, delivery, bytes, &config)),
            lease: Some(lease),
            non_retryable,
        }),
        Begin::RunUnguarded { .. } => Ok(State::Calling {
            future: inner.call(verified_request(parts, claims, delivery, bytes, &config)),
            non_retryable,
        }),
        Begin::Duplicate { message_id } => Err(into_response(super::response(Answer::duplicate(
            &message_id,
        )))),
        // `Dedup::begin` logged it (with the message id).
        Begin::Refuse(rejection) => Err(into_response(config.response(&rejection))),
    }
}

/// The request the inner service gets: the original parts (extensions kept) with the claims,
/// the delivery and the layer's mark in the extensions, and the verified bytes as the body.
fn verified_request(
    mut parts: http::request::Parts,
    claims: crate::Claims,
    delivery: Delivery,
    bytes: Bytes,
    config: &Arc<Config>,
) -> Request<Full<Bytes>> {
    parts.extensions.insert(claims);
    parts.extensions.insert(delivery);
    parts.extensions.insert(VerifiedByLayer(Arc::clone(config)));
    let mut req = Request::from_parts(parts, Full::new(bytes));
    crate::allow_verified_body(&mut req, config.receiver.get_max_body_bytes());
    req
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
        let _entered = this.span.enter();
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
                StateProj::Draining { body, response } => {
                    // Whatever the drain ended with (the end, the budget, a client gone).
                    let _ = ready!(body.poll(cx));
                    let response = response.take().unwrap_or_else(|| {
                        super::json_response(&Rejection::Misconfigured(
                            "response future polled after completion".to_owned(),
                        ))
                    });
                    return Poll::Ready(Ok(into_response(response)));
                }
                StateProj::Reading { body, pending } => {
                    let read = ready!(body.poll(cx));
                    let Some(Pending {
                        parts,
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
                    let checked = check_read(receiver, token, read);
                    match checked {
                        Ok((bytes, claims)) => match config.receiver.get_dedup() {
                            // The plain path: no claim, no boxing.
                            None => State::Calling {
                                non_retryable: receiver.get_non_retryable_invalid_payload(),
                                future: inner.call(verified_request(
                                    parts, claims, delivery, bytes, &config,
                                )),
                            },
                            Some(dedup) => {
                                // The claim borrows the delivery and claims, then hands them
                                // back for the extensions: no copies.
                                let dedup = dedup.clone();
                                let now = std::time::SystemTime::now();
                                let begin: BeginFuture = Box::pin(async move {
                                    let begin = dedup.begin_at(&delivery, &claims, now).await;
                                    (begin, delivery, claims)
                                });
                                State::Claiming {
                                    begin,
                                    pending: Some((parts, bytes, inner, config)),
                                }
                            }
                        },
                        Err(rejection) => {
                            crate::log::refusal(
                                &rejection,
                                delivery.message_id().map(str::as_bytes),
                            );
                            return Poll::Ready(Ok(into_response(config.response(&rejection))));
                        }
                    }
                }
                StateProj::Calling {
                    future,
                    non_retryable,
                } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(passed(response, *non_retryable)));
                }
                StateProj::Claiming { begin, pending } => {
                    let (begin, delivery, claims) = ready!(begin.as_mut().poll(cx));
                    let Some((parts, bytes, inner, config)) = pending.take() else {
                        return Poll::Ready(Ok(misused()));
                    };
                    match after_claim(begin, delivery, claims, parts, bytes, inner, config) {
                        Ok(state) => state,
                        Err(response) => return Poll::Ready(Ok(response)),
                    }
                }
                StateProj::CallingLeased {
                    future,
                    lease,
                    non_retryable,
                } => {
                    // An error drops the lease (with this future): released in the background.
                    let response = ready!(future.poll(cx))?;
                    let Some(lease) = lease.take() else {
                        return Poll::Ready(Ok(passed(response, *non_retryable)));
                    };
                    // Outcomes and store errors are logged by the lease itself. A 2xx is
                    // committed to completing from here: dropped (a timeout above the layer, a
                    // client gone), the lease still completes.
                    let finish = lease.finish(response.status().as_u16());
                    State::Finishing {
                        finish: Box::pin(async move {
                            let _ = finish.await;
                        }),
                        response: Some(response),
                        non_retryable: *non_retryable,
                    }
                }
                StateProj::Finishing {
                    finish,
                    response,
                    non_retryable,
                } => {
                    ready!(finish.as_mut().poll(cx));
                    return Poll::Ready(Ok(match response.take() {
                        Some(response) => passed(response, *non_retryable),
                        None => misused(),
                    }));
                }
            };
            this.state.set(next);
        }
    }
}
