//! The Redis store (feature `redis`): shared by every instance of a service.

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::lease::{Armed, Lease};
use super::{
    ClaimOutcome, DedupStore, GuardedClaim, LeaseOutcome, LeaseToken, MAX_TTL, StoreError,
    StoreFuture,
};

/// The default key prefix of a [`RedisStore`]: `qstash:` (keys are `qstash:msg:<message
/// id>:<body hash>` and `qstash:jti:<token id>`).
pub const DEFAULT_KEY_PREFIX: &str = "qstash:";

/// Reconnection retries of the manager made by [`RedisStore::connect`], per operation.
pub const RECONNECT_RETRIES: usize = 1;

/// The value of a completed key. A lease's value is `lease:<token>`.
const COMPLETED: &str = "done";

/// The claim of `KEYS[1]`, behind the replay guard when a second key is given: `KEYS[2]` (the
/// token's guard key) is set for `ARGV[4]` ms if absent, else `{3, 0}` (replayed, nothing
/// claimed). Then: free → lease it (`ARGV[1]`, for `ARGV[2]` ms), `{0, 0}`; completed
/// (`ARGV[3]`) → `{1, pttl}`; leased → `{2, pttl}`.
static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM_LUA));
const CLAIM_LUA: &str = r"
if #KEYS == 2 and not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[4]) then return {3, 0} end
local v = redis.call('GET', KEYS[1])
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return {0, 0} end
return {v == ARGV[3] and 1 or 2, redis.call('PTTL', KEYS[1])}
";

/// Complete (`ARGV[2]`, for `ARGV[3]` ms) or, without those, release, only while the lease's
/// holder (`ARGV[1]`) holds it: `1` applied, `0` not held.
static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE_LUA));
const SETTLE_LUA: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else redis.call('DEL', KEYS[1]) end
return 1
";

