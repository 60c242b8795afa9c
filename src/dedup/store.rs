//! The store interface: [`DedupStore`], what its operations answer, lease tokens, errors.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

#[cfg(all(doc, feature = "redis"))]
use super::RedisStore;
#[cfg(doc)]
use super::{Dedup, MemoryStore};

/// A boxed, `Send` future returned by a [`DedupStore`]; keeps the trait object-safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store of message-id claims, shared by every request (and, for a shared store such as
/// [`RedisStore`], every instance). Used as `Arc<dyn DedupStore>`.
///
/// Keys are given by [`Dedup`] (`msg:<message id>:<body hash>`, `jti:<token id>`); a store may
/// prefix them. Each operation must be atomic for its key.
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

    /// Formerly [`DedupStore::claim`] answered at once. No longer called by this crate: every
    /// operation goes through its future (a store that never waits returns a future that is
    /// ready at once). The default, `None`, means "await `claim`".
    #[deprecated(
        since = "0.2.0",
        note = "no longer called: implement and call `claim` (a store that never waits returns a ready future)"
    )]
    fn claim_now(
        &self,
        key: &str,
        lease_ttl: Duration,
    ) -> Option<Result<ClaimOutcome, StoreError>> {
        let _ = (key, lease_ttl);
        None
    }

    /// Formerly [`DedupStore::complete`] answered at once; no longer called (see
    /// [`DedupStore::claim_now`]). The default, `None`, means "await `complete`".
    #[deprecated(
        since = "0.2.0",
        note = "no longer called: implement and call `complete` (a store that never waits returns a ready future)"
    )]
    fn complete_now(
        &self,
        key: &str,
        token: &LeaseToken,
        retention: Duration,
    ) -> Option<Result<LeaseOutcome, StoreError>> {
        let _ = (key, token, retention);
        None
    }

    /// Formerly [`DedupStore::release`] answered at once; no longer called (see
    /// [`DedupStore::claim_now`]). The default, `None`, means "await `release`".
    #[deprecated(
        since = "0.2.0",
        note = "no longer called: implement and call `release` (a store that never waits returns a ready future)"
    )]
    fn release_now(
        &self,
        key: &str,
        token: &LeaseToken,
    ) -> Option<Result<LeaseOutcome, StoreError>> {
        let _ = (key, token);
        None
    }

    /// Formerly [`DedupStore::remember`] answered at once; no longer called (see
    /// [`DedupStore::claim_now`]). The default, `None`, means "await `remember`".
    #[deprecated(
        since = "0.2.0",
        note = "no longer called: implement and call `remember` (a store that never waits returns a ready future)"
    )]
    fn remember_now(&self, key: &str, ttl: Duration) -> Option<Result<bool, StoreError>> {
        let _ = (key, ttl);
        None
    }

    /// Records `key` for `ttl` if it is absent: `true` when it was absent (first sight), `false`
    /// when it is already there. Used by the replay guard: a store must keep such a key until
    /// its `ttl` has passed (never evict it earlier; fail instead), or a replayed token would
    /// be accepted again. The default claims and completes (two operations); stores override it
    /// with a single one.
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

    /// The replay guard and the claim as one operation: records `guard_key` for `guard_ttl` if
    /// it is absent (as [`DedupStore::remember`]) and then, only if it was absent, claims `key`
    /// for `lease_ttl` (as [`DedupStore::claim`]). Answers [`GuardedClaim::Replayed`], having
    /// claimed nothing, when `guard_key` is already there.
    ///
    /// On an error, the guard key may have been recorded; a lease the store may have taken
    /// without learning it (a lost reply) is the store's to release, as [`RedisStore`] does.
    ///
    /// [`Dedup`] calls it for each delivery whose token has a `jti` while the replay guard is
    /// on and store errors fail closed (the default). The default calls `remember`, then `claim`;
    /// [`MemoryStore`] does both in one call and [`RedisStore`] in one script (one round trip).
    fn claim_guarded<'a>(
        &'a self,
        guard_key: &'a str,
        guard_ttl: Duration,
        key: &'a str,
        lease_ttl: Duration,
    ) -> StoreFuture<'a, GuardedClaim> {
        Box::pin(async move {
            if !self.remember(guard_key, guard_ttl).await? {
                return Ok(GuardedClaim::Replayed);
            }
            Ok(GuardedClaim::Claimed(self.claim(key, lease_ttl).await?))
        })
    }
}

