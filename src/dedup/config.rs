//! [`Dedup`]: the store and the policy, and what it decides for a delivery ([`Begin`]).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::lease::{Armed, Lease};
use super::{
    ClaimOutcome, DEFAULT_LEASE_TTL, DEFAULT_RETENTION, DEFAULT_STORE_RETRY_AFTER, DedupStore,
    MAX_RETRY_AFTER, MAX_TTL, REPLAY_GUARD_MARGIN, StoreError,
};
#[cfg(doc)]
use super::{DUPLICATE_HEADER, DUPLICATE_STATUS, duplicate_json_body};
use crate::{Claims, Delivery, Rejection};

/// What to do when the store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnStoreError {
    /// Refuse with [`Rejection::StoreUnavailable`] (`503` + `Retry-After`): the handler does not
    /// run, QStash retries. The default: never processes a message twice because Redis blinked.
    #[default]
    FailClosed,
    /// Run the handler without deduplication ([`Begin::RunUnguarded`]) and log a warning.
    FailOpen,
}

/// The `Retry-After` of a `409` answered while another request holds the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InProgressRetryAfter {
    /// The lease's remaining time, at most `max` (and at least 1 s): QStash comes back when the
    /// lease has expired or, usually, long after the first attempt has finished. The default,
    /// with `max` = [`MAX_RETRY_AFTER`].
    RemainingLease {
        /// The cap.
        max: Duration,
    },
    /// Always this delay (at least 1 s).
    Fixed(Duration),
}

impl Default for InProgressRetryAfter {
    fn default() -> Self {
        Self::RemainingLease {
            max: MAX_RETRY_AFTER,
        }
    }
}

impl InProgressRetryAfter {
    pub(super) fn seconds(self, remaining: Duration) -> u32 {
        match self {
            Self::RemainingLease { max } => ceil_secs(remaining.min(max)),
            Self::Fixed(delay) => ceil_secs(delay),
        }
    }
}

pub(super) fn ceil_secs(d: Duration) -> u32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    u32::try_from(secs).unwrap_or(u32::MAX).max(1)
}

/// Why [`Begin::RunUnguarded`] runs the handler without deduplication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnguardedReason {
    /// The delivery has no `Upstash-Message-Id` (QStash always sends one).
    NoMessageId,
    /// The store failed and the policy is [`OnStoreError::FailOpen`].
    StoreUnavailable,
}

/// What to do with a verified delivery, from [`Dedup::begin`].
#[derive(Debug)]
#[must_use = "the lease must be finished with the handler's status"]
#[non_exhaustive]
pub enum Begin {
    /// Run the handler, then [`Lease::finish`] with its status (or complete / release).
    Run(Lease),
    /// Already completed: do not run the handler; answer [`DUPLICATE_STATUS`] with
    /// [`DUPLICATE_HEADER`] and [`duplicate_json_body`].
    Duplicate {
        /// The message id.
        message_id: String,
    },
    /// Do not run the handler; answer this rejection (in progress, store unavailable, replay).
    Refuse(Rejection),
    /// Run the handler without deduplication.
    RunUnguarded {
        /// Why.
        reason: UnguardedReason,
    },
}

/// Deduplication of verified deliveries by message id: the store and the policy. Cheap to clone
/// (an `Arc` inside). See the [module docs](super).
#[derive(Clone)]
pub struct Dedup {
    config: Arc<Config>,
}

#[derive(Clone)]
struct Config {
    store: Arc<dyn DedupStore>,
    lease_ttl: Duration,
    retention: Duration,
    on_store_error: OnStoreError,
    replay_guard: bool,
    in_progress_retry_after: InProgressRetryAfter,
    store_retry_after: Duration,
}

