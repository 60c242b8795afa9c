//! The in-memory store: per process, bounded, sharded.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{ClaimOutcome, DedupStore, LeaseOutcome, LeaseToken, MAX_TTL, StoreError, StoreFuture};

/// Default capacity of a [`MemoryStore`]: 100 000 message ids (a few tens of MiB at most).
pub const DEFAULT_MEMORY_CAPACITY: usize = 100_000;

const SHARDS: usize = 16;
const MIN_SHARD_CAPACITY: usize = 1024;

/// A deduplication store in this process's memory.
///
/// **Per process**: two instances of a service (or a restart) do not see each other's claims;
/// use [`RedisStore`](super::RedisStore) (feature `redis`) when several instances receive.
///
/// Bounded: it holds at most its capacity of entries, so memory stays flat under a flood of
/// distinct message ids. When full, it evicts the oldest **completed** ids first (an evicted
/// id delivered again is processed again: at least once), then an expired lease; a store full
/// of live leases refuses a new claim with [`StoreError::CapacityExhausted`] (a `503`, QStash
/// retries) rather than dropping a live lease. Replay-guard ids count as completed ones.
/// Expired entries are dropped when met (or evicted).
///
/// Concurrent: the keys are spread over up to 16 shards (one per 1024 entries of capacity),
/// each behind its own mutex held only for a map operation (never across an `await`). Each
/// shard holds an equal part of the capacity, so eviction may start slightly before the whole
/// store is full, and the "oldest first" order is per shard.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    capacity: usize,
    hasher: RandomState,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// A store holding up to [`DEFAULT_MEMORY_CAPACITY`] message ids.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_MEMORY_CAPACITY)
    }

    /// A store holding up to `capacity` entries (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // Small stores keep one shard (exact eviction order); large ones spread the locks.
        let shards = (capacity / MIN_SHARD_CAPACITY).clamp(1, SHARDS);
        // Each shard's part of the capacity; the remainder goes to the first ones.
        let limit = |i: usize| capacity / shards + usize::from(i < capacity % shards);
        Self {
            shards: (0..shards)
                .map(|i| {
                    Mutex::new(Shard {
                        limit: limit(i),
                        ..Shard::default()
                    })
                })
                .collect(),
            capacity,
            hasher: RandomState::new(),
        }
    }

    /// The most entries it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many entries it holds now (leases, completed ids, replay-guard ids, expired ones not
    /// yet dropped).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).entries.len()).sum()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &str) -> Result<MutexGuard<'_, Shard>, StoreError> {
        let n = self.shards.len().max(1);
        let index = usize::try_from(self.hasher.hash_one(key) % n as u64).unwrap_or(0);
        // `with_capacity` makes at least one shard: the error is not reachable.
        self.shards
            .get(index)
            .map(lock)
            .ok_or(StoreError::CapacityExhausted { capacity: 0 })
    }

    fn claim_sync(&self, key: &str, lease_ttl: Duration) -> Result<ClaimOutcome, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key)?;
        if let Some(found) = shard.live(key, now) {
            return Ok(found);
        }
        shard.make_room(now, self.capacity)?;
        let token = LeaseToken::generate();
        shard.insert(key, State::Leased(token.clone()), expiry(now, lease_ttl));
        Ok(ClaimOutcome::Acquired(token))
    }

    fn complete_sync(
        &self,
        key: &str,
        token: &LeaseToken,
        retention: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key)?;
        Ok(if shard.complete(key, token, now, expiry(now, retention)) {
            LeaseOutcome::Applied
        } else {
            LeaseOutcome::NotHeld
        })
    }

    fn release_sync(&self, key: &str, token: &LeaseToken) -> Result<LeaseOutcome, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key)?;
        if !shard.holds(key, token, now) {
            return Ok(LeaseOutcome::NotHeld);
        }
        shard.remove(key);
        Ok(LeaseOutcome::Applied)
    }

    fn remember_sync(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let now = Instant::now();
        let mut shard = self.shard(key)?;
        if shard.live(key, now).is_some() {
            return Ok(false);
        }
        shard.make_room(now, self.capacity)?;
        shard.insert(key, State::Completed, expiry(now, ttl));
        Ok(true)
    }
}

