//! [`Dedup`]: the store and the policy, and what it decides for a delivery ([`Begin`]).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::lease::{Armed, Lease};
use super::{
    ClaimOutcome, DEFAULT_LEASE_TTL, DEFAULT_RETENTION, DEFAULT_STORE_RETRY_AFTER, DedupStore,
    GuardedClaim, MAX_RETRY_AFTER, MAX_TTL, StoreError,
};
#[cfg(doc)]
use super::{DUPLICATE_HEADER, DUPLICATE_STATUS, duplicate_json_body};
use crate::{Claims, Delivery, Rejection};

/// What to do when the store fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnStoreError {
    /// Refuse with [`Rejection::StoreUnavailable`] (`503` + `Retry-After`); QStash retries. The
    /// default: never processes a message twice because Redis blinked.
    #[default]
    FailClosed,
    /// Run the handler without deduplication ([`Begin::RunUnguarded`]) and log a warning.
    FailOpen,
}

/// The `Retry-After` of a `409` answered while another request holds the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InProgressRetryAfter {
    /// The lease's remaining time (at least 1 s, at most `max` and [`MAX_RETRY_AFTER`]): QStash
    /// comes back once the lease has expired. The default, with `max` = [`MAX_RETRY_AFTER`].
    RemainingLease {
        /// The cap.
        max: Duration,
    },
    /// Always this delay (at least 1 s, at most [`MAX_RETRY_AFTER`]).
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
        retry_after_secs(match self {
            Self::RemainingLease { max } => remaining.min(max),
            Self::Fixed(delay) => delay,
        })
    }
}

/// A `Retry-After` in whole seconds, rounded up: from 1 to [`MAX_RETRY_AFTER`].
pub(super) fn retry_after_secs(d: Duration) -> u32 {
    u32::try_from(crate::head::retry_after_secs(d.min(MAX_RETRY_AFTER))).unwrap_or(u32::MAX)
}

/// Why [`Begin::RunUnguarded`] runs the handler without deduplication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnguardedReason {
    /// No longer produced (a delivery without `Upstash-Message-Id` is refused with
    /// [`Rejection::MissingMessageId`]); kept so that existing `match`es compile.
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
    store: Arc<dyn DedupStore>,
    config: Arc<Config>,
}

#[derive(Debug, Clone)]
struct Config {
    lease_ttl: Duration,
    retention: Duration,
    on_store_error: OnStoreError,
    replay_guard: bool,
    verifier_leeway: Duration,
    in_progress_retry_after: InProgressRetryAfter,
    store_retry_after: Duration,
}

