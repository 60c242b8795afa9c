//! [`QStashLayer`]: the configuration shared by every clone of the service.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use tower_layer::Layer;

use super::QStash;
use crate::{Receiver, Rejection, UrlPolicy, UrlPolicyError};

/// A function that turns a [`Rejection`] into the response sent instead of the default JSON one.
pub(crate) type RejectionFn = dyn Fn(&Rejection) -> http::Response<Bytes> + Send + Sync;

/// What every clone of the service shares (behind one `Arc`).
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) receiver: Receiver,
    pub(crate) on_rejection: Option<Arc<RejectionFn>>,
    /// At most this many bytes of a refused request's unread body are drained before the
    /// answer ([`QStashLayer::drain_limit`]); 0: none.
    pub(crate) drain_limit: u64,
    // Deduplication lives in the receiver (`Receiver::get_dedup`): `ResponseFuture`
    // claims the message id before calling the inner service and settles it after.
}

impl Config {
    /// The response for `rejection`: the user's, else the shared JSON answer.
    pub(crate) fn response(&self, rejection: &Rejection) -> http::Response<Bytes> {
        match &self.on_rejection {
            Some(f) => f(rejection),
            None => super::json_response(rejection),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("receiver", &self.receiver)
            .field("drain_limit", &self.drain_limit)
            .field(
                "on_rejection",
                &self
                    .on_rejection
                    .as_ref()
                    .map(|_| "Fn(&Rejection) -> Response"),
            )
            .finish()
    }
}

/// A tower [`Layer`] that verifies every request as a QStash delivery before the inner service
/// sees it. Wraps services in [`QStash`]. Cheap to clone (one `Arc`).
///
/// Built from a [`Receiver`], which holds the whole policy (keys, URL policy, body limit,
/// deduplication, the answer to an unusable payload); the layer adds only its own knobs:
/// [`on_rejection`](Self::on_rejection) and [`drain_limit`](Self::drain_limit). The URL policy
/// has **no silent default**: until one is chosen on the `Receiver`, every request is refused
/// with 500 `misconfigured`, which QStash retries.
///
/// With [`Receiver::non_retryable_invalid_payload`], an answer of 400, 415 or 422 from the inner
/// service (axum's `Json`, `Form`, `Query` rejections) is sent as 489 with
/// `Upstash-NonRetryable-Error: true`: QStash dead-letters the message instead of retrying it.
///
/// See the [module docs](super) for what happens to each request.
#[derive(Clone, Debug)]
pub struct QStashLayer {
    pub(crate) config: Arc<Config>,
}

impl QStashLayer {
    /// The default of [`drain_limit`](Self::drain_limit): 64 MiB.
    ///
    /// Draining costs bandwidth and time, never memory (each frame is dropped as it arrives), so
    /// the budget can be far above the body limit: 64 MiB covers the oversized uploads a client
    /// plausibly sends by mistake (a message over the limit, a misrouted file upload), about half
    /// a second at 1 Gbit/s, while a client streaming without end is cut off after 64 MiB
    /// instead of holding the connection for as long as it sends.
    pub const DEFAULT_DRAIN_LIMIT: usize = 64 * 1024 * 1024;

    /// A layer verifying with `receiver`.
    #[must_use]
    pub fn new(receiver: Receiver) -> Self {
        Self {
            config: Arc::new(Config {
                receiver,
                on_rejection: None,
                drain_limit: Self::DEFAULT_DRAIN_LIMIT as u64,
            }),
        }
    }

    fn map_receiver(mut self, f: impl FnOnce(Receiver) -> Receiver) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.receiver = f(config.receiver.clone());
        self
    }

