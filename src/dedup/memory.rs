//! The in-memory store: per process, bounded, sharded.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard, PoisonError};

use hashbrown::HashTable;
use std::time::{Duration, Instant};

use super::order::{Order, Slot};
use super::{
    ClaimOutcome, DedupStore, GuardedClaim, LeaseOutcome, LeaseToken, MAX_TTL, StoreError,
    StoreFuture,
};

/// Default capacity of a [`MemoryStore`]: 1 000 000 entries (about 200 MiB when full, memory
/// grows with use).
///
/// Every delivery leaves a replay-guard entry that lives as long as its token can verify (about
/// 300 s) and is never evicted before: a store of capacity `C` takes about `C / 300` deliveries a
/// second, sustained (about 3 300 by default), and beyond that answers `503` (QStash retries)
/// rather than forget a live token. Size it for your peak rate, or use Redis.
pub const DEFAULT_MEMORY_CAPACITY: usize = 1_000_000;

const SHARDS: usize = 16;
const MIN_SHARD_CAPACITY: usize = 1024;

/// A deduplication store in this process's memory.
///
/// **Per process**: two instances of a service (or a restart) do not see each other's claims;
/// use [`RedisStore`](super::RedisStore) (feature `redis`) when several instances receive.
///
/// Bounded: it holds at most its capacity of entries, so memory stays flat under a flood of
/// distinct message ids. When full, it evicts an expired entry first, then the oldest
/// **completed** id (an evicted id delivered again is processed again: at least once), then an
/// expired lease; it never evicts a live lease nor a live replay-guard id (a token still valid):
/// a store full of those refuses with [`StoreError::CapacityExhausted`] (a `503`, QStash
/// retries) rather than dropping one: see [`DEFAULT_MEMORY_CAPACITY`] for sizing.
/// Expired entries are also dropped when met.
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
    /// A store holding up to [`DEFAULT_MEMORY_CAPACITY`] entries.
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

    /// The shard of `key`, locked, and the key with its hash: hashed once per operation, for
    /// the shard and its table alike.
    fn shard<'k>(&self, key: &'k str) -> Result<(MutexGuard<'_, Shard>, Key<'k>), StoreError> {
        let key = Key {
            hash: self.hasher.hash_one(key),
            text: key,
        };
        // Bits the table does not use for its own placement (the low ones) nor its tags (the
        // top 7), so that each shard's keys spread over its whole table.
        let bits = key.hash >> 32;
        let index = usize::try_from(bits % self.shards.len().max(1) as u64).unwrap_or(0);
        // `with_capacity` makes at least one shard: the error is not reachable.
        let shard = self
            .shards
            .get(index)
            .map(lock)
            .ok_or(StoreError::CapacityExhausted { capacity: 0 })?;
        Ok((shard, key))
    }

    fn claim_sync(&self, key: &str, lease_ttl: Duration) -> Result<ClaimOutcome, StoreError> {
        self.claim_at(key, lease_ttl, Instant::now())
    }

    fn claim_at(
        &self,
        key: &str,
        lease_ttl: Duration,
        now: Instant,
    ) -> Result<ClaimOutcome, StoreError> {
        let (mut shard, key) = self.shard(key)?;
        if let Some(found) = shard.live(key, now) {
            return Ok(found);
        }
        shard.make_room(now, self.capacity)?;
        let token = LeaseToken::generate()?;
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
        let (mut shard, key) = self.shard(key)?;
        Ok(if shard.complete(key, token, now, expiry(now, retention)) {
            LeaseOutcome::Applied
        } else {
            LeaseOutcome::NotHeld
        })
    }

    fn release_sync(&self, key: &str, token: &LeaseToken) -> Result<LeaseOutcome, StoreError> {
        let now = Instant::now();
        let (mut shard, key) = self.shard(key)?;
        if !shard.holds(key, token, now) {
            return Ok(LeaseOutcome::NotHeld);
        }
        shard.remove(key);
        Ok(LeaseOutcome::Applied)
    }

    fn remember_sync(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.remember_at(key, ttl, Instant::now())
    }

    fn remember_at(&self, key: &str, ttl: Duration, now: Instant) -> Result<bool, StoreError> {
        let (mut shard, key) = self.shard(key)?;
        if shard.live(key, now).is_some() {
            return Ok(false);
        }
        shard.make_room(now, self.capacity)?;
        shard.insert(key, State::Remembered, expiry(now, ttl));
        Ok(true)
    }
}

