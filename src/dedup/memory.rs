//! The in-memory store: per process, bounded, sharded.

use std::collections::VecDeque;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hashbrown::HashTable;

use super::{
    ClaimOutcome, DedupStore, GuardedClaim, LeaseOutcome, LeaseToken, MAX_TTL, StoreError,
    StoreFuture,
};

/// Default capacity of a [`MemoryStore`]: 1 000 000 entries (about 200 MiB when full; memory
/// grows with use). Every delivery leaves a replay-guard entry, never evicted while its token can
/// verify (about 300 s): a store of capacity `C` takes about `C / 300` deliveries a second,
/// sustained (about 3 300 by default), and beyond that answers `503` (QStash retries) rather than
/// forget a live token. Size it for your peak rate, or use Redis.
pub const DEFAULT_MEMORY_CAPACITY: usize = 1_000_000;

const SHARDS: usize = 16;
const MIN_SHARD_CAPACITY: usize = 1024;

/// A deduplication store in this process's memory, **per process**: two instances of a service
/// (or a restart) do not see each other's claims; use [`RedisStore`](super::RedisStore) (feature
/// `redis`) when several instances receive. Its futures are ready at once.
///
/// Bounded by its capacity ([`DEFAULT_MEMORY_CAPACITY`]). When full, it evicts an expired entry
/// first, then the oldest **completed** id (delivered again, it is processed again); never a
/// live lease nor a live replay-guard id: full of those, it refuses with
/// [`StoreError::CapacityExhausted`] (`503`, QStash retries). Keys are spread over up to 16
/// shards (one per 1024 entries of capacity), each with an equal part of the capacity (so
/// "oldest first" is per shard) behind its own mutex.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    capacity: usize,
    // hashbrown's seeded foldhash: keys come only from verified deliveries, so SipHash's extra
    // flooding resistance buys nothing here.
    hasher: hashbrown::DefaultHashBuilder,
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
            hasher: hashbrown::DefaultHashBuilder::default(),
        }
    }

    /// The most entries it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many entries it holds now, expired ones not yet dropped included.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).entries.len()).sum()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shard of `key`, locked, and the key with its hash (hashed once per operation).
    fn shard<'k>(&self, key: &'k str) -> Result<(MutexGuard<'_, Shard>, Key<'k>), StoreError> {
        let key = Key(self.hasher.hash_one(key), key);
        // Bits the table does not use for its own placement (the low ones) nor its tags (the
        // top 7), so that each shard's keys spread over its whole table.
        let index = (key.0 >> 32) % self.shards.len().max(1) as u64;
        // Not reachable: `with_capacity` makes at least one shard.
        let shard = usize::try_from(index).ok().and_then(|i| self.shards.get(i));
        let shard = shard.ok_or(StoreError::CapacityExhausted { capacity: 0 })?;
        Ok((lock(shard), key))
    }

    fn claim_at(&self, key: &str, ttl: Duration, now: Instant) -> Result<ClaimOutcome, StoreError> {
        let (mut shard, key) = self.shard(key)?;
        if let Some(found) = shard.live(key, now) {
            return Ok(found);
        }
        shard.make_room(now, self.capacity)?;
        let token = LeaseToken::generate()?;
        shard.insert(key, State::Leased(token.clone()), expiry(now, ttl));
        Ok(ClaimOutcome::Acquired(token))
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

    /// Completes (with a `retention`) or releases the lease on `key` if `token` holds it.
    fn settle(
        &self,
        key: &str,
        token: &LeaseToken,
        retention: Option<Duration>,
    ) -> Result<LeaseOutcome, StoreError> {
        let now = Instant::now();
        let (mut guard, key) = self.shard(key)?;
        let shard = &mut *guard;
        let found = shard.entries.find_mut(key.0, |e| *e.key == *key.1);
        let held = found.filter(|e| {
            matches!(&e.state, State::Leased(held) if held == token) && e.expires_at > now
        });
        let Some(entry) = held else {
            return Ok(LeaseOutcome::NotHeld);
        };
        match retention {
            // Completed in place; the lease's slot goes stale with the new sequence number.
            Some(retention) => {
                let (seq, expires_at) = (shard.next_seq, expiry(now, retention));
                (entry.seq, entry.state, entry.expires_at) = (seq, State::Completed, expires_at);
                shard.next_seq = seq.wrapping_add(1);
                shard.orders.leases.leave();
                shard.push(&State::Completed, key.0, seq, expires_at);
            }
            None => shard.remove(key),
        }
        Ok(LeaseOutcome::Applied)
    }
}

