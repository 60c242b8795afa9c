//! [`Lease`]: the claim on a message id while its handler runs, and its settlement.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[cfg(doc)]
use super::MemoryStore;
use super::config::MESSAGE_KEY_PREFIX;
use super::{DedupStore, LeaseOutcome, LeaseToken, StoreError};

/// How long after a [`Lease`]'s failed settlement it is tried once more, in the background.
pub const RELEASE_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The lease on a message id, held while the handler runs. Finish it with the handler's status
/// ([`Lease::finish`]), or [`Lease::complete`] / [`Lease::release`] it.
///
/// Dropped before it is settled, it completes once its completion has begun ([`Lease::complete`],
/// or [`Lease::finish`] with a 2xx, even if that future is never polled): a dropped request
/// never turns a success into a release. Otherwise (a panic, a request dropped while the handler
/// runs) it releases, so QStash's retry runs: at once with a store that answers at once
/// ([`MemoryStore`]), else on the current tokio runtime (without one, the lease expires after its
/// TTL). A failed settlement is tried once more [`RELEASE_RETRY_DELAY`] later, in the background.
pub struct Lease {
    /// What to settle; `None` once settled (or, for a claim that took no lease, to forget it).
    pub(super) armed: Option<Armed>,
    /// The handler succeeded: dropping the lease completes it.
    completing: bool,
}

pub(crate) struct Armed {
    pub(crate) store: Arc<dyn DedupStore>,
    /// `msg:<message id>:<body hash>` (see `config::claim_key`).
    pub(crate) key: String,
    pub(crate) token: LeaseToken,
    pub(crate) retention: Duration,
}

impl Armed {
    /// The message id, from the key: a body hash (base64url) has no `:`.
    fn message_id(&self) -> &str {
        let rest = self.key.get(MESSAGE_KEY_PREFIX.len()..).unwrap_or_default();
        rest.rsplit_once(':').map_or(rest, |(id, _)| id)
    }

    /// Completes or releases the lease and logs the outcome (`then`: what follows a failure).
    async fn settle(&self, complete: bool, then: &str) -> Result<LeaseOutcome, StoreError> {
        let (settle, result) = if complete {
            let completed = self.store.complete(&self.key, &self.token, self.retention);
            ("complete", completed.await)
        } else {
            ("release", self.store.release(&self.key, &self.token).await)
        };
        // The message id, computed only for an enabled log line (tracing evaluates fields lazily).
        let id = || self.message_id();
        match &result {
            Ok(LeaseOutcome::Applied) => {
                tracing::debug!(message_id = id(), settle, "qstash lease settled")
            }
            Ok(LeaseOutcome::NotHeld) if complete => tracing::warn!(
                message_id = id(),
                "qstash lease expired before completion: the message may be processed again"
            ),
            Ok(LeaseOutcome::NotHeld) => {}
            Err(error) => {
                crate::observe::store_error(settle);
                let msg = "qstash dedup store failed to settle a lease";
                tracing::warn!(message_id = id(), settle, %error, "{msg}: {then}");
            }
        }
        result
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("message_id", &self.message_id())
            .field("completing", &self.completing)
            .finish_non_exhaustive()
    }
}

impl Lease {
    pub(super) fn new(armed: Armed) -> Self {
        Self {
            armed: Some(armed),
            completing: false,
        }
    }

    /// The message id this lease holds.
    pub fn message_id(&self) -> &str {
        self.armed.as_ref().map_or("", Armed::message_id)
    }

    /// Settles from the handler's response status: a 2xx completes ([`Lease::complete`]),
    /// anything else releases ([`Lease::release`]).
    pub fn finish(
        mut self,
        status: u16,
    ) -> impl Future<Output = Result<LeaseOutcome, StoreError>> + Send + 'static {
        self.completing = (200..300).contains(&status);
        self.settle()
    }

    /// Marks the message completed: later deliveries of it are duplicates for the retention.
    ///
    /// `Ok(LeaseOutcome::NotHeld)` means the lease had expired (the handler ran longer than the
    /// lease TTL) and may have been taken over: logged as a warning.
    pub fn complete(
        self,
    ) -> impl Future<Output = Result<LeaseOutcome, StoreError>> + Send + 'static {
        self.finish(200)
    }

    /// Gives the message id back, so the next delivery of it (QStash's retry) runs.
    pub async fn release(mut self) -> Result<LeaseOutcome, StoreError> {
        self.completing = false;
        self.settle().await
    }

    /// Completes or releases as `completing` says; `armed` stays in place until the store has
    /// answered, so that a drop midway settles in the background.
    async fn settle(mut self) -> Result<LeaseOutcome, StoreError> {
        let Some(a) = self.armed.as_ref() else {
            return Ok(LeaseOutcome::NotHeld);
        };
        let result = a.settle(self.completing, "tried once more shortly").await;
        if let (Err(_), Some(a)) = (&result, self.armed.take()) {
            settle_in_background(a, self.completing, RELEASE_RETRY_DELAY);
        }
        result
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(armed) = self.armed.take() {
            tracing::debug!(
                message_id = armed.message_id(),
                "qstash lease dropped: settling"
            );
            settle_in_background(armed, self.completing, Duration::ZERO);
        }
    }
}

/// Completes or releases `a`'s lease after `delay` (see [`Lease`]). Without a delay, first
/// polled once right here: a store that answers at once needs no task, even outside a runtime or
/// while one shuts down.
fn settle_in_background(a: Armed, complete: bool, delay: Duration) {
    let a = Arc::new(a);
    let armed = Arc::clone(&a);
    let mut task = Box::pin(async move {
        // Without tokio, a task with a delay is never polled: there is no runtime to spawn it on.
        #[cfg(any(feature = "tower", feature = "actix-web", feature = "redis"))]
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let _ = armed
            .settle(complete, "retries wait until the lease expires")
            .await;
    });
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if delay.is_zero() && task.as_mut().poll(&mut cx).is_ready() {
        return;
    }
    #[cfg(any(feature = "tower", feature = "actix-web", feature = "redis"))]
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(task);
        return;
    }
    tracing::warn!(
        message_id = a.message_id(),
        "qstash lease left unsettled outside a tokio runtime: it expires after its TTL"
    );
}