impl DedupStore for MemoryStore {
    // Each future is ready at once: the work is done before it is returned.
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

    // One call and one future for both (the guard key and the message key are in shards of
    // their own: locked one after the other, as two operations would).
    fn claim_guarded<'a>(
        &'a self,
        guard_key: &'a str,
        guard_ttl: Duration,
        key: &'a str,
        lease_ttl: Duration,
    ) -> StoreFuture<'a, GuardedClaim> {
        let now = Instant::now();
        let result = match self.remember_at(guard_key, guard_ttl, now) {
            Ok(true) => self
                .claim_at(key, lease_ttl, now)
                .map(GuardedClaim::Claimed),
            Ok(false) => Ok(GuardedClaim::Replayed),
            Err(error) => Err(error),
        };
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
    /// A replay-guard id ([`DedupStore::remember`]): short-lived, kept in an order of its own.
    Remembered,
}

/// A key and its hash (by the store's [`RandomState`]).
#[derive(Clone, Copy)]
struct Key<'a> {
    hash: u64,
    text: &'a str,
}

struct Entry {
    key: Box<str>,
    /// The key's hash: the table never hashes a key again (not even to grow).
    hash: u64,
    state: State,
    expires_at: Instant,
    seq: u64,
}

impl Entry {
    fn is(&self, key: Key<'_>) -> bool {
        *self.key == *key.text
    }
}

/// A table of entries, each found by its precomputed hash: one SipHash per store operation
/// (three to eight with a `HashMap`): memory guarded claim + complete, a new store every 300,
/// 1.00 → 0.71 µs (`cargo bench --bench dedup`).
#[derive(Default)]
struct Shard {
    entries: HashTable<Entry>,
    orders: Orders,
    next_seq: u64,
    /// This shard's part of the capacity.
    limit: usize,
}

/// The entries of a shard by insertion order, one order per state.
#[derive(Default)]
struct Orders {
    /// Completed message ids (their retention is alike, so the oldest expires first).
    completed: Order,
    /// Replay-guard ids (they live minutes, completed ids days: kept apart so that expired ones
    /// are found at the front).
    remembered: Order,
    /// Leases.
    leases: Order,
}

impl Orders {
    /// The order an entry in `state` is kept in.
    fn of(&mut self, state: &State) -> &mut Order {
        match state {
            State::Completed => &mut self.completed,
            State::Remembered => &mut self.remembered,
            State::Leased(_) => &mut self.leases,
        }
    }
}

/// Whether `slot`'s entry is still in `entries` under its sequence number.
fn is_live(entries: &HashTable<Entry>) -> impl Fn(&Slot) -> bool + '_ {
    |slot| entries.find(slot.hash, |e| e.seq == slot.seq).is_some()
}

impl Shard {
    /// What a live entry says about `key`; an expired one is removed.
    fn live(&mut self, key: Key<'_>, now: Instant) -> Option<ClaimOutcome> {
        let entry = self.entries.find(key.hash, |e| e.is(key))?;
        if entry.expires_at <= now {
            self.remove(key);
            return None;
        }
        Some(match entry.state {
            State::Completed | State::Remembered => ClaimOutcome::Completed,
            State::Leased(_) => ClaimOutcome::InProgress {
                remaining: entry.expires_at.saturating_duration_since(now),
            },
        })
    }

