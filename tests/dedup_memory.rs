//! Deduplication with the in-memory store: the shared scenarios, boundedness under a flood,
//! store failures.
#![cfg(feature = "test-utils")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use qstash_receiver::Rejection;
use qstash_receiver::dedup::{
    Begin, ClaimOutcome, Dedup, DedupStore, GuardedClaim, InProgressRetryAfter, LeaseOutcome,
    LeaseToken, MemoryStore, OnStoreError, StoreFuture, UnguardedReason,
};
use support::*;

fn store() -> Arc<dyn DedupStore> {
    Arc::new(MemoryStore::new())
}

#[tokio::test]
async fn completed_message_is_a_duplicate() {
    complete_then_duplicate(store()).await;
}

#[tokio::test]
async fn released_message_runs_again() {
    release_then_runs_again(store()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_run_once() {
    let shared = store();
    concurrent_claims_one_winner(vec![Dedup::new(Arc::clone(&shared)), Dedup::new(shared)]).await;
}

#[tokio::test]
async fn expired_lease_taken_over_and_late_holder_powerless() {
    expired_lease_is_taken_over(store()).await;
    expired_lease_cannot_complete(store()).await;
}

#[tokio::test]
async fn completed_ids_expire_after_retention() {
    retention_expires(store()).await;
}

#[tokio::test]
async fn replay_guard_refuses_the_same_token() {
    replay_guard(store()).await;
}

#[tokio::test]
async fn the_guard_and_the_claim_in_one_call() {
    guarded_claim(store()).await;
}

/// A memory store that records which of its operations are called.
#[derive(Default)]
struct Recorder {
    inner: MemoryStore,
    calls: Mutex<Vec<&'static str>>,
}

impl Recorder {
    fn calls(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
    fn record(&self, call: &'static str) {
        self.calls.lock().unwrap().push(call);
    }
}

/// Keeps the trait's default `claim_guarded` (a store written before it existed).
impl DedupStore for Recorder {
    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, ClaimOutcome> {
        self.record("claim");
        self.inner.claim(key, ttl)
    }
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a LeaseToken,
        retention: Duration,
    ) -> StoreFuture<'a, LeaseOutcome> {
        self.record("complete");
        self.inner.complete(key, token, retention)
    }
    fn release<'a>(&'a self, key: &'a str, token: &'a LeaseToken) -> StoreFuture<'a, LeaseOutcome> {
        self.record("release");
        self.inner.release(key, token)
    }
    fn remember<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        self.record("remember");
        self.inner.remember(key, ttl)
    }
}

/// Overrides `claim_guarded`, as `MemoryStore` and `RedisStore` do.
#[derive(Default)]
struct CombinedRecorder(Recorder);

impl DedupStore for CombinedRecorder {
    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, ClaimOutcome> {
        self.0.claim(key, ttl)
    }
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a LeaseToken,
        retention: Duration,
    ) -> StoreFuture<'a, LeaseOutcome> {
        self.0.complete(key, token, retention)
    }
    fn release<'a>(&'a self, key: &'a str, token: &'a LeaseToken) -> StoreFuture<'a, LeaseOutcome> {
        self.0.release(key, token)
    }
    fn remember<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        self.0.remember(key, ttl)
    }
    fn claim_guarded<'a>(
        &'a self,
        guard_key: &'a str,
        guard_ttl: Duration,
        key: &'a str,
        lease_ttl: Duration,
    ) -> StoreFuture<'a, GuardedClaim> {
        self.0.record("claim_guarded");
        self.0
            .inner
            .claim_guarded(guard_key, guard_ttl, key, lease_ttl)
    }
}

