//! [`QStashLayer`]: the configuration shared by every clone of the service.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use tower_layer::Layer;

use super::{QStash, ResponseBody};
use crate::{Receiver, Rejection, UrlPolicy, UrlPolicyError};

/// A function that turns a [`Rejection`] into the response sent instead of the default JSON one.
pub(crate) type RejectionFn = dyn Fn(&Rejection) -> http::Response<Bytes> + Send + Sync;

/// What every clone of the service shares (behind one `Arc`).
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) receiver: Receiver,
    pub(crate) on_rejection: Option<Arc<RejectionFn>>,
    /// [`QStashLayer::drain_limit`].
    pub(crate) drain_limit: u64,
}

impl Config {
    /// The response to `rejection`: [`QStashLayer::on_rejection`]'s, else the shared JSON one.
    pub(crate) fn response<B>(&self, rejection: &Rejection) -> http::Response<ResponseBody<B>> {
        let response = match &self.on_rejection {
            Some(f) => f(rejection),
            None => super::json_response(rejection),
        };
        response.map(ResponseBody::rejection)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("receiver", &self.receiver)
            .field("drain_limit", &self.drain_limit)
            .field("on_rejection", &self.on_rejection.is_some())
            .finish()
    }
}

/// A tower [`Layer`] that verifies every request as a QStash delivery before the inner service
/// sees it: wraps services in [`QStash`]. Cheap to clone (one `Arc`).
///
/// The [`Receiver`] holds the whole policy (keys, URL policy, body limit, deduplication, the
/// answer to an unusable payload); the layer adds only [`on_rejection`](Self::on_rejection) and
/// [`drain_limit`](Self::drain_limit). See the [module docs](super) for what happens to each
/// request.
#[derive(Clone, Debug)]
pub struct QStashLayer {
    pub(crate) config: Arc<Config>,
}

impl QStashLayer {
    /// The default of [`drain_limit`](Self::drain_limit): 64 MiB, about half a second at
    /// 1 Gbit/s. Draining costs time, never memory, so it can be far above the body limit.
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
    #[deprecated(since = "0.2.0", note = "use `Receiver::url_policy`")]
    #[must_use]
    pub fn url_policy(self, policy: UrlPolicy) -> Self {
        self.map_receiver(|r| r.url_policy(policy))
    }

    /// Every delivery must be signed for exactly `url` (a layer in front of one route).
    #[deprecated(since = "0.2.0", note = "use `Receiver::expected_url`")]
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
    #[deprecated(since = "0.2.0", note = "use `Receiver::public_url`")]
    pub fn public_url(self, base: impl Into<String>) -> Result<Self, UrlPolicyError> {
        let policy = UrlPolicy::public_base(base)?;
        Ok(self.map_receiver(|r| r.url_policy(policy)))
    }

    /// The largest body accepted, in bytes; larger ones are answered 413.
    #[deprecated(since = "0.2.0", note = "use `Receiver::max_body_bytes`")]
    #[must_use]
    pub fn max_body_bytes(self, limit: usize) -> Self {
        self.map_receiver(|r| r.max_body_bytes(limit))
    }

    /// Answer an unusable verified payload with 489 (see
    /// [`Receiver::non_retryable_invalid_payload`]).
    #[deprecated(
        since = "0.2.0",
        note = "use `Receiver::non_retryable_invalid_payload`"
    )]
    #[must_use]
    pub fn non_retryable_invalid_payload(self, enabled: bool) -> Self {
        self.map_receiver(|r| r.non_retryable_invalid_payload(enabled))
    }

    /// Deduplicates deliveries by message id (see [`Receiver::dedup`]).
    #[deprecated(since = "0.2.0", note = "use `Receiver::dedup`")]
    #[must_use]
    pub fn dedup(self, dedup: crate::dedup::Dedup) -> Self {
        self.map_receiver(|r| r.dedup(dedup))
    }

    /// How many bytes of an oversized request's unread body are read and dropped before its 413
    /// goes out (default [`DEFAULT_DRAIN_LIMIT`](Self::DEFAULT_DRAIN_LIMIT); `0`: none).
    ///
    /// Answering with the upload still in flight leaves it unread in the socket: hyper closes
    /// the connection, the kernel resets it, and a client still sending can lose its answer. So
    /// the body is first read frame by frame (O(1) memory) until it ends, fails, or this many
    /// bytes were read. Only for a verified token (an unauthenticated client cannot hold the
    /// connection by trickling a body) over HTTP/1 (HTTP/2 resets the stream alone); not for an
    /// `Expect: 100-continue` request refused by its `Content-Length` (its body was not sent)
    /// nor a body announced longer than the budget. Bounded in bytes, not in time: put a
    /// timeout around the service for slow clients.
    #[must_use]
    pub fn drain_limit(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.config).drain_limit = bytes as u64;
        self
    }

    /// Replaces the response to a rejection (default: [`Rejection::status`],
    /// [`Rejection::headers`], the JSON [`Rejection::json_body`]). Keep a non-2xx status: QStash
    /// must retry what was not processed.
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
