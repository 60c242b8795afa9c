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
    /// The lease's remaining time, at most `max` and [`MAX_RETRY_AFTER`] (and at least 1 s): QStash comes back when the
    /// lease has expired or, usually, long after the first attempt has finished. The default,
    /// with `max` = [`MAX_RETRY_AFTER`].
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
        match self {
            Self::RemainingLease { max } => retry_after_secs(remaining.min(max)),
            Self::Fixed(delay) => retry_after_secs(delay),
        }
    }
}

/// Whole seconds, rounded up, at least 1; saturating (never wraps, never panics), at most
/// `u32::MAX`.
pub(super) fn ceil_secs(d: Duration) -> u32 {
    u32::try_from(crate::head::retry_after_secs(d)).unwrap_or(u32::MAX)
}

/// A `Retry-After` in seconds: [`ceil_secs`] of `d`, at most [`MAX_RETRY_AFTER`] (QStash does
/// not honour a longer one).
pub(super) fn retry_after_secs(d: Duration) -> u32 {
    ceil_secs(d.min(MAX_RETRY_AFTER))
}

/// Why [`Begin::RunUnguarded`] runs the handler without deduplication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnguardedReason {
    /// The delivery has no `Upstash-Message-Id` (QStash always sends one). No longer produced:
    /// such a delivery is refused with [`Rejection::MissingMessageId`]; kept so that existing
    /// `match`es compile.
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
    verifier_leeway: Duration,
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
            .field("verifier_leeway", &c.verifier_leeway)
            .field("in_progress_retry_after", &c.in_progress_retry_after)
            .field("store_retry_after", &c.store_retry_after)
            .finish_non_exhaustive()
    }
}