#[tokio::test]
async fn a_store_without_the_combined_operation_gets_the_guard_then_the_claim() {
    let recorder = Arc::new(Recorder::default());
    let dedup = Dedup::new(Arc::clone(&recorder) as Arc<dyn DedupStore>);
    guarded_claim(Arc::clone(&recorder) as Arc<dyn DedupStore>).await;
    recorder.calls();
    // A new delivery: remember, claim; then complete.
    let first = signed(&new_id(), 0);
    let (delivery, claims) = verified(&first);
    expect_run(dedup.begin(&delivery, &claims).await)
        .complete()
        .await
        .unwrap();
    assert_eq!(recorder.calls(), ["remember", "claim", "complete"]);
    // Its token replayed under another message id: refused after the guard, nothing claimed.
    let (delivery, claims) = verified(&with_message_id(&first, Some(&new_id())));
    assert!(matches!(
        dedup.begin(&delivery, &claims).await,
        Begin::Refuse(Rejection::Replayed)
    ));
    assert_eq!(recorder.calls(), ["remember"]);
}

#[tokio::test]
async fn a_delivery_is_one_guarded_claim_and_two_operations_when_failing_open() {
    let recorder = Arc::new(CombinedRecorder::default());
    let store = Arc::clone(&recorder) as Arc<dyn DedupStore>;
    let closed = Dedup::new(Arc::clone(&store));
    let first = signed(&new_id(), 0);
    let (delivery, claims) = verified(&first);
    expect_run(closed.begin(&delivery, &claims).await)
        .complete()
        .await
        .unwrap();
    assert_eq!(recorder.0.calls(), ["claim_guarded", "complete"]);
    // A replay: refused by the one call, the other message id not claimed.
    let other = new_id();
    let (delivery, claims) = verified(&with_message_id(&first, Some(&other)));
    assert!(matches!(
        closed.begin(&delivery, &claims).await,
        Begin::Refuse(Rejection::Replayed)
    ));
    assert_eq!(recorder.0.calls(), ["claim_guarded"]);
    expect_run(begin(&closed.clone().replay_guard(false), &other).await)
        .release()
        .await
        .unwrap();
    assert_eq!(recorder.0.calls(), ["claim", "release"]);
    // Failing open, a failing guard must not keep the claim from being tried: two operations.
    let open = Dedup::new(store).on_store_error(OnStoreError::FailOpen);
    expect_run(begin(&open, &new_id()).await)
        .complete()
        .await
        .unwrap();
    assert_eq!(recorder.0.calls(), ["remember", "claim", "complete"]);
}

#[tokio::test]
async fn a_token_without_jti_is_claimed_without_the_guard() {
    use base64::Engine as _;
    use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
    use qstash_receiver::test_utils::Signer;
    use sha2::Digest as _;

    let recorder = Arc::new(CombinedRecorder::default());
    let dedup = Dedup::new(Arc::clone(&recorder) as Arc<dyn DedupStore>);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let payload = serde_json::json!({
        "iss": "Upstash", "sub": URL, "iat": now, "exp": now + 300,
        "body": URL_SAFE.encode(sha2::Sha256::digest(BODY)),
    });
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let token = Signer::new(KEY).sign_raw(&header, &URL_SAFE_NO_PAD.encode(payload.to_string()));
    let mut d = signed(&new_id(), 0);
    d.signature = token;
    let (delivery, claims) = verified(&d);
    assert_eq!(claims.jwt_id(), None);
    for _ in 0..2 {
        // Run, released, run again: no guard, each time a claim of the message id alone.
        expect_run(dedup.begin(&delivery, &claims).await)
            .release()
            .await
            .unwrap();
        assert_eq!(recorder.0.calls(), ["claim", "release"]);
    }
}

#[cfg(any(feature = "tower", feature = "actix-web", feature = "redis"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_lease_is_released_in_the_background() {
    dropped_lease_is_released(store()).await;
}

#[tokio::test]
async fn delivery_without_message_id_is_refused() {
    let memory = Arc::new(MemoryStore::new());
    no_message_id_is_refused(memory.clone()).await;
    assert!(memory.is_empty());
}