impl DedupStore for MemoryStore {
    fn claim_now(
        &self,
        key: &str,
        lease_ttl: Duration,
    ) -> Option<Result<ClaimOutcome, StoreError>> {
        Some(self.claim_sync(key, lease_ttl))
    }

    fn complete_now(
        &self,
        key: &str,
        token: &LeaseToken,
        retention: Duration,
    ) -> Option<Result<LeaseOutcome, StoreError>> {
        Some(self.complete_sync(key, token, retention))
    }

    fn release_now(
        &self,
        key: &str,
        token: &LeaseToken,
    ) -> Option<Result<LeaseOutcome, StoreError>> {
        Some(self.release_sync(key, token))
    }

    fn claim<'a>(&'a self, key: &'a str, lease_ttl: Duration) -> StoreFuture<'a, ClaimOutcome> {
        let result = self.claim_sync(key, lease_ttl);
        Box::pin(async move { result })
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a LeaseToken,
        retention: Duration,
    ) -> StoreFuture<'a, LeaseOutcome> {
        let result = self.complete_sync(key, token, retention);
        Box::pin(async move { result })
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a LeaseToken) -> StoreFuture<'a, LeaseOutcome> {
        let result = self.release_sync(key, token);
        Box::pin(async move { result })
    }

    fn remember<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        let result = self.remember_sync(key, ttl);
        Box::pin(async move { result })
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding the lock cannot leave a shard half-updated in a way that matters
    // more than losing dedup for a few ids: keep serving.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

fn expiry(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl.min(MAX_TTL)).unwrap_or(now)
}

enum State {
    Leased(LeaseToken),
    Completed,
}

struct Entry {
    /// The map's own key (shared), so that an update needs one lookup.
    key: Arc<str>,
    state: State,
    expires_at: Instant,
    seq: u64,
}

#[derive(Default)]
struct Shard {
    entries: HashMap<Arc<str>, Entry>,
    /// Completed (and replay-guard) entries by insertion order: evicted first, oldest first.
    completed: BTreeMap<u64, Arc<str>>,
    /// Leases by insertion order.
    leases: BTreeMap<u64, Arc<str>>,
    next_seq: u64,
    /// This shard's part of the capacity.
    limit: usize,
}

impl Shard {
    /// What a live entry says about `key`; an expired one is removed.
    fn live(&mut self, key: &str, now: Instant) -> Option<ClaimOutcome> {
        let entry = self.entries.get(key)?;
        if entry.expires_at <= now {
            self.remove(key);
            return None;
        }
        Some(match entry.state {
            State::Completed => ClaimOutcome::Completed,
            State::Leased(_) => ClaimOutcome::InProgress {
                remaining: entry.expires_at.saturating_duration_since(now),
            },
        })
    }

    fn holds(&self, key: &str, token: &LeaseToken, now: Instant) -> bool {
        matches!(
            self.entries.get(key),
            Some(Entry { state: State::Leased(held), expires_at, .. })
                if held == token && *expires_at > now
        )
    }

    fn insert(&mut self, key: &str, state: State, expires_at: Instant) {
        // Once the shard is half full, keep its table at most half loaded: a table near its
        // load limit, churned by evictions, fills with tombstones and rehashes every few hundred
        // inserts (the profile of a full store showed most of a claim's time there).
        let roomy = self.limit.saturating_mul(2);
        if self.entries.len().saturating_mul(2) >= self.limit && self.entries.capacity() < roomy {
            self.entries
                .reserve(roomy.saturating_sub(self.entries.len()));
        }
        let key: Arc<str> = Arc::from(key);
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        match state {
            State::Completed => self.completed.insert(seq, Arc::clone(&key)),
            State::Leased(_) => self.leases.insert(seq, Arc::clone(&key)),
        };
        self.entries.insert(
            Arc::clone(&key),
            Entry {
                key,
                state,
                expires_at,
                seq,
            },
        );
    }