/// A future ready at once.
fn ready<'a, T: Send + 'a>(result: Result<T, StoreError>) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(result))
}

impl DedupStore for MemoryStore {
    fn claim<'a>(&'a self, key: &'a str, lease_ttl: Duration) -> StoreFuture<'a, ClaimOutcome> {
        ready(self.claim_at(key, lease_ttl, Instant::now()))
    }

    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a LeaseToken,
        retention: Duration,
    ) -> StoreFuture<'a, LeaseOutcome> {
        ready(self.settle(key, token, Some(retention)))
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a LeaseToken) -> StoreFuture<'a, LeaseOutcome> {
        ready(self.settle(key, token, None))
    }

    fn remember<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        ready(self.remember_at(key, ttl, Instant::now()))
    }

    // The default's two boxed calls and clock reads in one: every delivery takes this path.
    fn claim_guarded<'a>(
        &'a self,
        guard_key: &'a str,
        guard_ttl: Duration,
        key: &'a str,
        ttl: Duration,
    ) -> StoreFuture<'a, GuardedClaim> {
        let now = Instant::now();
        ready(match self.remember_at(guard_key, guard_ttl, now) {
            Ok(true) => self.claim_at(key, ttl, now).map(GuardedClaim::Claimed),
            Ok(false) => Ok(GuardedClaim::Replayed),
            Err(error) => Err(error),
        })
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // A panic while holding the lock costs at most the dedup of a few ids: keep serving.
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

fn expiry(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl.min(MAX_TTL)).unwrap_or(now)
}

enum State {
    Leased(LeaseToken),
    Completed,
    /// A replay-guard id ([`DedupStore::remember`]).
    Remembered,
}

/// A key's hash (by the store's hasher) and the key.
#[derive(Clone, Copy)]
struct Key<'a>(u64, &'a str);

struct Entry {
    key: Box<str>,
    /// The key's hash: the table never hashes a key again (not even to grow).
    hash: u64,
    state: State,
    expires_at: Instant,
    /// Unique in its shard: tells this entry apart in the [`Order`]s.
    seq: u64,
}

/// A table of entries, each found by its precomputed hash: one hash per store operation
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

/// The entries of a shard by insertion order, one order per state: completed ids (days) and
/// replay-guard ids (minutes) apart, so that the expired ones are found at the front.
#[derive(Default)]
struct Orders {
    completed: Order,
    remembered: Order,
    leases: Order,
}

impl Orders {
    fn of(&mut self, state: &State) -> &mut Order {
        match state {
            State::Completed => &mut self.completed,
            State::Remembered => &mut self.remembered,
            State::Leased(_) => &mut self.leases,
        }
    }
}

/// An entry's place in an [`Order`]: its sequence number, its hash (to find it in the table)
/// and its expiry (read without a lookup).
#[derive(Clone, Copy)]
struct Slot {
    seq: u64,
    hash: u64,
    expires_at: Instant,
}

/// Entries by insertion order. An entry that leaves it leaves its slot behind, stale: skipped
/// when met, swept out once stale slots outnumber live ones. O(1) per operation, where a
/// `BTreeMap` by sequence number cost an ordered insert or remove: memory guarded claim +
/// complete 1.77 → 1.23 µs on a full store (`cargo bench --bench dedup -- memory_guarded`).
#[derive(Default)]
struct Order {
    slots: VecDeque<Slot>,
    /// Live slots (the others are stale).
    live: usize,
}