#[tokio::test]
async fn memory_stays_bounded_under_a_flood_of_distinct_ids() {
    let memory = Arc::new(MemoryStore::with_capacity(10_000));
    assert_eq!(memory.capacity(), 10_000);
    let dedup = Dedup::new(memory.clone());
    let mut max_len = 0;
    for i in 0..200_000u32 {
        let key = msg_key(&format!("flood_{i}"));
        let ClaimOutcome::Acquired(token) =
            memory.claim(&key, Duration::from_secs(60)).await.unwrap()
        else {
            panic!("{key} not acquired");
        };
        assert_eq!(
            memory
                .complete(&key, &token, Duration::from_secs(3600))
                .await
                .unwrap(),
            LeaseOutcome::Applied
        );
        if i % 1000 == 0 {
            max_len = max_len.max(memory.len());
        }
    }
    max_len = max_len.max(memory.len());
    assert!(
        max_len <= 10_000,
        "{max_len} entries for a capacity of 10000"
    );
    assert!(
        memory.len() > 9_000,
        "evicted too eagerly: {}",
        memory.len()
    );
    // The most recent completed ids are kept; the oldest were evicted first.
    let (delivery, claims) = attempt("flood_199999", 3);
    assert!(matches!(
        dedup.begin(&delivery, &claims).await,
        Begin::Duplicate { .. }
    ));
    let (delivery, claims) = attempt("flood_0", 3);
    expect_run(dedup.begin(&delivery, &claims).await)
        .complete()
        .await
        .unwrap();
}

