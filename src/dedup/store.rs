//! The store interface: [`DedupStore`], what its operations answer, lease tokens, errors.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

#[cfg(doc)]
use super::Dedup;
#[cfg(all(doc, feature = "redis"))]
use super::RedisStore;

/// A boxed, `Send` future returned by a [`DedupStore`]; keeps the trait object-safe.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store of message-id claims, shared by every request (and, for a shared store such as
/// [`RedisStore`], every instance). Used as `Arc<dyn DedupStore>`.
///
/// Keys are given by [`Dedup`] (`msg:<message id>:<body hash>`, `jti:<token id>`); a store may
/// prefix them. Each operation must be atomic for its key.
pub trait DedupStore: Send + Sync + 'static {
    /// Claims `key`: if it is absent (or expired), stores a new lease for `lease_ttl`
    /// ([`ClaimOutcome::Acquired`]); otherwise says whether it is completed or leased, and how long.
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

    /// Formerly [`DedupStore::claim`] answered at once; no longer called. `None`: await `claim`.
    #[deprecated(since = "0.2.0", note = "no longer called: use `claim`")]
    fn claim_now(&self, _: &str, _: Duration) -> Option<Result<ClaimOutcome, StoreError>> {
        None
    }

    /// Formerly [`DedupStore::complete`] answered at once; no longer called. `None`: await it.
    #[deprecated(since = "0.2.0", note = "no longer called: use `complete`")]
    fn complete_now(
        &self,
        _: &str,
        _: &LeaseToken,
        _: Duration,
    ) -> Option<Result<LeaseOutcome, StoreError>> {
        None
    }

    /// Formerly [`DedupStore::release`] answered at once; no longer called. `None`: await it.
    #[deprecated(since = "0.2.0", note = "no longer called: use `release`")]
    fn release_now(&self, _: &str, _: &LeaseToken) -> Option<Result<LeaseOutcome, StoreError>> {
        None
    }

    /// Formerly [`DedupStore::remember`] answered at once; no longer called. `None`: await it.
    #[deprecated(since = "0.2.0", note = "no longer called: use `remember`")]
    fn remember_now(&self, _: &str, _: Duration) -> Option<Result<bool, StoreError>> {
        None
    }

    /// Records `key` for `ttl` if it is absent (`true`), else `false`: the replay guard's
    /// operation. A store must keep such a key for its whole `ttl` (fail rather than evict it), or
    /// a replayed token would be accepted again. The default claims and completes.
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

    /// The replay guard and the claim as one operation: [`DedupStore::remember`] `guard_key`,
    /// then, only if it was absent, [`DedupStore::claim`] `key`; [`GuardedClaim::Replayed`]
    /// (nothing claimed) otherwise. What [`Dedup`] calls with the defaults (replay guard on, store
    /// errors fail closed); the default makes two calls. On an error the guard key may have been
    /// recorded; a lease taken without the store learning it (a lost reply) is the store's to
    /// release.
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

/// An unpredictable token identifying one lease: only its holder can complete or release it.
/// `Debug` does not show it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LeaseToken([u8; 32]);

impl LeaseToken {
    /// A new unpredictable token: 128 bits from the operating system's generator, as 32
    /// lower-case hex digits. Fails with [`StoreError::Random`] when the generator does (the
    /// claim is then refused, `503`): there is no weaker fallback.
    pub fn generate() -> Result<Self, StoreError> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [b'0'; 32];
        for (pair, &b) in text.chunks_exact_mut(2).zip(random_token_bytes()?.iter()) {
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

const TOKEN_BYTES: usize = 16;
const POOL_TOKENS: usize = 32;
type Pool = ([[u8; TOKEN_BYTES]; POOL_TOKENS], usize);

thread_local! {
    /// Random bytes for [`POOL_TOKENS`] tokens, drawn at once, each handed out once and wiped;
    /// how many are used up. Per thread: no lock. (As with any user-space generator, a process
    /// forked after a draw inherits the rest of the pool.)
    static POOL: RefCell<Pool> =
        const { RefCell::new(([[0; TOKEN_BYTES]; POOL_TOKENS], POOL_TOKENS)) };
}

/// 128 bits from the OS generator. One `getrandom` call per 32 tokens instead of one per token:
/// 290 ns → 49 ns a token (`cargo bench --bench dedup -- baseline_lease_token`).
fn random_token_bytes() -> Result<[u8; TOKEN_BYTES], StoreError> {
    let draw =
        |bytes: &mut [u8]| getrandom::fill(bytes).map_err(|e| StoreError::Random(e.to_string()));
    POOL.try_with(|pool| {
        let (tokens, used) = &mut *pool.borrow_mut();
        if *used >= POOL_TOKENS {
            // A failing generator leaves the pool empty: an error, never a weaker fallback.
            draw(tokens.as_flattened_mut())?;
            *used = 0;
        }
        let token = tokens.get_mut(*used).map(std::mem::take);
        *used += 1;
        token.ok_or(StoreError::Random("token pool out of range".to_owned()))
    })
    .unwrap_or_else(|_| {
        // The thread is exiting (its pool is gone): straight from the generator.
        let mut token = [0; TOKEN_BYTES];
        draw(&mut token).map(|()| token)
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
    /// The in-memory store is full of live leases and replay-guard ids, which it never evicts.
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
