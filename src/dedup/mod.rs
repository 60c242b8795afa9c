//! Deduplication by message id, with leases: each QStash message is processed to success once,
//! even though QStash delivers at least once and several instances receive in parallel.
//!
//! QStash retries a message (same `Upstash-Message-Id`, new token) after any non-2xx answer or
//! a timeout, and may deliver it again even after a 2xx (a lost response, a crash). [`Dedup`]
//! claims the message id in a [`DedupStore`] before the handler runs and settles the claim from
//! the handler's answer:
//!
//! | the message id is… | [`Dedup::begin`] says | the adapter answers |
//! |---|---|---|
//! | new (or released, or its lease expired) | [`Begin::Run`] with a [`Lease`] | the handler's response; a 2xx **completes** the id (kept for the retention), anything else, an error, a panic or a dropped request **releases** it so QStash's retry runs |
//! | completed | [`Begin::Duplicate`] | `200`, header [`DUPLICATE_HEADER`]` = true`, [`duplicate_json_body`]; the handler does not run |
//! | held by another request or instance | [`Begin::Refuse`] with [`Rejection::InProgress`] | `409` + `Retry-After`; QStash comes back once the first attempt finished or failed |
//! | store down or failing | [`Begin::Refuse`] with [`Rejection::StoreUnavailable`] (fail closed, the default) or [`Begin::RunUnguarded`] (fail open) | `503` + `Retry-After`: nothing is lost, QStash retries |
//! | absent (no `Upstash-Message-Id`) | [`Begin::RunUnguarded`] and a warning | the handler's response; QStash always sends one, so this is not QStash |
//!
//! Dedup needs the handler's response (2xx or not), so it runs in the tower layer and the
//! actix-web middleware, around the handler; the standalone extractors cannot see the response
//! and do not deduplicate. Adapters call [`Dedup::begin`] after the body is verified, run the
//! handler on [`Begin::Run`], then [`Lease::finish`] with the response status.
//!
//! # Defaults and why
//!
//! - Lease TTL [`DEFAULT_LEASE_TTL`] = 2 h 1 min: above QStash's longest response timeout on
//!   its free (15 min) and pay-as-you-go (2 h) plans, so a handler still running when QStash gives
//!   up and retries is never run twice. A crashed instance blocks its messages until the lease
//!   expires; the `409`'s `Retry-After` is the lease's remaining time, so QStash's retry comes
//!   back just then. Lower it to your handlers' real worst case (or your `Upstash-Timeout`).
//! - Retention [`DEFAULT_RETENTION`] = 7 days: QStash's backoff is `min(1 day, e^(2.5·n))` s,
//!   so its default schedules (3 to 5 retries) span at most about 31 hours plus the attempts'
//!   timeouts, and a message re-sent after a 2xx arrives within that window: 7 days covers them
//!   with a wide margin, and up to about 10 retries.
//! - Store failures fail closed: `503` with `Retry-After` [`DEFAULT_STORE_RETRY_AFTER`].
//! - The replay guard is off: a message id is not signed, a token's `jti` is. Turn it on with
//!   [`Dedup::replay_guard`] to refuse the very same request (same `jti`) a second time while
//!   its token is valid, even under another message id. Without it, whoever holds a captured
//!   delivery (its token and body, while the token is valid) can send it again under the id of
//!   another message not yet completed: the handler runs on the captured body, and its 2xx
//!   marks that other id completed, so the other message's real deliveries are answered as
//!   duplicates. Turn it on wherever deliveries could be seen by others (request logs that keep
//!   headers, a proxy you do not control).
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "test-utils")] {
//! use std::sync::Arc;
//! use qstash_receiver::dedup::{Begin, Dedup, MemoryStore};
//! use qstash_receiver::{Delivery, SigningKeys, Verifier, test_utils::Signer};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let dedup = Dedup::new(Arc::new(MemoryStore::new()));
//! let verifier = Verifier::new(SigningKeys::new("sig_current", "sig_next")?);
//!
//! let url = "https://app.example.com/jobs";
//! let first = Signer::new("sig_current").delivery_with_id(url, b"{}", "msg_1", 0);
//! let retry = Signer::new("sig_current").delivery_with_id(url, b"{}", "msg_1", 1);
//!
//! for (attempt, delivery) in [first, retry].into_iter().enumerate() {
//!     let claims = verifier.verify(&delivery.signature, b"{}", Some(url))?;
//!     let meta = Delivery::from_headers(delivery.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))?;
//!     match dedup.begin(&meta, &claims).await {
//!         Begin::Run(lease) => {
//!             assert_eq!(attempt, 0);
//!             let status = 200; // run the handler here
//!             let _ = lease.finish(status).await; // 2xx: completed
//!         }
//!         Begin::Duplicate { message_id } => {
//!             assert_eq!((attempt, message_id.as_str()), (1, "msg_1")); // answer 200 + qstash-duplicate
//!         }
//!         Begin::Refuse(rejection) => unreachable!("{rejection}"),
//!         Begin::RunUnguarded { .. } => unreachable!(),
//!         _ => unreachable!(),
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
mod redis;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use memory::{DEFAULT_MEMORY_CAPACITY, MemoryStore};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{DEFAULT_KEY_PREFIX, RECONNECT_RETRIES, RedisStore};

use crate::{Claims, Delivery, Rejection};

/// The response header that marks an answer to an already completed message: `qstash-duplicate`.
pub const DUPLICATE_HEADER: &str = "qstash-duplicate";
/// The value of [`DUPLICATE_HEADER`]: `true`.
pub const DUPLICATE_HEADER_VALUE: &str = "true";
/// The status of an answer to an already completed message: `200` (QStash stops retrying).
pub const DUPLICATE_STATUS: u16 = 200;

/// Default lease TTL: 2 h 1 min, above QStash's longest response timeout on the free (15 min)
/// and pay-as-you-go (2 h) plans. See the [module docs](self).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2 * 3600 + 60);
/// Default retention of a completed message id: 7 days, beyond QStash's retry schedule.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default `Retry-After` of a `503` when the store fails: 10 seconds.
pub const DEFAULT_STORE_RETRY_AFTER: Duration = Duration::from_secs(10);
/// The longest `Retry-After` QStash honours (1 day); longer values fall back to its backoff.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long past its `exp` the replay guard remembers a token's `jti`: 5 minutes, which covers
/// any verifier leeway up to that.
pub const REPLAY_GUARD_MARGIN: Duration = Duration::from_secs(300);

/// TTLs are capped at 10 years: keeps `Instant` arithmetic and Redis' `PX` in range.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The JSON body of an answer to an already completed message:
/// `{"duplicate":true,"messageId":"<id>"}`.
pub fn duplicate_json_body(message_id: &str) -> String {
    serde_json::json!({ "duplicate": true, "messageId": message_id }).to_string()
}

/// A boxed, `Send` future returned by a [`DedupStore`]; keeps the trait object-safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store of message-id claims, shared by every request (and, for a shared store such as
/// [`RedisStore`], every instance). Used as `Arc<dyn DedupStore>`.
///
/// Keys are given by [`Dedup`] (`msg:<message id>`, `jti:<token id>`); a store may prefix them.
/// Each operation must be atomic for its key.
pub trait DedupStore: Send + Sync + 'static {
    /// Claims `key`: if it is absent (or expired), stores a new lease for `lease_ttl` and
    /// returns [`ClaimOutcome::Acquired`] with its token; otherwise says whether the key is
    /// completed or leased by someone else, and for how long.
    fn claim<'a>(&'a self, key: &'a str, lease_ttl: Duration) -> StoreFuture<'a, ClaimOutcome>;

    /// Marks `key` completed for `retention`, only if `token` still holds its lease.
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a LeaseToken,
        retention: Duration,
    ) -> StoreFuture<'a, LeaseOutcome>;

    /// Deletes the lease on `key`, only if `token` still holds it, so the next claim acquires.
    fn release<'a>(&'a self, key: &'a str, token: &'a LeaseToken) -> StoreFuture<'a, LeaseOutcome>;

    /// [`DedupStore::claim`] answered at once, by a store that never waits (one in this
    /// process's memory, such as [`MemoryStore`]): `Some` lets [`Dedup`] skip the boxed future.
    /// It must do exactly what `claim` does. The default, `None`, means "await `claim`".
    fn claim_now(
        &self,
        key: &str,
        lease_ttl: Duration,
    ) -> Option<Result<ClaimOutcome, StoreError>> {
        let _ = (key, lease_ttl);
        None
    }

    /// [`DedupStore::complete`] answered at once (see [`DedupStore::claim_now`]).
    fn complete_now(
        &self,
        key: &str,
        token: &LeaseToken,
        retention: Duration,
    ) -> Option<Result<LeaseOutcome, StoreError>> {
        let _ = (key, token, retention);
        None
    }

    /// [`DedupStore::release`] answered at once (see [`DedupStore::claim_now`]).
    fn release_now(
        &self,
        key: &str,
        token: &LeaseToken,
    ) -> Option<Result<LeaseOutcome, StoreError>> {
        let _ = (key, token);
        None
    }

    /// Records `key` for `ttl` if it is absent: `true` when it was absent (first sight), `false`
    /// when it is already there. Used by the replay guard. The default claims and completes
    /// (two operations); stores override it with a single one.
    fn remember<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            match self.claim(key, ttl).await? {
                ClaimOutcome::Acquired(token) => {
                    self.complete(key, &token, ttl).await?;
                    Ok(true)
                }
                ClaimOutcome::Completed | ClaimOutcome::InProgress { .. } => Ok(false),
            }
        })
    }
}