impl fmt::Debug for Dedup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dedup")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Dedup {
    /// Deduplication in `store` with the defaults (see the setters).
    #[must_use]
    pub fn new(store: Arc<dyn DedupStore>) -> Self {
        Self {
            store,
            config: Arc::new(Config {
                lease_ttl: DEFAULT_LEASE_TTL,
                retention: DEFAULT_RETENTION,
                on_store_error: OnStoreError::FailClosed,
                replay_guard: true,
                verifier_leeway: Duration::ZERO,
                in_progress_retry_after: InProgressRetryAfter::default(),
                store_retry_after: DEFAULT_STORE_RETRY_AFTER,
            }),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// How long a claim holds a message id before another may take it over (default
    /// [`DEFAULT_LEASE_TTL`]). Keep it above your handlers' longest run. Capped at 10 years.
    #[must_use]
    pub fn lease_ttl(self, ttl: Duration) -> Self {
        self.with(|c| c.lease_ttl = ttl.min(MAX_TTL))
    }

    /// How long a completed message id is remembered (default [`DEFAULT_RETENTION`]). Capped at
    /// 10 years.
    #[must_use]
    pub fn retention(self, retention: Duration) -> Self {
        self.with(|c| c.retention = retention.min(MAX_TTL))
    }

    /// What to do when the store fails (default: [`OnStoreError::FailClosed`]).
    #[must_use]
    pub fn on_store_error(self, policy: OnStoreError) -> Self {
        self.with(|c| c.on_store_error = policy)
    }

    /// The replay guard (default: on): refuse ([`Rejection::Replayed`], `401`) a second request
    /// carrying the same token `jti` while that token could still verify. See the [module
    /// docs](super#defaults-and-why).
    #[must_use]
    pub fn replay_guard(self, enabled: bool) -> Self {
        self.with(|c| c.replay_guard = enabled)
    }

    /// The clock leeway of the verifier that checks the tokens (the replay guard remembers a token
    /// until `exp` + leeway); [`Receiver::dedup`](crate::Receiver::dedup) sets it from the
    /// receiver's. Keeps the larger of the values given; capped at 10 years.
    #[must_use]
    pub fn verifier_leeway(self, leeway: Duration) -> Self {
        self.with(|c| c.verifier_leeway = c.verifier_leeway.max(leeway.min(MAX_TTL)))
    }

    /// The `Retry-After` of the `409` answered while another request holds the lease (default:
    /// the lease's remaining time).
    #[must_use]
    pub fn in_progress_retry_after(self, policy: InProgressRetryAfter) -> Self {
        self.with(|c| c.in_progress_retry_after = policy)
    }

    /// The `Retry-After` of the `503` answered when the store fails (default
    /// [`DEFAULT_STORE_RETRY_AFTER`]; from 1 s to [`MAX_RETRY_AFTER`]).
    #[must_use]
    pub fn store_retry_after(self, delay: Duration) -> Self {
        self.with(|c| c.store_retry_after = delay)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn DedupStore> {
        &self.store
    }

    /// Decides what to do with a verified delivery: run it under a lease, answer it as a
    /// duplicate, or refuse it. Call it after the body is verified, with its claims.
    pub async fn begin(&self, delivery: &Delivery, claims: &Claims) -> Begin {
        self.begin_at(delivery, claims, SystemTime::now()).await
    }

    /// [`Dedup::begin`] at time `now` (the replay guard remembers a `jti` for
    /// [`Dedup::replay_guard_ttl`] after `now`).
    pub async fn begin_at(&self, delivery: &Delivery, claims: &Claims, now: SystemTime) -> Begin {
        let c = &*self.config;
        let Some(message_id) = delivery.message_id() else {
            tracing::warn!("qstash delivery without upstash-message-id: refused with 400");
            return refuse(Rejection::MissingMessageId);
        };
        let key = claim_key(message_id, claims.body_hash());
        let claimed = match self.guard(claims, now) {
            // Guard and claim in one store operation: one Redis round trip fewer.
            Some((jti, ttl)) if c.on_store_error == OnStoreError::FailClosed => {
                self.store.claim_guarded(&jti, ttl, &key, c.lease_ttl).await
            }
            // Fail open: a failing guard lets the claim be tried on its own, so two operations.
            Some((jti, ttl)) => match self.store.remember(&jti, ttl).await {
                Ok(false) => Ok(GuardedClaim::Replayed),
                Ok(true) => self.claim(&key).await,
                Err(error) => {
                    let _unguarded = self.store_failed(message_id, &error);
                    self.claim(&key).await
                }
            },
            None => self.claim(&key).await,
        };
        match claimed {
            Ok(GuardedClaim::Claimed(ClaimOutcome::Acquired(token))) => {
                Begin::Run(Lease::new(Armed {
                    store: Arc::clone(&self.store),
                    key,
                    token,
                    retention: c.retention,
                }))
            }
            Ok(GuardedClaim::Claimed(ClaimOutcome::Completed)) => {
                tracing::info!(message_id, "qstash duplicate: message already completed");
                crate::observe::duplicate();
                let message_id = message_id.to_owned();
                Begin::Duplicate { message_id }
            }
            Ok(GuardedClaim::Claimed(ClaimOutcome::InProgress { remaining })) => {
                let retry_after_secs = c.in_progress_retry_after.seconds(remaining);
                tracing::info!(
                    message_id,
                    retry_after_secs,
                    "qstash message in progress elsewhere: refused with 409"
                );
                refuse(Rejection::InProgress { retry_after_secs })
            }
            Ok(GuardedClaim::Replayed) => {
                tracing::warn!(message_id, "qstash token replayed: refused");
                refuse(Rejection::Replayed)
            }
            Err(error) => self.store_failed(message_id, &error),
        }
    }

    /// How long the replay guard remembers the `jti` of a token that expires at `expires_at`
    /// (Unix seconds), seen at `now`: until it can no longer verify (`expires_at` + the
    /// [verifier's leeway](Dedup::verifier_leeway) + 1 s of rounding). From 1 s to 10 years.
    pub fn replay_guard_ttl(&self, expires_at: i64, now: SystemTime) -> Duration {
        // In `i128`, nothing here can overflow.
        let now = match now.duration_since(UNIX_EPOCH) {
            Ok(since) => i128::from(since.as_secs()),
            Err(before) => -i128::from(before.duration().as_secs()),
        };
        let until = i128::from(expires_at) + i128::from(self.config.verifier_leeway.as_secs()) + 1;
        let secs = (until - now).clamp(1, i128::from(MAX_TTL.as_secs()));
        Duration::from_secs(u64::try_from(secs).unwrap_or(1))
    }

    /// The guard's key (`jti:<jti>`) and TTL, when the guard is on and the token has a `jti`.
    fn guard(&self, claims: &Claims, now: SystemTime) -> Option<(String, Duration)> {
        if !self.config.replay_guard {
            return None;
        }
        let Some(jti) = claims.jwt_id() else {
            tracing::debug!("qstash token without jti: the replay guard does not apply");
            return None;
        };
        let ttl = self.replay_guard_ttl(claims.expires_at(), now);
        Some((["jti:", jti].concat(), ttl))
    }

    async fn claim(&self, key: &str) -> Result<GuardedClaim, StoreError> {
        let claimed = self.store.claim(key, self.config.lease_ttl).await;
        claimed.map(GuardedClaim::Claimed)
    }

    fn store_failed(&self, message_id: &str, error: &StoreError) -> Begin {
        crate::observe::store_error("claim");
        match self.config.on_store_error {
            OnStoreError::FailClosed => {
                tracing::error!(message_id, %error, "qstash dedup store failed: refused with 503");
                let retry_after_secs = retry_after_secs(self.config.store_retry_after);
                refuse(Rejection::StoreUnavailable { retry_after_secs })
            }
            OnStoreError::FailOpen => {
                tracing::warn!(
                    message_id,
                    %error,
                    "qstash dedup store failed: processing without deduplication (fail open)"
                );
                let reason = UnguardedReason::StoreUnavailable;
                Begin::RunUnguarded { reason }
            }
        }
    }
}

fn refuse(rejection: Rejection) -> Begin {
    crate::observe::refused(&rejection);
    Begin::Refuse(rejection)
}

/// The prefix of a message id's store key.
pub(super) const MESSAGE_KEY_PREFIX: &str = "msg:";

/// The store key of a delivery: `msg:<message id>:<body hash>`, the body hash being the
/// token's signed `body` claim without its `=` padding (see the [module docs](super)).
pub(super) fn claim_key(message_id: &str, body_hash: &str) -> String {
    let body_hash = body_hash.trim_end_matches('=');
    [MESSAGE_KEY_PREFIX, message_id, ":", body_hash].concat()
}
