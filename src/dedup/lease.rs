//! [`Lease`]: the claim on a message id while its handler runs, and its settlement (also in the
//! background, when the request is dropped).

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[cfg(doc)]
use super::MemoryStore;
use super::config::MESSAGE_KEY_PREFIX;
use super::{DedupStore, LeaseOutcome, LeaseToken, StoreError};

/// The lease on a message id, held while the handler runs. Finish it with the handler's status
/// ([`Lease::finish`]), or [`Lease::complete`] / [`Lease::release`] it.
///
/// Dropped before it is settled:
///
/// - once its completion has begun ([`Lease::complete`], or [`Lease::finish`] with a 2xx, even
///   a future dropped before its first poll), the completion is still written: the handler
///   succeeded, so QStash's retry must be a duplicate. A dropped request (a timeout above the
///   layer, a client gone) never turns a success into a release;
/// - otherwise (a panic, a request dropped while the handler runs), it releases, so QStash's
///   retry is processed.
///
/// Either is done at once with a store whose futures are ready at once (as [`MemoryStore`]'s
/// are), else in the background on the current tokio runtime; without a runtime (or once it is
/// shutting down) the lease expires after its TTL.
pub struct Lease {
    armed: Option<Armed>,
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
    /// The message id, from the key (no second copy): the key ends with `:<body hash>`, and a
    /// body hash (base64url) has no `:`.
    pub(crate) fn message_id(&self) -> &str {
        let rest = self.key.get(MESSAGE_KEY_PREFIX.len()..).unwrap_or_default();
        rest.rsplit_once(':').map_or(rest, |(id, _)| id)
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

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
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

    /// Settles from the handler's response status: a 2xx completes, anything else releases.
    ///
    /// A 2xx commits the completion as soon as this is called: should the returned future be
    /// dropped before it finishes (even before it is first polled), the completion is written
    /// anyway (see [`Lease::complete`]).
    pub fn finish(
        mut self,
        status: u16,
    ) -> impl Future<Output = Result<LeaseOutcome, StoreError>> + Send + 'static {
        let success = is_success(status);
        if success {
            self.completing = true;
        }
        async move {
            if success {
                self.complete_committed().await
            } else {
                self.release().await
            }
        }
    }

    /// Marks the message completed: later deliveries of it are duplicates for the retention.
    ///
    /// `Ok(LeaseOutcome::NotHeld)` means the lease had expired (the handler ran longer than the
    /// lease TTL) and may have been taken over: logged as a warning. The completion is committed
    /// when this is called: if the returned future is dropped before it finishes (a timeout
    /// above the layer, a client gone), the completion is written in the background, never
    /// replaced by a release. Should the store fail, the completion is tried once more
    /// [`RELEASE_RETRY_DELAY`] later in the background (the store checks the lease token).
    pub fn complete(
        mut self,
    ) -> impl Future<Output = Result<LeaseOutcome, StoreError>> + Send + 'static {
        self.completing = true;
        self.complete_committed()
    }

    async fn complete_committed(mut self) -> Result<LeaseOutcome, StoreError> {
        let Some(a) = self.armed.as_ref() else {
            return Ok(LeaseOutcome::NotHeld);
        };
        let result = a.store.complete(&a.key, &a.token, a.retention).await;
        log_completed(a, &result);
        if let (Err(_), Some(a)) = (&result, self.armed.take()) {
            settle_in_background(a, Settle::Complete, RELEASE_RETRY_DELAY);
        }
        self.armed = None;
        result
    }

    /// Gives the message id back, so the next delivery of it (QStash's retry) runs.
    ///
    /// Should the store fail, the release is tried once more [`RELEASE_RETRY_DELAY`] later in
    /// the background (it is idempotent: the store checks the lease token), so that a passing
    /// store failure does not hold the id for the whole lease TTL.
    pub async fn release(mut self) -> Result<LeaseOutcome, StoreError> {
        // Explicitly released: a drop from here on releases too.
        self.completing = false;
        let Some(a) = self.armed.as_ref() else {
            return Ok(LeaseOutcome::NotHeld);
        };
        let result = a.store.release(&a.key, &a.token).await;
        log_released(a, &result);
        if let (Err(_), Some(a)) = (&result, self.armed.take()) {
            settle_in_background(a, Settle::Release, RELEASE_RETRY_DELAY);
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
        Err(error) => {
            crate::observe::store_error("complete");
            tracing::warn!(
                message_id = a.message_id(),
                %error,
                "qstash dedup store failed to complete: tried once more in the background"
            );
        }
    }
}