/// What a [`DedupStore::claim_guarded`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuardedClaim {
    /// The guard key was already recorded (a replayed token): nothing was claimed.
    Replayed,
    /// The guard key was absent and is now recorded; the claim of the message key found this.
    Claimed(ClaimOutcome),
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
    /// A new unpredictable token: 128 bits from the operating system's generator (drawn for
    /// several tokens at once, each handed out once), as 32 lower-case hex digits. Fails, as a [`StoreError::Random`], when the generator does (a
    /// store then refuses the claim, and the delivery is answered 503 and retried): there is no
    /// weaker fallback.
    pub fn generate() -> Result<Self, StoreError> {
        let bytes = random_token_bytes()?;
        const HEX: &[u8; 16] = b"0123456789abcdef";
        // Kept inline (no allocation).
        let mut text = [b'0'; 32];
        for (pair, &b) in text.chunks_exact_mut(2).zip(bytes.iter()) {
            for (digit, nibble) in pair.iter_mut().zip([b >> 4, b & 0x0f]) {
                *digit = HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
            }
        }
        Ok(Self(text))
    }

    /// The token as text (what a store saves and compares).
    pub fn as_str(&self) -> &str {
        // Hex digits: always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The bytes of one token.
const TOKEN_BYTES: usize = 16;
/// Tokens drawn per call to the OS generator.
const POOL_TOKENS: usize = 32;

/// Random bytes from the OS generator, drawn for [`POOL_TOKENS`] tokens at once and handed out
/// once each (wiped as they go). Per thread: no lock, nothing shared between threads. (As with
/// any user-space generator, a process forked after a draw inherits the rest of the pool.)
struct Pool {
    bytes: [u8; TOKEN_BYTES * POOL_TOKENS],
    /// How many bytes at the front are used up (all of them: empty, drawn again on next use).
    used: usize,
}

impl Pool {
    const EMPTY: Self = Self {
        bytes: [0; TOKEN_BYTES * POOL_TOKENS],
        used: TOKEN_BYTES * POOL_TOKENS,
    };

    fn take(&mut self) -> Result<[u8; TOKEN_BYTES], StoreError> {
        if self.used + TOKEN_BYTES > self.bytes.len() {
            // A failing generator is an error (the pool stays empty), never a weaker fallback.
            getrandom::fill(&mut self.bytes).map_err(|e| StoreError::Random(e.to_string()))?;
            self.used = 0;
        }
        // Always in range (checked above); never a token of zeros should it not be.
        let Some(next) = self.bytes.get_mut(self.used..self.used + TOKEN_BYTES) else {
            return Err(StoreError::Random("token pool out of range".to_owned()));
        };
        let mut token = [0u8; TOKEN_BYTES];
        token.copy_from_slice(next);
        next.fill(0);
        self.used += TOKEN_BYTES;
        Ok(token)
    }
}

thread_local! {
    static POOL: std::cell::RefCell<Pool> = const { std::cell::RefCell::new(Pool::EMPTY) };
}

/// 128 bits from the OS generator. One `getrandom` call per 32 tokens instead of one per token:
/// 290 ns → 49 ns a token (`cargo bench --bench dedup -- baseline_lease_token`).
fn random_token_bytes() -> Result<[u8; TOKEN_BYTES], StoreError> {
    POOL.try_with(|pool| pool.borrow_mut().take())
        .unwrap_or_else(|_| {
            // The thread is exiting (its pool is gone): straight from the generator.
            let mut token = [0u8; TOKEN_BYTES];
            getrandom::fill(&mut token)
                .map(|()| token)
                .map_err(|e| StoreError::Random(e.to_string()))
        })
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
    /// The in-memory store is full of live leases and replay-guard ids (completed ids are
    /// evicted first; the others are never evicted while live).
    #[error("deduplication store is full of live entries (capacity {capacity})")]
    CapacityExhausted {
        /// The store's capacity, in entries.
        capacity: usize,
    },
    /// The operating system's random generator failed (no lease token could be drawn).
    #[error("random generator failed: {0}")]
    Random(String),
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