impl Dedup {
    /// Deduplication in `store` with the defaults: lease TTL [`DEFAULT_LEASE_TTL`], retention
    /// [`DEFAULT_RETENTION`], fail closed, replay guard on.
    #[must_use]
    pub fn new(store: Arc<dyn DedupStore>) -> Self {
        Self {
            config: Arc::new(Config {
                store,
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

    /// The replay guard (on by default): refuse ([`Rejection::Replayed`], `401`) a second
    /// request carrying the same token `jti` for as long as that token could still verify
    /// (its `exp` plus the verifier's leeway). Checked by the same store operation as the
    /// claim ([`DedupStore::claim_guarded`]); with [`OnStoreError::FailOpen`], by one more.
    ///
    /// QStash signs every attempt with a new token, so the guard never refuses QStash. Without
    /// it, whoever holds a captured delivery (its token and body, while the token is valid) can
    /// send it again under a new message id and run the handler again. Turn it off
    /// (`replay_guard(false)`) only if your handlers are idempotent on the body itself.
    #[must_use]
    pub fn replay_guard(self, enabled: bool) -> Self {
        self.with(|c| c.replay_guard = enabled)
    }

    /// The clock leeway of the verifier that checks the tokens: the replay guard remembers a
    /// token until `exp` + leeway. [`Receiver::dedup`](crate::Receiver::dedup) (and the
    /// adapters built from a receiver) set it from the receiver's [`Verifier`](crate::Verifier);
    /// set it yourself when you call [`Dedup::begin`] with another verifier. Keeps the larger of
    /// the values given. Capped at 10 years.
    #[must_use]
    pub fn verifier_leeway(self, leeway: Duration) -> Self {
        self.with(|c| c.verifier_leeway = c.verifier_leeway.max(leeway.min(MAX_TTL)))
    }

    /// The `Retry-After` of the `409` answered while another request holds the lease.
    #[must_use]
    pub fn in_progress_retry_after(self, policy: InProgressRetryAfter) -> Self {
        self.with(|c| c.in_progress_retry_after = policy)
    }

    /// The `Retry-After` of the `503` answered when the store fails (at least 1 s, at most
    /// [`MAX_RETRY_AFTER`]).
    #[must_use]
    pub fn store_retry_after(self, delay: Duration) -> Self {
        self.with(|c| c.store_retry_after = delay)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn DedupStore> {
        &self.config.store
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
            return refuse_without_id();
        };
        let key = claim_key(message_id, claims.body_hash());
        if let Some((jti, ttl)) = self.guard(claims, now) {
            if c.on_store_error == OnStoreError::FailClosed {
                // Guard and claim in one store operation: one call to the store instead of two,
                // one Redis round trip fewer (`tests/dedup_redis.rs`, three round trips → two).
                // Any store error refuses (503), as when either of the two operations failed.
                return match c.store.claim_guarded(&jti, ttl, &key, c.lease_ttl).await {
                    Ok(GuardedClaim::Replayed) => self.replayed(message_id),
                    Ok(GuardedClaim::Claimed(outcome)) => {
                        self.claimed(message_id, key, Ok(outcome))
                    }
                    Err(error) => self.store_failed(message_id, &error),
                };
            }
            // Fail open: a failing guard lets the claim be tried on its own, so two operations.
            let remembered = c.store.remember(&jti, ttl).await;
            if let Some(refusal) = self.remembered(message_id, remembered) {
                return refusal;
            }
        }
        let claimed = c.store.claim(&key, c.lease_ttl).await;
        self.claimed(message_id, key, claimed)
    }

    /// How long the replay guard remembers the `jti` of a token that expires at `expires_at`
    /// (Unix seconds), seen at `now`: until the token can no longer verify, `expires_at` plus
    /// the [verifier's leeway](Dedup::verifier_leeway), plus one second for the rounding of
    /// `now` to whole seconds. At least one second; at most 10 years.
    pub fn replay_guard_ttl(&self, expires_at: i64, now: SystemTime) -> Duration {
        let now_secs = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
        };
        let leeway = i64::try_from(self.config.verifier_leeway.as_secs()).unwrap_or(i64::MAX);
        let valid_for = expires_at
            .saturating_add(leeway)
            .saturating_sub(now_secs)
            .saturating_add(1);
        Duration::from_secs(u64::try_from(valid_for).unwrap_or(0).max(1)).min(MAX_TTL)
    }

    /// The guard's key and TTL for this token, when the guard is on and the token has a `jti`.
    fn guard(&self, claims: &Claims, now: SystemTime) -> Option<(String, Duration)> {
        if !self.config.replay_guard {
            return None;
        }
        // Only the key holder can sign a token; QStash's tokens always carry a `jti`. One
        // without is still run under its message id's lease, without the guard.
        let Some(jti) = claims.jwt_id() else {
            tracing::debug!("qstash token without jti: the replay guard does not apply");
            return None;
        };
        // Not `format!`: its formatting machinery costs more than the copy.
        let mut key = String::with_capacity(4 + jti.len());
        key.push_str("jti:");
        key.push_str(jti);
        Some((key, self.replay_guard_ttl(claims.expires_at(), now)))
    }

    /// What the guard's answer means: `Some` refusal, or `None` to go on.
    fn remembered(&self, message_id: &str, remembered: Result<bool, StoreError>) -> Option<Begin> {
        match remembered {
            Ok(true) => None,
            Ok(false) => Some(self.replayed(message_id)),
            Err(error) => match self.store_failed(message_id, &error) {
                Begin::RunUnguarded { .. } => None,
                refusal => Some(refusal),
            },
        }
    }

    /// The refusal of a replayed token.
    fn replayed(&self, message_id: &str) -> Begin {
        tracing::warn!(message_id, "qstash token replayed: refused");
        crate::observe::refused(&Rejection::Replayed);
        Begin::Refuse(Rejection::Replayed)
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
                crate::observe::duplicate();
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
                let rejection = Rejection::InProgress { retry_after_secs };
                crate::observe::refused(&rejection);
                Begin::Refuse(rejection)
            }
            Err(error) => self.store_failed(message_id, &error),
        }
    }

    fn store_failed(&self, message_id: &str, error: &StoreError) -> Begin {
        let c = &*self.config;
        crate::observe::store_error("claim");
        match c.on_store_error {
            OnStoreError::FailClosed => {
                tracing::error!(message_id, %error, "qstash dedup store failed: refused with 503");
                let rejection = Rejection::StoreUnavailable {
                    retry_after_secs: retry_after_secs(c.store_retry_after),
                };
                crate::observe::refused(&rejection);
                Begin::Refuse(rejection)
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

/// The store key of a delivery: `msg:<message id>:<body hash>`, the body hash being the
/// token's signed `body` claim without its `=` padding (43 base64url characters for QStash).
///
/// The message id is not signed; the body hash is. Binding the two, a captured token replayed
/// under another message's id claims a key of its own, and can neither complete nor block that
/// message; QStash's retries (same id, same body) share the key.
pub(super) fn claim_key(message_id: &str, body_hash: &str) -> String {
    let body_hash = body_hash.trim_end_matches('=');
    let mut key =
        String::with_capacity(MESSAGE_KEY_PREFIX.len() + message_id.len() + 1 + body_hash.len());
    key.push_str(MESSAGE_KEY_PREFIX);
    key.push_str(message_id);
    key.push(':');
    key.push_str(body_hash);
    key
}

fn refuse_without_id() -> Begin {
    tracing::warn!("qstash delivery without upstash-message-id: refused with 400");
    crate::observe::refused(&Rejection::MissingMessageId);
    Begin::Refuse(Rejection::MissingMessageId)
}