impl fmt::Debug for Dedup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        f.debug_struct("Dedup")
            .field("lease_ttl", &c.lease_ttl)
            .field("retention", &c.retention)
            .field("on_store_error", &c.on_store_error)
            .field("replay_guard", &c.replay_guard)
            .field("in_progress_retry_after", &c.in_progress_retry_after)
            .field("store_retry_after", &c.store_retry_after)
            .finish_non_exhaustive()
    }
}

impl Dedup {
    /// Deduplication in `store` with the defaults: lease TTL [`DEFAULT_LEASE_TTL`], retention
    /// [`DEFAULT_RETENTION`], fail closed, no replay guard.
    #[must_use]
    pub fn new(store: Arc<dyn DedupStore>) -> Self {
        Self {
            config: Arc::new(Config {
                store,
                lease_ttl: DEFAULT_LEASE_TTL,
                retention: DEFAULT_RETENTION,
                on_store_error: OnStoreError::FailClosed,
                replay_guard: false,
                in_progress_retry_after: InProgressRetryAfter::default(),
                store_retry_after: DEFAULT_STORE_RETRY_AFTER,
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// How long a claim holds a message id before another may take it over (a crashed holder
    /// never settles it). Keep it above your handlers' longest run. Capped at 10 years.
    #[must_use]
    pub fn lease_ttl(self, ttl: Duration) -> Self {
        self.with(|c| c.lease_ttl = ttl.min(MAX_TTL))
    }

    /// How long a completed message id is remembered. Capped at 10 years.
    #[must_use]
    pub fn retention(self, retention: Duration) -> Self {
        self.with(|c| c.retention = retention.min(MAX_TTL))
    }

    /// What to do when the store fails (default: [`OnStoreError::FailClosed`]).
    #[must_use]
    pub fn on_store_error(self, policy: OnStoreError) -> Self {
        self.with(|c| c.on_store_error = policy)
    }

    /// Refuse ([`Rejection::Replayed`]) a second request carrying the same token `jti` while the
    /// token is valid (plus [`REPLAY_GUARD_MARGIN`]). One more store operation per delivery.
    #[must_use]
    pub fn replay_guard(self, enabled: bool) -> Self {
        self.with(|c| c.replay_guard = enabled)
    }

    /// The `Retry-After` of the `409` answered while another request holds the lease.
    #[must_use]
    pub fn in_progress_retry_after(self, policy: InProgressRetryAfter) -> Self {
        self.with(|c| c.in_progress_retry_after = policy)
    }

    /// The `Retry-After` of the `503` answered when the store fails (at least 1 s).
    #[must_use]
    pub fn store_retry_after(self, delay: Duration) -> Self {
        self.with(|c| c.store_retry_after = delay)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn DedupStore> {
        &self.config.store
    }

    /// Decides what to do with a verified delivery: run it under a lease, answer it as a
    /// duplicate, refuse it, or run it unguarded. Call it after the body is verified.
    pub async fn begin(&self, delivery: &Delivery, claims: &Claims) -> Begin {
        self.begin_at(delivery, claims, SystemTime::now()).await
    }

    /// [`Dedup::begin`] at time `now` (the replay guard remembers a `jti` until the token's
    /// `exp` + [`REPLAY_GUARD_MARGIN`] after `now`).
    pub async fn begin_at(&self, delivery: &Delivery, claims: &Claims, now: SystemTime) -> Begin {
        let c = &*self.config;
        if c.replay_guard {
            if let Some(refusal) = self.check_replay(delivery, claims, now).await {
                return refusal;
            }
        }
        let Some(message_id) = delivery.message_id() else {
            return unguarded_without_id();
        };
        let key = message_key(message_id);
        let claimed = c.store.claim(&key, c.lease_ttl).await;
        self.claimed(message_id, key, claimed)
    }

    /// [`Dedup::begin`] without waiting, when the store answers at once
    /// ([`DedupStore::claim_now`]) and the replay guard is off; `None` otherwise (use `begin`).
    #[cfg_attr(not(any(feature = "tower", feature = "actix-web")), allow(dead_code))]
    pub(crate) fn begin_now(&self, delivery: &Delivery) -> Option<Begin> {
        let c = &*self.config;
        if c.replay_guard {
            return None;
        }
        let Some(message_id) = delivery.message_id() else {
            return Some(unguarded_without_id());
        };
        let key = message_key(message_id);
        let claimed = c.store.claim_now(&key, c.lease_ttl)?;
        Some(self.claimed(message_id, key, claimed))
    }

    /// What a claim's outcome means for the delivery.
    fn claimed(
        &self,
        message_id: &str,
        key: String,
        claimed: Result<ClaimOutcome, StoreError>,
    ) -> Begin {
        let c = &*self.config;
        match claimed {
            Ok(ClaimOutcome::Acquired(token)) => Begin::Run(Lease::new(Armed {
                store: Arc::clone(&c.store),
                key,
                token,
                retention: c.retention,
            })),
            Ok(ClaimOutcome::Completed) => {
                tracing::info!(message_id, "qstash duplicate: message already completed");
                Begin::Duplicate {
                    message_id: message_id.to_owned(),
                }
            }
            Ok(ClaimOutcome::InProgress { remaining }) => {
                let retry_after_secs = c.in_progress_retry_after.seconds(remaining);
                tracing::info!(
                    message_id,
                    retry_after_secs,
                    "qstash message in progress elsewhere: refused with 409"
                );
                Begin::Refuse(Rejection::InProgress { retry_after_secs })
            }
            Err(error) => self.store_failed(message_id, &error),
        }
    }

    async fn check_replay(
        &self,
        delivery: &Delivery,
        claims: &Claims,
        now: SystemTime,
    ) -> Option<Begin> {
        let c = &*self.config;
        let message_id = delivery.message_id().unwrap_or("");
        let jti = claims.jwt_id()?;
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let valid_for = u64::try_from(claims.expires_at().saturating_sub(now_secs)).unwrap_or(0);
        let ttl = Duration::from_secs(valid_for)
            .saturating_add(REPLAY_GUARD_MARGIN)
            .min(MAX_TTL);
        match c.store.remember(&format!("jti:{jti}"), ttl).await {
            Ok(true) => None,
            Ok(false) => {
                tracing::warn!(message_id, "qstash token replayed: refused");
                Some(Begin::Refuse(Rejection::Replayed))
            }
            Err(error) => match self.store_failed(message_id, &error) {
                Begin::RunUnguarded { .. } => None,
                refusal => Some(refusal),
            },
        }
    }

    fn store_failed(&self, message_id: &str, error: &StoreError) -> Begin {
        let c = &*self.config;
        match c.on_store_error {
            OnStoreError::FailClosed => {
                tracing::error!(message_id, %error, "qstash dedup store failed: refused with 503");
                Begin::Refuse(Rejection::StoreUnavailable {
                    retry_after_secs: ceil_secs(c.store_retry_after),
                })
            }
            OnStoreError::FailOpen => {
                tracing::warn!(
                    message_id,
                    %error,
                    "qstash dedup store failed: processing without deduplication (fail open)"
                );
                Begin::RunUnguarded {
                    reason: UnguardedReason::StoreUnavailable,
                }
            }
        }
    }
}

/// The prefix of a message id's store key.
pub(super) const MESSAGE_KEY_PREFIX: &str = "msg:";

/// The store key of a message id: `msg:<id>`.
fn message_key(message_id: &str) -> String {
    let mut key = String::with_capacity(MESSAGE_KEY_PREFIX.len() + message_id.len());
    key.push_str(MESSAGE_KEY_PREFIX);
    key.push_str(message_id);
    key
}

fn unguarded_without_id() -> Begin {
    tracing::warn!("qstash delivery without upstash-message-id: processed without deduplication");
    Begin::RunUnguarded {
        reason: UnguardedReason::NoMessageId,
    }
}