/// What a [`DedupStore::claim`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimOutcome {
    /// The key was free: this claim holds its lease, identified by the token.
    Acquired(LeaseToken),
    /// The key is completed: a duplicate.
    Completed,
    /// Someone else holds the lease.
    InProgress {
        /// How long until that lease expires.
        remaining: Duration,
    },
}

/// Whether a [`DedupStore::complete`] or [`DedupStore::release`] was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseOutcome {
    /// The token held the lease; the operation was applied.
    Applied,
    /// The token does not hold the lease (it expired, maybe another claim took it over, or it
    /// was already settled); nothing was changed.
    NotHeld,
}

/// An unpredictable token identifying one lease (128 random bits, hex). Only its holder can
/// complete or release the lease. `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LeaseToken([u8; 32]);

impl LeaseToken {
    /// A new unpredictable token: SHA-256 of a 256-bit process secret (drawn once from the
    /// operating system's generator) and a process-wide counter, truncated to 128 bits. A
    /// keyed PRF in counter mode: as unpredictable as the secret, without a system call per
    /// lease.
    pub fn generate() -> Self {
        use sha2::{Digest, Sha256};
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static SECRET: OnceLock<[u8; 32]> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let secret = SECRET.get_or_init(|| {
            let mut secret = [0u8; 32];
            crate::random::fill(&mut secret);
            secret
        });
        let digest = Sha256::new()
            .chain_update(secret)
            .chain_update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes())
            .finalize();
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // Kept inline (no allocation): 32 lower-case hex digits.
        let mut text = [b'0'; 32];
        for (pair, &b) in text.chunks_exact_mut(2).zip(digest.iter()) {
            for (digit, nibble) in pair.iter_mut().zip([b >> 4, b & 0x0f]) {
                *digit = HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
            }
        }
        Self(text)
    }

    /// The token as text (what a store saves and compares).
    pub fn as_str(&self) -> &str {
        // Hex digits: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseToken(..)")
    }
}