/// Whether `slot`'s entry is still in `entries` under its sequence number.
fn is_live(entries: &HashTable<Entry>) -> impl Fn(&Slot) -> bool + '_ {
    |slot| entries.find(slot.hash, |e| e.seq == slot.seq).is_some()
}

impl Order {
    /// One of its entries left it: its slot is stale from now on.
    fn leave(&mut self) {
        self.live = self.live.saturating_sub(1);
    }

    /// Takes the oldest live slot out (its entry is the caller's to remove) if `take` says so;
    /// stale slots before it are dropped.
    fn pop_first_if(
        &mut self,
        is_live: impl Fn(&Slot) -> bool,
        take: impl FnOnce(&Slot) -> bool,
    ) -> Option<Slot> {
        while self.slots.front().is_some_and(|s| !is_live(s)) {
            self.slots.pop_front();
        }
        self.slots.front().filter(|s| take(s))?;
        self.leave();
        self.slots.pop_front()
    }

    /// Takes out the oldest live slot expired at `now`, wherever it is (entries of different
    /// lifetimes expire out of order).
    fn take_expired(&mut self, now: Instant, is_live: impl Fn(&Slot) -> bool) -> Option<Slot> {
        let at = self
            .slots
            .iter()
            .position(|s| s.expires_at <= now && is_live(s))?;
        self.leave();
        self.slots.remove(at)
    }
}

impl Shard {
    /// What a live entry says about `key`; an expired one is removed.
    fn live(&mut self, key: Key<'_>, now: Instant) -> Option<ClaimOutcome> {
        let entry = self.entries.find(key.0, |e| *e.key == *key.1)?;
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
        self.next_seq = seq.wrapping_add(1);
        self.push(&state, key.0, seq, expires_at);
        let entry = Entry {
            key: Box::from(key.1),
            hash: key.0,
            state,
            expires_at,
            seq,
        };
        self.entries.insert_unique(key.0, entry, |e| e.hash);
    }

    /// Adds a slot at the end of `state`'s order; sweeps the order's stale slots out once they
    /// outnumber its live ones (amortized: at least `live + 64` pushes or leaves between two).
    fn push(&mut self, state: &State, hash: u64, seq: u64, expires_at: Instant) {
        let is_live = is_live(&self.entries);
        let order = self.orders.of(state);
        order.slots.push_back(Slot {
            seq,
            hash,
            expires_at,
        });
        order.live += 1;
        if order.slots.len() > order.live.saturating_mul(2).saturating_add(64) {
            order.slots.retain(|s| is_live(s));
            order.live = order.slots.len();
        }
    }

    fn remove(&mut self, key: Key<'_>) {
        if let Ok(found) = self.entries.find_entry(key.0, |e| *e.key == *key.1) {
            let (entry, _) = found.remove();
            self.orders.of(&entry.state).leave();
        }
    }

    /// Evicts until one more entry fits: an expired entry first (the oldest of each order), then
    /// the oldest live completed id, then an expired lease or guard id anywhere (those of
    /// different TTLs expire out of order). Never a live lease, never a live replay-guard id
    /// (evicting one would let a captured token be replayed): full of those, it fails.
    fn make_room(&mut self, now: Instant, capacity: usize) -> Result<(), StoreError> {
        while self.entries.len() >= self.limit.max(1) {
            let victim = {
                let (live, o) = (is_live(&self.entries), &mut self.orders);
                let expired = |slot: &Slot| slot.expires_at <= now;
                (o.remembered.pop_first_if(&live, expired))
                    .or_else(|| o.completed.pop_first_if(&live, expired))
                    .or_else(|| o.leases.pop_first_if(&live, expired))
                    .or_else(|| o.completed.pop_first_if(&live, |_| true))
                    .or_else(|| o.remembered.take_expired(now, &live))
                    .or_else(|| o.leases.take_expired(now, &live))
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