    /// How to decide the URL each delivery must be signed for (see [`UrlPolicy`]).
    #[deprecated(
        since = "0.2.0",
        note = "set it on the receiver: `Receiver::url_policy`"
    )]
    #[must_use]
    pub fn url_policy(self, policy: UrlPolicy) -> Self {
        self.map_receiver(|r| r.url_policy(policy))
    }

    /// Every delivery must be signed for exactly `url` (a layer in front of one route).
    #[deprecated(
        since = "0.2.0",
        note = "set it on the receiver: `Receiver::expected_url`"
    )]
    #[must_use]
    pub fn expected_url(self, url: impl Into<String>) -> Self {
        self.map_receiver(|r| r.expected_url(url))
    }

    /// Every delivery must be signed for `base` followed by the request's original path and
    /// query ([`UrlPolicy::public_base`]).
    ///
    /// # Errors
    ///
    /// `base` is not an absolute `http://` or `https://` URL without a query.
    #[deprecated(
        since = "0.2.0",
        note = "set it on the receiver: `Receiver::public_url`"
    )]
    pub fn public_url(self, base: impl Into<String>) -> Result<Self, UrlPolicyError> {
        let policy = UrlPolicy::public_base(base)?;
        Ok(self.map_receiver(|r| r.url_policy(policy)))
    }

    /// The largest body accepted, in bytes; larger ones are answered 413.
    #[deprecated(
        since = "0.2.0",
        note = "set it on the receiver: `Receiver::max_body_bytes`"
    )]
    #[must_use]
    pub fn max_body_bytes(self, limit: usize) -> Self {
        self.map_receiver(|r| r.max_body_bytes(limit))
    }

    /// Answer an unusable verified payload with 489 (see
    /// [`Receiver::non_retryable_invalid_payload`]).
    #[deprecated(
        since = "0.2.0",
        note = "set it on the receiver: `Receiver::non_retryable_invalid_payload`"
    )]
    #[must_use]
    pub fn non_retryable_invalid_payload(self, enabled: bool) -> Self {
        self.map_receiver(|r| r.non_retryable_invalid_payload(enabled))
    }

    /// Deduplicates deliveries by message id (see [`Receiver::dedup`]).
    #[deprecated(since = "0.2.0", note = "set it on the receiver: `Receiver::dedup`")]
    #[must_use]
    pub fn dedup(self, dedup: crate::dedup::Dedup) -> Self {
        self.map_receiver(|r| r.dedup(dedup))
    }

    /// How many bytes of an oversized request's unread body are read and discarded before the
    /// 413 goes out (default [`DEFAULT_DRAIN_LIMIT`](Self::DEFAULT_DRAIN_LIMIT), 64 MiB; `0`
    /// disables draining).
    ///
    /// A request refused with 413 (its token verified, but its `Content-Length` is over the
    /// limit, or its body passed the limit) still has its upload in flight. Answering and
    /// closing at once leaves those bytes unread in the socket: the kernel resets the
    /// connection and a client still sending can lose the answer (hyper closes such a
    /// connection). So the layer first drains the body, dropping each frame as it arrives
    /// (memory stays O(1) per connection), until it ends, fails (client gone), or this many
    /// bytes were read; then it answers, with a `content-length`, and the connection can even
    /// be kept alive. A body announced longer than the budget is not drained (it could not end
    /// within it).
    ///
    /// Only requests whose token verified are drained: any other refusal of the head (401,
    /// 400, 500 `misconfigured`) is answered at once, as before, so that an unauthenticated
    /// client cannot hold a connection open by trickling a body. Not drained either: HTTP/2 and
    /// later (a refused stream is reset alone, no connection is lost), an `Expect:
    /// 100-continue` request refused by its `Content-Length` (its client has not sent the
    /// body), a body already at its end. Refusals after the whole body was read (wrong body
    /// hash, duplicates, deduplication refusals) have nothing to drain.
    ///
    /// The client sees its 413 once its upload is read, not before. Draining is bounded in
    /// bytes, not in time: put a timeout around the service for slow clients.
    #[must_use]
    pub fn drain_limit(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).drain_limit = bytes as u64;
        self
    }

    /// Replaces the response sent for a rejection (default: [`Rejection::status`],
    /// [`Rejection::headers`] and the JSON [`Rejection::json_body`]). Keep a non-2xx status:
    /// QStash must retry what was not processed.
    #[must_use]
    pub fn on_rejection<F>(mut self, f: F) -> Self
    where
        F: Fn(&Rejection) -> http::Response<Bytes> + Send + Sync + 'static,
    {
        Arc::make_mut(&mut self.config).on_rejection = Some(Arc::new(f));
        self
    }

    /// The receiver this layer verifies with.
    pub fn receiver(&self) -> &Receiver {
        &self.config.receiver
    }
}

impl<S> Layer<S> for QStashLayer {
    type Service = QStash<S>;

    fn layer(&self, inner: S) -> Self::Service {
        QStash {
            inner,
            config: Arc::clone(&self.config),
        }
    }
}