fn log_released(a: &Armed, result: &Result<LeaseOutcome, StoreError>) {
    if let Err(error) = result {
        crate::observe::store_error("release");
        tracing::warn!(
            message_id = a.message_id(),
            %error,
            "qstash dedup store failed to release"
        );
    }
}

/// How long after a failed [`Lease::release`] (or [`Lease::complete`]) it is tried once more,
/// in the background.
pub const RELEASE_RETRY_DELAY: Duration = Duration::from_secs(1);

impl Drop for Lease {
    fn drop(&mut self) {
        let Some(armed) = self.armed.take() else {
            return;
        };
        let settle = if self.completing {
            Settle::Complete
        } else {
            Settle::Release
        };
        tracing::debug!(
            message_id = armed.message_id(),
            settle = settle.as_str(),
            "qstash lease dropped: settling"
        );
        settle_in_background(armed, settle, Duration::ZERO);
    }
}

/// How a lease is settled in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settle {
    /// The handler succeeded: mark the id completed.
    Complete,
    /// Give the id back.
    Release,
}

impl Settle {
    fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Release => "release",
        }
    }
}

/// Releases `a`'s lease in the background after `delay` (a claim whose reply was lost).
#[cfg(feature = "redis")]
pub(crate) fn release_in_background(a: Armed, delay: Duration) {
    settle_in_background(a, Settle::Release, delay);
}

/// Settles `a`'s lease after `delay` (a dropped lease, a settlement tried once more). Without
/// a delay, the settlement is first polled once right here: a store that answers at once
/// ([`MemoryStore`]) is settled with no task, so it also works outside a runtime and while one
/// shuts down. Otherwise it goes on as a task of the current tokio runtime; without a runtime,
/// the lease expires after its TTL.
fn settle_in_background(a: Armed, settle: Settle, delay: Duration) {
    let a = Arc::new(a);
    let mut task = Box::pin(settle_task(Arc::clone(&a), settle, delay));
    if delay.is_zero() {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if task.as_mut().poll(&mut cx).is_ready() {
            return;
        }
    }
    #[cfg(any(feature = "tower", feature = "actix-web", feature = "redis"))]
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(task);
        return;
    }
    drop(task);
    no_runtime(&a, settle);
}

async fn settle_task(a: Arc<Armed>, settle: Settle, delay: Duration) {
    if !delay.is_zero() {
        #[cfg(any(feature = "tower", feature = "actix-web", feature = "redis"))]
        tokio::time::sleep(delay).await;
        // Without tokio there is no timer (nor a runtime to wait on): never polled past here.
        #[cfg(not(any(feature = "tower", feature = "actix-web", feature = "redis")))]
        std::future::pending::<()>().await;
    }
    let result = match settle {
        Settle::Complete => a.store.complete(&a.key, &a.token, a.retention).await,
        Settle::Release => a.store.release(&a.key, &a.token).await,
    };
    match result {
        Ok(LeaseOutcome::Applied) => tracing::debug!(
            message_id = a.message_id(),
            settle = settle.as_str(),
            "qstash lease settled"
        ),
        Ok(LeaseOutcome::NotHeld) if settle == Settle::Complete => tracing::warn!(
            message_id = a.message_id(),
            "qstash lease expired before completion: the message may be processed again"
        ),
        Ok(LeaseOutcome::NotHeld) => {}
        Err(error) => {
            crate::observe::store_error(settle.as_str());
            tracing::warn!(
                message_id = a.message_id(),
                settle = settle.as_str(),
                %error,
                "qstash dedup store failed to settle a lease in the background: retries wait \
                 until the lease expires"
            );
        }
    }
}

fn no_runtime(a: &Armed, settle: Settle) {
    tracing::warn!(
        message_id = a.message_id(),
        settle = settle.as_str(),
        "qstash lease left unsettled outside a tokio runtime: it expires after its TTL"
    );
}
