//! [`Lease`]: the claim on a message id while its handler runs, and its settlement (also in the
//! background, when the request is dropped).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

#[cfg(doc)]
use super::MemoryStore;
use super::config::MESSAGE_KEY_PREFIX;
use super::{DedupStore, LeaseOutcome, LeaseToken, StoreError};

/// The lease on a message id, held while the handler runs. Finish it with the handler's status
/// ([`Lease::finish`]), or [`Lease::complete`] / [`Lease::release`] it. Dropped without either
/// (a panic, a dropped request future), it releases, so QStash's retry is processed: at once
/// with a store that answers at once ([`DedupStore::release_now`], as [`MemoryStore`] does),
/// else in the background on the current tokio runtime; without a runtime (or once it is
/// shutting down) such a lease expires after its TTL.
pub struct Lease {
    armed: Option<Armed>,
}

pub(crate) struct Armed {
    pub(crate) store: Arc<dyn DedupStore>,
    /// `msg:<message id>`.
    pub(crate) key: String,
    pub(crate) token: LeaseToken,
    pub(crate) retention: Duration,
}

impl Armed {
    /// The message id, from the key (no second copy).
    fn message_id(&self) -> &str {
        self.key.get(MESSAGE_KEY_PREFIX.len()..).unwrap_or_default()
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("message_id", &self.message_id())
            .finish_non_exhaustive()
    }
}

impl Lease {
    pub(super) fn new(armed: Armed) -> Self {
        Self { armed: Some(armed) }
    }

    /// The message id this lease holds.
    pub fn message_id(&self) -> &str {
        self.armed.as_ref().map_or("", Armed::message_id)
    }

    /// Settles from the handler's response status: a 2xx completes, anything else releases.
    pub async fn finish(self, status: u16) -> Result<LeaseOutcome, StoreError> {
        if (200..300).contains(&status) {
            self.complete().await
        } else {
            self.release().await
        }
    }

    /// [`Lease::finish`] without waiting, when the store answers at once
    /// ([`DedupStore::complete_now`] / [`DedupStore::release_now`]); the lease back otherwise.
    #[cfg_attr(not(any(feature = "tower", feature = "actix-web")), allow(dead_code))]
    pub(crate) fn finish_now(
        mut self,
        status: u16,
    ) -> Result<Result<LeaseOutcome, StoreError>, Self> {
        let Some(a) = self.armed.as_ref() else {
            return Ok(Ok(LeaseOutcome::NotHeld));
        };
        let result = if (200..300).contains(&status) {
            let Some(result) = a.store.complete_now(&a.key, &a.token, a.retention) else {
                return Err(self);
            };
            log_completed(a, &result);
            result
        } else {
            let Some(result) = a.store.release_now(&a.key, &a.token) else {
                return Err(self);
            };
            log_released(a, &result);
            result
        };
        self.armed = None;
        Ok(result)
    }

    /// Marks the message completed: later deliveries of it are duplicates for the retention.
    ///
    /// `Ok(LeaseOutcome::NotHeld)` means the lease had expired (the handler ran longer than the
    /// lease TTL) and may have been taken over: logged as a warning. If this future is dropped
    /// before it finishes, the lease is released in the background.
    pub async fn complete(mut self) -> Result<LeaseOutcome, StoreError> {
        let Some(a) = self.armed.as_ref() else {
            return Ok(LeaseOutcome::NotHeld);
        };
        let result = a.store.complete(&a.key, &a.token, a.retention).await;
        log_completed(a, &result);
        self.armed = None;
        result
    }

    /// Gives the message id back, so the next delivery of it (QStash's retry) runs.
    ///
    /// Should the store fail, the release is tried once more [`RELEASE_RETRY_DELAY`] later in
    /// the background (it is idempotent: the store checks the lease token), so that a passing
    /// store failure does not hold the id for the whole lease TTL.
    pub async fn release(mut self) -> Result<LeaseOutcome, StoreError> {
        let Some(a) = self.armed.as_ref() else {
            return Ok(LeaseOutcome::NotHeld);
        };
        let result = a.store.release(&a.key, &a.token).await;
        log_released(a, &result);
        if let (Err(_), Some(a)) = (&result, self.armed.take()) {
            release_in_background(a, RELEASE_RETRY_DELAY);
        }
        result
    }
}

fn log_completed(a: &Armed, result: &Result<LeaseOutcome, StoreError>) {
    match result {
        Ok(LeaseOutcome::Applied) => {}
        Ok(LeaseOutcome::NotHeld) => tracing::warn!(
            message_id = a.message_id(),
            "qstash lease expired before completion: the message may be processed again"
        ),
        Err(error) => tracing::warn!(
            message_id = a.message_id(),
            %error,
            "qstash dedup store failed to complete: a retry runs again once the lease expires"
        ),
    }
}

fn log_released(a: &Armed, result: &Result<LeaseOutcome, StoreError>) {
    if let Err(error) = result {
        tracing::warn!(
            message_id = a.message_id(),
            %error,
            "qstash dedup store failed to release"
        );
    }
}

/// How long after a failed [`Lease::release`] it is tried once more, in the background.
pub const RELEASE_RETRY_DELAY: Duration = Duration::from_secs(1);

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(armed) = self.armed.take() else {
            return;
        };
        // A store that answers at once (`MemoryStore`) releases right here: no task, so it also
        // works outside a runtime and while one shuts down.
        if let Some(result) = armed.store.release_now(&armed.key, &armed.token) {
            tracing::debug!(
                message_id = armed.message_id(),
                "qstash lease dropped: released"
            );
            log_released(&armed, &result);
            return;
        }
        tracing::debug!(
            message_id = armed.message_id(),
            "qstash lease dropped: releasing"
        );
        release_in_background(armed, Duration::ZERO);
    }
}

/// Releases `a`'s lease on the current tokio runtime after `delay` (a dropped lease, a release
/// tried once more, a claim whose reply was lost); without a runtime it expires after its TTL.
#[cfg(any(feature = "tower", feature = "actix-web", feature = "redis"))]
pub(crate) fn release_in_background(a: Armed, delay: Duration) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return no_runtime(&a);
    };
    handle.spawn(async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match a.store.release(&a.key, &a.token).await {
            Ok(_) => tracing::debug!(message_id = a.message_id(), "qstash lease released"),
            Err(error) => tracing::warn!(
                message_id = a.message_id(),
                %error,
                "qstash dedup store failed to release in the background: retries wait until \
                 the lease expires"
            ),
        }
    });
}

#[cfg(not(any(feature = "tower", feature = "actix-web", feature = "redis")))]
pub(crate) fn release_in_background(a: Armed, _delay: Duration) {
    no_runtime(&a);
}

fn no_runtime(a: &Armed) {
    tracing::warn!(
        message_id = a.message_id(),
        "qstash lease left unreleased outside a tokio runtime: it expires after its TTL"
    );
}