    /// Turns the lease on `key`, when `token` holds it and it has not expired, into a completed
    /// entry in place (one lookup, the same key allocation, a new place at the end of the
    /// completed order). Whether it did.
    fn complete(
        &mut self,
        key: &str,
        token: &LeaseToken,
        now: Instant,
        expires_at: Instant,
    ) -> bool {
        let seq = self.next_seq;
        let Some(entry) = self.entries.get_mut(key) else {
            return false;
        };
        if !matches!(&entry.state, State::Leased(held) if held == token) || entry.expires_at <= now
        {
            return false;
        }
        let old_seq = std::mem::replace(&mut entry.seq, seq);
        entry.state = State::Completed;
        entry.expires_at = expires_at;
        let stored = Arc::clone(&entry.key);
        self.next_seq = self.next_seq.wrapping_add(1);
        self.leases.remove(&old_seq);
        self.completed.insert(seq, stored);
        true
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            match entry.state {
                State::Completed => self.completed.remove(&entry.seq),
                State::Leased(_) => self.leases.remove(&entry.seq),
            };
        }
    }

    /// Evicts until one more entry fits: the oldest completed, else the oldest lease if expired.
    fn make_room(&mut self, now: Instant, capacity: usize) -> Result<(), StoreError> {
        while self.entries.len() >= self.limit.max(1) {
            if let Some((_, key)) = self.completed.pop_first() {
                self.entries.remove(&key);
                continue;
            }
            let oldest_lease_expired = self
                .leases
                .first_key_value()
                .and_then(|(_, key)| self.entries.get(key))
                .is_some_and(|e| e.expires_at <= now);
            match self.leases.pop_first() {
                Some((_, key)) if oldest_lease_expired => {
                    self.entries.remove(&key);
                }
                Some((seq, key)) => {
                    self.leases.insert(seq, key);
                    return Err(StoreError::CapacityExhausted { capacity });
                }
                None => return Err(StoreError::CapacityExhausted { capacity }),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_completed_evicted_first_and_live_leases_kept() {
        let store = MemoryStore::with_capacity(3);
        assert_eq!(store.capacity(), 3);
        let ttl = Duration::from_secs(60);
        let ClaimOutcome::Acquired(a) = store.claim_sync("a", ttl).unwrap() else {
            panic!()
        };
        assert_eq!(
            store.complete_sync("a", &a, ttl).unwrap(),
            LeaseOutcome::Applied
        );
        assert!(matches!(
            store.claim_sync("b", ttl).unwrap(),
            ClaimOutcome::Acquired(_)
        ));
        assert!(matches!(
            store.claim_sync("c", ttl).unwrap(),
            ClaimOutcome::Acquired(_)
        ));
        // Full: "a" (completed) goes first.
        assert!(matches!(
            store.claim_sync("d", ttl).unwrap(),
            ClaimOutcome::Acquired(_)
        ));
        assert_eq!(store.len(), 3);
        // Only live leases left (b, c, d): a new claim is refused, no live lease is dropped.
        for key in ["a", "e"] {
            let err = store.claim_sync(key, ttl).unwrap_err();
            assert!(matches!(err, StoreError::CapacityExhausted { capacity: 3 }));
        }
        assert_eq!(store.len(), 3);
        assert!(matches!(
            store.claim_sync("b", ttl).unwrap(),
            ClaimOutcome::InProgress { .. }
        ));
    }

    #[test]
    fn expired_lease_is_evicted_when_full() {
        let store = MemoryStore::with_capacity(1);
        assert!(matches!(
            store.claim_sync("a", Duration::ZERO).unwrap(),
            ClaimOutcome::Acquired(_)
        ));
        assert!(matches!(
            store.claim_sync("b", Duration::from_secs(60)).unwrap(),
            ClaimOutcome::Acquired(_)
        ));
        assert_eq!(store.len(), 1);
    }
}