/// A deduplication store in Redis, shared by every instance that uses the same Redis and key
/// prefix. Cheap to clone.
///
/// One round trip per operation (Lua scripts check the lease token); the replay guard and the
/// claim are one script, so a new delivery costs two round trips (three with
/// [`OnStoreError::FailOpen`](super::OnStoreError::FailOpen)). Leases and retention are Redis
/// TTLs. The guarded claim touches two keys: single-node Redis only (no cluster). A claim whose
/// reply is lost (a timeout, a dropped request) may still have taken its lease: it is released
/// in the background. While Redis is down, operations fail with [`StoreError::Backend`] (a
/// `503` by default); the [`ConnectionManager`] reconnects by itself. `rediss://` URLs use TLS
/// (rustls, Mozilla's root certificates), e.g. for Upstash Redis.
///
/// ```no_run
/// # async fn run() -> Result<(), qstash_receiver::dedup::StoreError> {
/// use std::sync::Arc;
/// use qstash_receiver::dedup::{Dedup, RedisStore};
///
/// let store = RedisStore::connect("rediss://default:password@eu1-example.upstash.io:6379")
///     .await?
///     .key_prefix("myapp:qstash:");
/// let dedup = Dedup::new(Arc::new(store));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url` (`redis://[user:password@]host[:port][/db]` or `rediss://…` for TLS)
    /// with a reconnecting [`ConnectionManager`], and loads the scripts.
    ///
    /// It fails fast while Redis is down, so deliveries get their `503` quickly: a reconnection
    /// is tried on each operation ([`RECONNECT_RETRIES`] retries, 100 ms apart at first);
    /// connecting times out after 1 s, a reply after 500 ms. Use [`RedisStore::from_manager`]
    /// for other settings. The error does not repeat the URL (it may hold a password).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(StoreError::backend)?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(RECONNECT_RETRIES)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(StoreError::backend)?;
        let store = Self::from_manager(manager);
        store.load_scripts().await?;
        Ok(store)
    }

    /// A store on an existing connection manager (your own timeouts, retries, TLS setup). The
    /// scripts are loaded on first use.
    pub fn from_manager(connection: ConnectionManager) -> Self {
        Self {
            connection,
            prefix: Arc::from(DEFAULT_KEY_PREFIX),
        }
    }

    /// The prefix of every key (default [`DEFAULT_KEY_PREFIX`]): give each service its own when
    /// they share a Redis.
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
    }

    /// Loads the scripts into Redis (`SCRIPT LOAD`), so the first claim needs one round trip.
    /// After a Redis restart the scripts are loaded again on first use.
    pub async fn load_scripts(&self) -> Result<(), StoreError> {
        for script in [&CLAIM, &SETTLE] {
            let loaded = script.load_async(&mut self.connection.clone()).await;
            loaded.map_err(StoreError::backend)?;
        }
        Ok(())
    }

    /// `<prefix><key>`.
    fn key(&self, key: &str) -> String {
        [&*self.prefix, key].concat()
    }

    /// Claims `key`, behind the replay guard's `guard` key and TTL when given (one script).
    async fn claim_once(
        &self,
        key: &str,
        ttl: Duration,
        guard: Option<(&str, Duration)>,
    ) -> Result<GuardedClaim, StoreError> {
        let token = LeaseToken::generate()?;
        // Until its reply is read, the script may have taken the lease unbeknownst to us (a
        // timeout, a failed connection, this future dropped), which would answer QStash's retries
        // 409 for the lease TTL: dropped unsettled, `pending` releases it (only for this token).
        let mut pending = Lease::new(Armed {
            store: Arc::new(self.clone()),
            key: key.to_owned(),
            token: token.clone(),
            retention: Duration::ZERO,
        });
        // `EVALSHA`, or on `NOSCRIPT` (Redis restarted, scripts flushed) the script itself.
        let mut claim = CLAIM.key(self.key(key));
        claim.arg((lease_value(&token), millis(ttl), COMPLETED));
        if let Some((guard_key, guard_ttl)) = guard {
            claim.key(self.key(guard_key)).arg(millis(guard_ttl));
        }
        let reply = claim.invoke_async(&mut self.connection.clone()).await;
        let (kind, pttl): (i64, i64) = reply.map_err(StoreError::backend)?;
        // PTTL is -1 (no TTL) or -2 (gone) in odd cases: say 0, the caller retries soon.
        let remaining = Duration::from_millis(u64::try_from(pttl).unwrap_or(0));
        let claimed = match kind {
            0 => GuardedClaim::Claimed(ClaimOutcome::Acquired(token)),
            1 => GuardedClaim::Claimed(ClaimOutcome::Completed),
            2 => GuardedClaim::Claimed(ClaimOutcome::InProgress { remaining }),
            3 if guard.is_some() => GuardedClaim::Replayed,
            _ => return Err(StoreError::UnexpectedReply("claim script")),
        };
        pending.armed = None; // the reply is read: nothing to release
        Ok(claimed)
    }

    async fn settle(
        &self,
        key: &str,
        token: &LeaseToken,
        retention: Option<Duration>,
    ) -> Result<LeaseOutcome, StoreError> {
        let mut settle = SETTLE.key(self.key(key));
        settle.arg(lease_value(token));
        if let Some(retention) = retention {
            settle.arg(COMPLETED).arg(millis(retention));
        }
        let reply: Result<i64, _> = settle.invoke_async(&mut self.connection.clone()).await;
        match reply.map_err(StoreError::backend)? {
            1 => Ok(LeaseOutcome::Applied),
            _ => Ok(LeaseOutcome::NotHeld),
        }
    }
}

impl DedupStore for RedisStore {
    fn claim<'a>(&'a self, key: &'a str, lease_ttl: Duration) -> StoreFuture<'a, ClaimOutcome> {
        Box::pin(async move {
            match self.claim_once(key, lease_ttl, None).await? {
                GuardedClaim::Claimed(outcome) => Ok(outcome),
                GuardedClaim::Replayed => Err(StoreError::UnexpectedReply("claim script")),
            }
        })
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a LeaseToken,
        retention: Duration,
    ) -> StoreFuture<'a, LeaseOutcome> {
        Box::pin(self.settle(key, token, Some(retention)))
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a LeaseToken) -> StoreFuture<'a, LeaseOutcome> {
        Box::pin(self.settle(key, token, None))
    }

    fn remember<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let set: Option<String> = redis::cmd("SET")
                .arg((self.key(key), "1", "NX", "PX", millis(ttl)))
                .query_async(&mut self.connection.clone())
                .await
                .map_err(StoreError::backend)?;
            Ok(set.is_some())
        })
    }

    fn claim_guarded<'a>(
        &'a self,
        guard_key: &'a str,
        guard_ttl: Duration,
        key: &'a str,
        lease_ttl: Duration,
    ) -> StoreFuture<'a, GuardedClaim> {
        Box::pin(self.claim_once(key, lease_ttl, Some((guard_key, guard_ttl))))
    }
}

/// A lease's value: `lease:<token>`.
fn lease_value(token: &LeaseToken) -> String {
    ["lease:", token.as_str()].concat()
}

/// A TTL in milliseconds for `PX`: at least 1, at most [`MAX_TTL`].
fn millis(ttl: Duration) -> u128 {
    ttl.min(MAX_TTL).as_millis().max(1)
}