#[tokio::test]
async fn full_of_live_leases_refuses_instead_of_dropping_one() {
    // Capacity 1: one shard, so the order is deterministic.
    let memory = Arc::new(MemoryStore::with_capacity(1));
    // Leases only (the guard's entries are covered below).
    let dedup = Dedup::new(memory.clone()).replay_guard(false);
    let lease = expect_run(begin(&dedup, &new_id()).await);
    // Fail closed: 503, nothing lost, QStash retries; the live lease is kept.
    expect_store_unavailable(begin(&dedup, &new_id()).await, 10);
    expect_in_progress(begin(&dedup, lease.message_id()).await, 7260);
    let done = lease.message_id().to_owned();
    lease.complete().await.unwrap();
    // A completed id makes room (evicted first).
    expect_run(begin(&dedup, &new_id()).await)
        .complete()
        .await
        .unwrap();
    assert_eq!(memory.len(), 1);
    expect_run(begin(&dedup, &done).await)
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn full_of_live_guard_entries_refuses_instead_of_evicting_one() {
    // Capacity 4: one shard. Each delivery adds its token's guard entry and its message id.
    let memory = Arc::new(MemoryStore::with_capacity(4));
    let dedup = Dedup::new(memory.clone());
    let first = signed(&new_id(), 0);
    let (delivery, claims) = verified(&first);
    expect_run(dedup.begin(&delivery, &claims).await)
        .complete()
        .await
        .unwrap();
    for _ in 0..2 {
        expect_run(begin(&dedup, &new_id()).await)
            .complete()
            .await
            .unwrap();
    }
    // Three live guard entries, one completed id (the others were evicted first). The next
    // delivery's guard entry evicts that completed id; its claim finds no room: 503.
    assert_eq!(memory.len(), 4);
    expect_store_unavailable(begin(&dedup, &new_id()).await, 10);
    let full = begin(&dedup, &new_id()).await;
    match &full {
        Begin::Refuse(r) => assert_eq!((r.status(), r.code()), (503, "store_unavailable")),
        other => panic!("expected 503, got {other:?}"),
    }
    // No guard entry was evicted: the first token is still refused.
    let (delivery, claims) = verified(&with_message_id(&first, Some(&new_id())));
    assert!(matches!(
        dedup.begin(&delivery, &claims).await,
        Begin::Refuse(qstash_receiver::Rejection::Replayed)
    ));
    assert_eq!(memory.len(), 4);
}

#[tokio::test]
async fn replay_under_a_victims_id_cannot_use_it_up() {
    replay_under_a_victims_id(store()).await;
}

#[tokio::test]
async fn the_longest_retry_after_is_a_day_never_a_panic() {
    let closed = Dedup::new(Arc::new(FailingStore)).store_retry_after(Duration::MAX);
    expect_store_unavailable(begin(&closed, &new_id()).await, 86_400);
    let memory: Arc<dyn DedupStore> = store();
    let dedup = Dedup::new(memory)
        .in_progress_retry_after(InProgressRetryAfter::Fixed(Duration::MAX))
        .lease_ttl(Duration::MAX);
    let id = new_id();
    let lease = expect_run(begin(&dedup, &id).await);
    assert_eq!(expect_in_progress(begin(&dedup, &id).await, 86_400), 86_400);
    let remaining =
        dedup.in_progress_retry_after(InProgressRetryAfter::RemainingLease { max: Duration::MAX });
    assert_eq!(
        expect_in_progress(begin(&remaining, &id).await, 86_400),
        86_400
    );
    lease.release().await.unwrap();
}

#[tokio::test]
async fn store_failure_fails_closed_by_default_and_open_on_request() {
    let closed = Dedup::new(Arc::new(FailingStore));
    expect_store_unavailable(begin(&closed, &new_id()).await, 10);
    let closed = closed.store_retry_after(Duration::from_millis(2500));
    expect_store_unavailable(begin(&closed, &new_id()).await, 3);
    // The replay guard's store call fails the same way.
    let guarded = Dedup::new(Arc::new(FailingStore)).replay_guard(true);
    expect_store_unavailable(begin(&guarded, &new_id()).await, 10);

    let open = Dedup::new(Arc::new(FailingStore))
        .replay_guard(true)
        .on_store_error(OnStoreError::FailOpen);
    match begin(&open, &new_id()).await {
        Begin::RunUnguarded { reason } => assert_eq!(reason, UnguardedReason::StoreUnavailable),
        other => panic!("expected RunUnguarded, got {other:?}"),
    }
}

#[tokio::test]
async fn in_progress_retry_after_follows_the_policy() {
    let memory: Arc<dyn DedupStore> = store();
    let dedup = Dedup::new(Arc::clone(&memory)).lease_ttl(Duration::from_secs(600));
    let id = new_id();
    let lease = expect_run(begin(&dedup, &id).await);
    // Default: the lease's remaining time (at most 600 s, at least 1 s, rounded up).
    let secs = expect_in_progress(begin(&dedup, &id).await, 600);
    assert!(secs > 500, "remaining lease {secs}");
    let capped = dedup
        .clone()
        .in_progress_retry_after(InProgressRetryAfter::RemainingLease {
            max: Duration::from_secs(30),
        });
    assert_eq!(expect_in_progress(begin(&capped, &id).await, 30), 30);
    let fixed = dedup
        .clone()
        .in_progress_retry_after(InProgressRetryAfter::Fixed(Duration::from_secs(7)));
    assert_eq!(expect_in_progress(begin(&fixed, &id).await, 7), 7);
    lease.release().await.unwrap();
}

#[test]
fn debug_output_shows_no_token() {
    let dedup = Dedup::new(Arc::new(MemoryStore::with_capacity(10)));
    let text = format!("{dedup:?}");
    assert!(
        text.contains("lease_ttl") && text.contains("FailClosed"),
        "{text}"
    );
    let memory = MemoryStore::with_capacity(10);
    assert_eq!(
        format!("{memory:?}"),
        "MemoryStore { capacity: 10, len: 0 }"
    );
}

#[test]
fn receiver_carries_the_dedup() {
    use qstash_receiver::{Receiver, SigningKeys, Verifier};
    let verifier = Verifier::new(SigningKeys::new("sig_a", "sig_b").unwrap());
    let receiver = Receiver::new(verifier.clone());
    assert!(receiver.get_dedup().is_none());
    let dedup = Dedup::new(Arc::new(MemoryStore::with_capacity(7))).replay_guard(true);
    let receiver = Receiver::new(verifier).dedup(dedup.clone());
    let configured = receiver.clone().get_dedup().cloned().unwrap();
    assert!(Arc::ptr_eq(configured.store(), dedup.store()));
    assert!(format!("{configured:?}").contains("replay_guard: true"));
}
