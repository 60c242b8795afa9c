//! Unit tests of the in-memory store: eviction order, capacity, the insertion orders.

use super::*;

/// The store's operations, answered at once.
impl MemoryStore {
    fn claim_sync(&self, key: &str, ttl: Duration) -> Result<ClaimOutcome, StoreError> {
        self.claim_at(key, ttl, Instant::now())
    }

    fn complete_sync(
        &self,
        key: &str,
        token: &LeaseToken,
        retention: Duration,
    ) -> Result<LeaseOutcome, StoreError> {
        self.settle(key, token, Some(retention))
    }

    fn remember_sync(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.remember_at(key, ttl, Instant::now())
    }
}

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

const HOUR: Duration = Duration::from_secs(3600);

fn acquired(store: &MemoryStore, key: &str, ttl: Duration) -> LeaseToken {
    match store.claim_sync(key, ttl).unwrap() {
        ClaimOutcome::Acquired(token) => token,
        other => panic!("{key}: {other:?}"),
    }
}

#[test]
fn an_expired_lease_behind_a_live_older_one_makes_room() {
    // Two `Dedup`s with different lease TTLs on one store: leases expire out of order.
    let store = MemoryStore::with_capacity(2);
    acquired(&store, "long", HOUR);
    acquired(&store, "short", Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(5));
    acquired(&store, "new", HOUR);
    assert_eq!(store.len(), 2);
    // The live lease was kept; the expired one went.
    assert!(matches!(
        store.claim_sync("long", HOUR).unwrap(),
        ClaimOutcome::InProgress { .. }
    ));
    assert!(matches!(
        store.claim_sync("new", HOUR).unwrap(),
        ClaimOutcome::InProgress { .. }
    ));
    // Full of live leases: refused, nothing dropped.
    assert!(matches!(
        store.claim_sync("other", HOUR),
        Err(StoreError::CapacityExhausted { capacity: 2 })
    ));
}

#[test]
fn expired_replay_guard_ids_go_before_live_completed_ids() {
    let store = MemoryStore::with_capacity(2);
    let token = acquired(&store, "msg:a", HOUR);
    assert_eq!(
        store.complete_sync("msg:a", &token, 7 * 24 * HOUR).unwrap(),
        LeaseOutcome::Applied
    );
    assert!(
        store
            .remember_sync("jti:x", Duration::from_millis(1))
            .unwrap()
    );
    std::thread::sleep(Duration::from_millis(5));
    acquired(&store, "msg:b", HOUR);
    // The expired guard id made room; the completed id is still remembered.
    assert!(matches!(
        store.claim_sync("msg:a", HOUR).unwrap(),
        ClaimOutcome::Completed
    ));
    assert!(store.remember_sync("jti:x", HOUR).unwrap());
}

#[test]
fn live_guard_ids_are_never_evicted() {
    let store = MemoryStore::with_capacity(3);
    assert!(store.remember_sync("jti:old", HOUR).unwrap());
    let token = acquired(&store, "msg:a", HOUR);
    store.complete_sync("msg:a", &token, HOUR).unwrap();
    assert!(store.remember_sync("jti:young", HOUR).unwrap());
    // Full: the completed id goes, although the old guard id is older.
    acquired(&store, "msg:b", HOUR);
    assert!(matches!(
        store.claim_sync("msg:a", HOUR),
        Err(StoreError::CapacityExhausted { capacity: 3 })
    ));
    // Full of live guard ids and a live lease: refused, nothing dropped.
    assert!(matches!(
        store.remember_sync("jti:new", HOUR),
        Err(StoreError::CapacityExhausted { capacity: 3 })
    ));
    assert!(!store.remember_sync("jti:old", HOUR).unwrap());
    assert!(!store.remember_sync("jti:young", HOUR).unwrap());
    assert_eq!(store.len(), 3);
}

#[test]
fn stale_order_slots_behind_a_live_lease_are_swept() {
    let store = MemoryStore::with_capacity(100);
    acquired(&store, "msg:long", HOUR);
    for i in 0..10_000 {
        let key = format!("msg:{i}");
        let token = acquired(&store, &key, HOUR);
        assert_eq!(
            store.complete_sync(&key, &token, HOUR).unwrap(),
            LeaseOutcome::Applied
        );
        assert!(
            store
                .remember_sync(&format!("jti:{i}"), Duration::ZERO)
                .unwrap()
        );
    }
    // Each completion left a stale lease slot behind the live one: swept as they go.
    let shard = lock(&store.shards[0]);
    let o = &shard.orders;
    assert!(o.leases.slots.len() <= 2 + 64, "{}", o.leases.slots.len());
    assert!(
        o.completed.slots.len() <= 2 * 100 + 64,
        "{}",
        o.completed.slots.len()
    );
    assert!(
        o.remembered.slots.len() <= 2 * 100 + 64,
        "{}",
        o.remembered.slots.len()
    );
    drop(shard);
    assert_eq!(store.len(), 100);
    assert!(matches!(
        store.claim_sync("msg:long", HOUR).unwrap(),
        ClaimOutcome::InProgress { .. }
    ));
}

#[test]
fn an_expired_guard_id_behind_a_live_older_one_makes_room() {
    // Tokens of different lifetimes: guard ids expire out of order.
    let store = MemoryStore::with_capacity(2);
    assert!(store.remember_sync("jti:long", HOUR).unwrap());
    assert!(
        store
            .remember_sync("jti:short", Duration::from_millis(1))
            .unwrap()
    );
    std::thread::sleep(Duration::from_millis(5));
    assert!(store.remember_sync("jti:new", HOUR).unwrap());
    assert!(!store.remember_sync("jti:long", HOUR).unwrap());
    assert_eq!(store.len(), 2);
}