/// A failure of the deduplication store. Messages never contain a key's value, a token or a body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend (Redis…) failed: connection refused or lost, timeout, server error.
    #[error("deduplication store backend failed: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The in-memory store is full of live leases (completed ids are evicted first).
    #[error("deduplication store is full of live leases (capacity {capacity})")]
    CapacityExhausted {
        /// The store's capacity, in entries.
        capacity: usize,
    },
    /// The backend answered something this store does not understand.
    #[error("unexpected reply from the deduplication store: {0}")]
    UnexpectedReply(&'static str),
}

impl StoreError {
    /// Wraps a backend's error.
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(error))
    }
}

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
    fn seconds(self, remaining: Duration) -> u32 {
        match self {
            Self::RemainingLease { max } => ceil_secs(remaining.min(max)),
            Self::Fixed(delay) => ceil_secs(delay),
        }
    }
}

fn ceil_secs(d: Duration) -> u32 {
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
/// (an `Arc` inside). See the [module docs](self).
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
            Ok(ClaimOutcome::Acquired(token)) => Begin::Run(Lease {
                armed: Some(Armed {
                    store: Arc::clone(&c.store),
                    key,
                    token,
                    retention: c.retention,
                }),
            }),
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
const MESSAGE_KEY_PREFIX: &str = "msg:";

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

/// The lease on a message id, held while the handler runs. Finish it with the handler's status
/// ([`Lease::finish`]), or [`Lease::complete`] / [`Lease::release`] it. Dropped without either
/// (a panic, a dropped request future), it releases, so QStash's retry is processed: at once
/// with a store that answers at once ([`DedupStore::release_now`], as [`MemoryStore`] does),
/// else in the background on the current tokio runtime; without a runtime (or once it is
/// shutting down) such a lease expires after its TTL.
pub struct Lease {
    armed: Option<Armed>,
}

struct Armed {
    store: Arc<dyn DedupStore>,
    /// `msg:<message id>` ([`message_key`]).
    key: String,
    token: LeaseToken,
    retention: Duration,
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
fn release_in_background(a: Armed, delay: Duration) {
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
fn release_in_background(a: Armed, _delay: Duration) {
    no_runtime(&a);
}

fn no_runtime(a: &Armed) {
    tracing::warn!(
        message_id = a.message_id(),
        "qstash lease left unreleased outside a tokio runtime: it expires after its TTL"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_clamps() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::ZERO), 1);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ceil_secs(Duration::from_secs(u64::MAX)), u32::MAX);
        let policy = InProgressRetryAfter::default();
        assert_eq!(policy.seconds(Duration::from_secs(90)), 90);
        assert_eq!(policy.seconds(Duration::from_secs(3 * 86400)), 86400);
        assert_eq!(
            InProgressRetryAfter::Fixed(Duration::from_secs(7)).seconds(Duration::from_secs(90)),
            7
        );
    }

    #[test]
    fn duplicate_body_and_token_debug() {
        assert_eq!(
            duplicate_json_body("msg_\"1"),
            r#"{"duplicate":true,"messageId":"msg_\"1"}"#
        );
        let token = LeaseToken::generate();
        assert_eq!(token.as_str().len(), 32);
        assert!(
            token
                .as_str()
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "lower-case hex"
        );
        assert_ne!(token, LeaseToken::generate());
        assert_eq!(format!("{token:?}"), "LeaseToken(..)");
    }

    fn delivery(id: &str) -> Delivery {
        Delivery::from_headers([("upstash-message-id", id.as_bytes())]).unwrap()
    }

    /// A memory store that settles leases only through futures, as a networked one does; it
    /// claims at once or not, and its first `failing_releases` releases fail (a passing outage).
    struct TestStore {
        inner: MemoryStore,
        claims_at_once: bool,
        failing_releases: std::sync::atomic::AtomicU32,
    }

    impl TestStore {
        /// Only futures, nothing fails.
        fn async_only() -> Self {
            Self {
                inner: MemoryStore::new(),
                claims_at_once: false,
                failing_releases: 0.into(),
            }
        }
    }

    impl DedupStore for TestStore {
        fn claim_now(&self, key: &str, ttl: Duration) -> Option<Result<ClaimOutcome, StoreError>> {
            self.claims_at_once
                .then(|| self.inner.claim_now(key, ttl))
                .flatten()
        }
        fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, ClaimOutcome> {
            self.inner.claim(key, ttl)
        }
        fn complete<'a>(
            &'a self,
            key: &'a str,
            token: &'a LeaseToken,
            retention: Duration,
        ) -> StoreFuture<'a, LeaseOutcome> {
            self.inner.complete(key, token, retention)
        }
        fn release<'a>(
            &'a self,
            key: &'a str,
            token: &'a LeaseToken,
        ) -> StoreFuture<'a, LeaseOutcome> {
            let fail = self
                .failing_releases
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok();
            if fail {
                Box::pin(async { Err(StoreError::UnexpectedReply("outage")) })
            } else {
                self.inner.release(key, token)
            }
        }
    }

    #[cfg(any(feature = "tower", feature = "actix-web", feature = "redis"))]
    #[tokio::test]
    async fn a_failed_release_is_tried_once_more_in_the_background() {
        let store = TestStore {
            claims_at_once: true,
            failing_releases: 1.into(),
            ..TestStore::async_only()
        };
        let dedup = Dedup::new(Arc::new(store));
        let Some(Begin::Run(lease)) = dedup.begin_now(&delivery("m1")) else {
            panic!("a new id runs");
        };
        assert!(matches!(
            lease.release().await,
            Err(StoreError::UnexpectedReply("outage"))
        ));
        // Still held for now: QStash's retry meanwhile is refused.
        assert!(matches!(
            dedup.begin_now(&delivery("m1")),
            Some(Begin::Refuse(Rejection::InProgress { .. }))
        ));
        tokio::time::sleep(RELEASE_RETRY_DELAY + Duration::from_millis(300)).await;
        // Released by the retry: the next delivery runs.
        assert!(matches!(
            dedup.begin_now(&delivery("m1")),
            Some(Begin::Run(_))
        ));
    }

    #[test]
    fn a_lease_dropped_outside_a_runtime_is_released_by_a_store_that_answers_at_once() {
        // No tokio runtime here (as when one is shutting down): no task can be spawned.
        let dedup = Dedup::new(Arc::new(MemoryStore::new()));
        let Some(Begin::Run(lease)) = dedup.begin_now(&delivery("m1")) else {
            panic!("a new id runs");
        };
        drop(lease);
        // Released at once: the retry runs (it would wait out the lease TTL otherwise).
        assert!(matches!(
            dedup.begin_now(&delivery("m1")),
            Some(Begin::Run(_))
        ));
    }

    #[test]
    fn a_store_that_answers_at_once_is_used_without_waiting() {
        let dedup = Dedup::new(Arc::new(MemoryStore::new()));
        let Some(Begin::Run(lease)) = dedup.begin_now(&delivery("m1")) else {
            panic!("a new id runs");
        };
        assert_eq!(lease.message_id(), "m1");
        // Held: a second delivery meanwhile is refused (409), without waiting either.
        assert!(matches!(
            dedup.begin_now(&delivery("m1")),
            Some(Begin::Refuse(Rejection::InProgress { .. }))
        ));
        assert!(matches!(
            lease.finish_now(200),
            Ok(Ok(LeaseOutcome::Applied))
        ));
        assert!(matches!(
            dedup.begin_now(&delivery("m1")),
            Some(Begin::Duplicate { message_id }) if message_id == "m1"
        ));
        // A failure releases: the retry runs.
        let Some(Begin::Run(lease)) = dedup.begin_now(&delivery("m2")) else {
            panic!("a new id runs");
        };
        assert!(matches!(
            lease.finish_now(500),
            Ok(Ok(LeaseOutcome::Applied))
        ));
        assert!(matches!(
            dedup.begin_now(&delivery("m2")),
            Some(Begin::Run(_))
        ));
        // No message id: unguarded, as `begin` says.
        assert!(matches!(
            dedup.begin_now(&Delivery::default()),
            Some(Begin::RunUnguarded {
                reason: UnguardedReason::NoMessageId
            })
        ));
    }

    #[cfg(feature = "test-utils")]
    #[test]
    fn otherwise_the_caller_awaits() {
        // The replay guard needs a second store operation: `begin` is awaited.
        let guarded = Dedup::new(Arc::new(MemoryStore::new())).replay_guard(true);
        assert!(guarded.begin_now(&delivery("m1")).is_none());
        // A store without the at-once answers: `begin`, and the lease comes back to be awaited.
        let store = Arc::new(TestStore::async_only());
        let dedup = Dedup::new(store);
        assert!(dedup.begin_now(&delivery("m1")).is_none());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let url = "https://x.example/jobs";
        let signed = crate::test_utils::Signer::new("sig_a").delivery(url, b"");
        let keys = crate::SigningKeys::new("sig_a", "sig_b").unwrap();
        let claims = crate::Verifier::new(keys)
            .verify(&signed.signature, b"", Some(url))
            .unwrap();
        let Begin::Run(lease) = rt.block_on(dedup.begin(&delivery("m1"), &claims)) else {
            panic!("a new id runs");
        };
        let Err(lease) = lease.finish_now(200) else {
            panic!("an async-only store cannot settle at once");
        };
        assert!(matches!(
            rt.block_on(lease.finish(200)),
            Ok(LeaseOutcome::Applied)
        ));
        assert!(matches!(
            rt.block_on(dedup.begin(&delivery("m1"), &claims)),
            Begin::Duplicate { .. }
        ));
    }
}