    fn holds(&self, key: Key<'_>, token: &LeaseToken, now: Instant) -> bool {
        matches!(
            self.entries.find(key.hash, |e| e.is(key)),
            Some(Entry { state: State::Leased(held), expires_at, .. })
                if held == token && *expires_at > now
        )
    }

    fn insert(&mut self, key: Key<'_>, state: State, expires_at: Instant) {
        // Once the shard is half full, keep its table at most half loaded: a table near its
        // load limit, churned by evictions, fills with tombstones and rehashes every few hundred
        // inserts (the profile of a full store showed most of a claim's time there).
        let roomy = self.limit.saturating_mul(2);
        if self.entries.len().saturating_mul(2) >= self.limit && self.entries.capacity() < roomy {
            self.entries
                .reserve(roomy.saturating_sub(self.entries.len()), |e| e.hash);
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let slot = Slot {
            seq,
            hash: key.hash,
            expires_at,
        };
        self.orders.of(&state).push(slot, is_live(&self.entries));
        self.entries.insert_unique(
            key.hash,
            Entry {
                key: Box::from(key.text),
                hash: key.hash,
                state,
                expires_at,
                seq,
            },
            |e| e.hash,
        );
    }

    /// Turns the lease on `key`, when `token` holds it and it has not expired, into a completed
    /// entry in place (one lookup, a new place at the end of the completed order). Whether it
    /// did.
    fn complete(
        &mut self,
        key: Key<'_>,
        token: &LeaseToken,
        now: Instant,
        expires_at: Instant,
    ) -> bool {
        let seq = self.next_seq;
        let Some(entry) = self.entries.find_mut(key.hash, |e| e.is(key)) else {
            return false;
        };
        if !matches!(&entry.state, State::Leased(held) if held == token) || entry.expires_at <= now
        {
            return false;
        }
        // Its lease slot goes stale with the new sequence number.
        entry.seq = seq;
        entry.state = State::Completed;
        entry.expires_at = expires_at;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.orders.leases.leave();
        let slot = Slot {
            seq,
            hash: key.hash,
            expires_at,
        };
        self.orders.completed.push(slot, is_live(&self.entries));
        true
    }

    fn remove(&mut self, key: Key<'_>) {
        if let Ok(found) = self.entries.find_entry(key.hash, |e| e.is(key)) {
            let (entry, _) = found.remove();
            self.orders.of(&entry.state).leave();
        }
    }

    /// Evicts until one more entry fits: an expired entry first (the oldest of each order), then
    /// the oldest live completed id, then an expired lease anywhere (leases of `Dedup`s with
    /// different lease TTLs expire out of order). Never a live lease, never a live replay-guard
    /// id (evicting one would let a captured token be replayed): full of those, it fails.
    fn make_room(&mut self, now: Instant, capacity: usize) -> Result<(), StoreError> {
        while self.entries.len() >= self.limit.max(1) {
            let victim = {
                let live = is_live(&self.entries);
                let o = &mut self.orders;
                let expired = |order: &mut Order| {
                    order
                        .first(&live)
                        .is_some_and(|slot| slot.expires_at <= now)
                };
                if expired(&mut o.remembered) {
                    o.remembered.pop_first(&live)
                } else if expired(&mut o.completed) {
                    o.completed.pop_first(&live)
                } else if expired(&mut o.leases) {
                    o.leases.pop_first(&live)
                } else if !o.completed.is_empty() {
                    o.completed.pop_first(&live)
                } else {
                    // Guard ids of tokens with different lifetimes expire out of order, as
                    // leases do.
                    o.remembered
                        .take_expired(now, &live)
                        .or_else(|| o.leases.take_expired(now, &live))
                }
            };
            let Some(slot) = victim else {
                return Err(StoreError::CapacityExhausted { capacity });
            };
            // The sequence number tells the entry apart from any other of the same hash.
            if let Ok(found) = self.entries.find_entry(slot.hash, |e| e.seq == slot.seq) {
                found.remove();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
