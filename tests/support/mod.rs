//! Test harness of the dedup tests: a real redis-server, signed deliveries, and the scenarios
//! every store must pass (run by `dedup_memory.rs` and `dedup_redis.rs`).
#![allow(dead_code, unreachable_pub)]

pub mod redis_server;

use std::sync::Arc;
use std::time::Duration;

use qstash_receiver::dedup::{
    Begin, ClaimOutcome, DUPLICATE_HEADER, Dedup, DedupStore, GuardedClaim, LeaseOutcome,
    LeaseToken, StoreError, StoreFuture, duplicate_json_body,
};
use qstash_receiver::test_utils::{SignedDelivery, Signer};
use qstash_receiver::{Claims, Delivery, Rejection, SigningKeys, Verifier};

pub const KEY: &str = "sig_testCurrentKey0123456789ab";
pub const URL: &str = "https://receiver.test/jobs";
pub const BODY: &[u8] = br#"{"task":"mail"}"#;

/// A fresh, signed delivery of `message_id` (a new token, as on each QStash attempt).
pub fn signed(message_id: &str, retried: u32) -> SignedDelivery {
    Signer::new(KEY).delivery_with_id(URL, BODY, message_id, retried)
}

/// The delivery headers and the verified claims, as an adapter has them before `begin`.
pub fn verified(d: &SignedDelivery) -> (Delivery, Claims) {
    let verifier = Verifier::new(SigningKeys::new(KEY, "sig_testNextKey0123456789abcde").unwrap());
    let claims = verifier.verify(&d.signature, BODY, Some(URL)).unwrap();
    let delivery =
        Delivery::from_headers(d.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))).unwrap();
    (delivery, claims)
}

/// `signed` + `verified`.
pub fn attempt(message_id: &str, retried: u32) -> (Delivery, Claims) {
    verified(&signed(message_id, retried))
}

/// The same request (same token) with another `Upstash-Message-Id` (not signed).
pub fn with_message_id(d: &SignedDelivery, message_id: Option<&str>) -> SignedDelivery {
    let mut d = d.clone();
    d.headers.retain(|(n, _)| n != "upstash-message-id");
    if let Some(id) = message_id {
        d.headers.push(("upstash-message-id".into(), id.into()));
    }
    d
}

/// The store key of message `id` delivered with [`BODY`]: `msg:<id>:<body hash>`.
pub fn msg_key(id: &str) -> String {
    let (_, claims) = attempt(id, 0);
    format!("msg:{id}:{}", claims.body_hash().trim_end_matches('='))
}

/// A delivery of `message_id` with `body` (a new token), verified.
pub fn attempt_with_body(message_id: &str, body: &[u8]) -> (Delivery, Claims) {
    let d = Signer::new(KEY).delivery_with_id(URL, body, message_id, 0);
    let verifier = Verifier::new(SigningKeys::new(KEY, "sig_testNextKey0123456789abcde").unwrap());
    let claims = verifier.verify(&d.signature, body, Some(URL)).unwrap();
    let delivery =
        Delivery::from_headers(d.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))).unwrap();
    (delivery, claims)
}

/// A fresh message id.
pub fn new_id() -> String {
    format!("msg_{}", LeaseToken::generate().unwrap().as_str())
}

pub async fn begin(dedup: &Dedup, id: &str) -> Begin {
    let (delivery, claims) = attempt(id, 0);
    dedup.begin(&delivery, &claims).await
}

pub fn expect_run(begin: Begin) -> qstash_receiver::dedup::Lease {
    match begin {
        Begin::Run(lease) => lease,
        other => panic!("expected Run, got {other:?}"),
    }
}

pub fn expect_duplicate(begin: Begin, id: &str) {
    match begin {
        Begin::Duplicate { message_id } => {
            assert_eq!(message_id, id);
            let body: serde_json::Value =
                serde_json::from_str(&duplicate_json_body(&message_id)).unwrap();
            assert_eq!(body["duplicate"], true);
            assert_eq!(body["messageId"], id);
            assert_eq!(DUPLICATE_HEADER, "qstash-duplicate");
        }
        other => panic!("expected Duplicate, got {other:?}"),
    }
}

/// Expects a 409 `in_progress` with a Retry-After in `1..=max_secs`; returns the seconds.
pub fn expect_in_progress(begin: Begin, max_secs: u32) -> u32 {
    match begin {
        Begin::Refuse(r @ Rejection::InProgress { retry_after_secs }) => {
            assert_eq!((r.status(), r.code()), (409, "in_progress"));
            assert_eq!(
                r.headers(),
                vec![("retry-after", retry_after_secs.to_string())]
            );
            let body: serde_json::Value = serde_json::from_str(&r.json_body()).unwrap();
            assert_eq!(body["error"], "in_progress");
            assert!(
                (1..=max_secs).contains(&retry_after_secs),
                "retry-after {retry_after_secs} not in 1..={max_secs}"
            );
            retry_after_secs
        }
        other => panic!("expected InProgress, got {other:?}"),
    }
}

pub fn expect_store_unavailable(begin: Begin, retry_after: u32) {
    match begin {
        Begin::Refuse(r @ Rejection::StoreUnavailable { .. }) => {
            assert_eq!((r.status(), r.code()), (503, "store_unavailable"));
            assert_eq!(r.headers(), vec![("retry-after", retry_after.to_string())]);
            let body: serde_json::Value = serde_json::from_str(&r.json_body()).unwrap();
            assert_eq!(body["error"], "store_unavailable");
        }
        other => panic!("expected StoreUnavailable, got {other:?}"),
    }
}

/// Waits (bounded) until `id` can be claimed again: a background release has run.
pub async fn eventually_runs(dedup: &Dedup, id: &str) -> qstash_receiver::dedup::Lease {
    for _ in 0..500 {
        if let Begin::Run(lease) = begin(dedup, id).await {
            return lease;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} was never released");
}

/// A store that always fails, like a Redis that is down.
pub struct FailingStore;

impl DedupStore for FailingStore {
    fn claim<'a>(&'a self, _: &'a str, _: Duration) -> StoreFuture<'a, ClaimOutcome> {
        Box::pin(async { Err(StoreError::UnexpectedReply("down")) })
    }
    fn complete<'a>(
        &'a self,
        _: &'a str,
        _: &'a LeaseToken,
        _: Duration,
    ) -> StoreFuture<'a, LeaseOutcome> {
        Box::pin(async { Err(StoreError::UnexpectedReply("down")) })
    }
    fn release<'a>(&'a self, _: &'a str, _: &'a LeaseToken) -> StoreFuture<'a, LeaseOutcome> {
        Box::pin(async { Err(StoreError::UnexpectedReply("down")) })
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios every store passes.

/// claim → 2xx completes → a retry is a duplicate (the handler would not run).
pub async fn complete_then_duplicate(store: Arc<dyn DedupStore>) {
    let dedup = Dedup::new(store);
    let id = new_id();
    let lease = expect_run(begin(&dedup, &id).await);
    assert_eq!(lease.message_id(), id);
    assert_eq!(lease.finish(204).await.unwrap(), LeaseOutcome::Applied);
    let (delivery, claims) = attempt(&id, 1);
    expect_duplicate(dedup.begin(&delivery, &claims).await, &id);
    expect_duplicate(begin(&dedup, &id).await, &id);
    // Another id is independent.
    let other = new_id();
    expect_run(begin(&dedup, &other).await)
        .release()
        .await
        .unwrap();
}

/// claim → non-2xx releases → the retry runs; then it completes.
pub async fn release_then_runs_again(store: Arc<dyn DedupStore>) {
    let dedup = Dedup::new(store);
    let id = new_id();
    for status in [500, 409, 302, 199] {
        let lease = expect_run(begin(&dedup, &id).await);
        assert_eq!(lease.finish(status).await.unwrap(), LeaseOutcome::Applied);
    }
    let lease = expect_run(begin(&dedup, &id).await);
    assert_eq!(lease.release().await.unwrap(), LeaseOutcome::Applied);
    let lease = expect_run(begin(&dedup, &id).await);
    assert_eq!(lease.complete().await.unwrap(), LeaseOutcome::Applied);
    expect_duplicate(begin(&dedup, &id).await, &id);
}

/// 24 concurrent deliveries of one id, spread over `dedups` (one per "server"): exactly one
/// runs, the others get 409 with a Retry-After within the lease TTL; after completion all are
/// duplicates.
pub async fn concurrent_claims_one_winner(dedups: Vec<Dedup>) {
    let id = new_id();
    let mut tasks = Vec::new();
    for i in 0..24 {
        let dedup = dedups[i % dedups.len()].clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move { begin(&dedup, &id).await }));
    }
    let mut leases = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Begin::Run(lease) => leases.push(lease),
            other => {
                expect_in_progress(other, 7260);
                refused += 1;
            }
        }
    }
    assert_eq!((leases.len(), refused), (1, 23));
    let lease = leases.pop().unwrap();
    assert_eq!(lease.finish(200).await.unwrap(), LeaseOutcome::Applied);
    for dedup in &dedups {
        expect_duplicate(begin(dedup, &id).await, &id);
    }
}

/// A lease that expires is taken over; the late holder can neither complete nor release it.
pub async fn expired_lease_is_taken_over(store: Arc<dyn DedupStore>) {
    let short = Dedup::new(Arc::clone(&store)).lease_ttl(Duration::from_millis(150));
    let dedup = Dedup::new(store);
    let id = new_id();
    let late = expect_run(begin(&short, &id).await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let current = expect_run(begin(&dedup, &id).await);
    // The late holder's complete does nothing: the new holder keeps the lease.
    assert_eq!(late.complete().await.unwrap(), LeaseOutcome::NotHeld);
    expect_in_progress(begin(&dedup, &id).await, 7260);
    assert_eq!(current.complete().await.unwrap(), LeaseOutcome::Applied);
    expect_duplicate(begin(&dedup, &id).await, &id);

    // Release by a late holder.
    let id = new_id();
    let late = expect_run(begin(&short, &id).await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let current = expect_run(begin(&dedup, &id).await);
    assert_eq!(late.release().await.unwrap(), LeaseOutcome::NotHeld);
    expect_in_progress(begin(&dedup, &id).await, 7260);
    assert_eq!(current.finish(500).await.unwrap(), LeaseOutcome::Applied);
    expect_run(begin(&dedup, &id).await)
        .complete()
        .await
        .unwrap();
}

/// A lease expired with nobody else taking it cannot be completed either.
pub async fn expired_lease_cannot_complete(store: Arc<dyn DedupStore>) {
    let short = Dedup::new(store).lease_ttl(Duration::from_millis(150));
    let id = new_id();
    let lease = expect_run(begin(&short, &id).await);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(lease.finish(200).await.unwrap(), LeaseOutcome::NotHeld);
    expect_run(begin(&short, &id).await)
        .release()
        .await
        .unwrap();
}

/// A completed id is forgotten after the retention.
pub async fn retention_expires(store: Arc<dyn DedupStore>) {
    let dedup = Dedup::new(store).retention(Duration::from_millis(150));
    let id = new_id();
    expect_run(begin(&dedup, &id).await)
        .complete()
        .await
        .unwrap();
    expect_duplicate(begin(&dedup, &id).await, &id);
    tokio::time::sleep(Duration::from_millis(400)).await;
    expect_run(begin(&dedup, &id).await)
        .complete()
        .await
        .unwrap();
}

/// The replay guard (on by default) refuses the same token again, even under another message
/// id; explicitly off, it does not. Without a message id, refused before anything else.
pub async fn replay_guard(store: Arc<dyn DedupStore>) {
    let guarded = Dedup::new(Arc::clone(&store));
    let first = signed(&new_id(), 0);
    let (delivery, claims) = verified(&first);
    expect_run(guarded.begin(&delivery, &claims).await)
        .release()
        .await
        .unwrap();
    // The same request again (even though the message was released): a replay.
    for replay in [first.clone(), with_message_id(&first, Some(&new_id()))] {
        let (delivery, claims) = verified(&replay);
        match guarded.begin(&delivery, &claims).await {
            Begin::Refuse(r @ Rejection::Replayed) => {
                assert_eq!((r.status(), r.code()), (401, "token_replayed"));
                let body: serde_json::Value = serde_json::from_str(&r.json_body()).unwrap();
                assert_eq!(body["error"], "token_replayed");
            }
            other => panic!("expected Replayed, got {other:?}"),
        }
    }
    let (delivery, claims) = verified(&with_message_id(&first, None));
    match guarded.begin(&delivery, &claims).await {
        Begin::Refuse(r @ Rejection::MissingMessageId) => {
            assert_eq!((r.status(), r.code()), (400, "missing_message_id"));
        }
        other => panic!("expected MissingMessageId, got {other:?}"),
    }
    // QStash's retry of the same message has a new token: it runs.
    let (delivery, claims) = attempt(first.message_id.as_str(), 1);
    expect_run(guarded.begin(&delivery, &claims).await)
        .complete()
        .await
        .unwrap();

    // Explicitly without the guard, the same token under another id runs.
    let unguarded = Dedup::new(store).replay_guard(false);
    let second = signed(&new_id(), 0);
    let (delivery, claims) = verified(&second);
    expect_run(unguarded.begin(&delivery, &claims).await)
        .complete()
        .await
        .unwrap();
    let other_id = new_id();
    let (delivery, claims) = verified(&with_message_id(&second, Some(&other_id)));
    expect_run(unguarded.begin(&delivery, &claims).await)
        .complete()
        .await
        .unwrap();
}

/// A captured token replayed under the id of a message that has not arrived yet cannot use up
/// that id: the claim is bound to the signed body. Even with the replay guard off (so that the
/// replay runs), the genuine message runs when it arrives, and its retries are duplicates.
pub async fn replay_under_a_victims_id(store: Arc<dyn DedupStore>) {
    let dedup = Dedup::new(store).replay_guard(false);
    let captured = signed(&new_id(), 0);
    let victim = new_id();
    let (delivery, claims) = verified(&with_message_id(&captured, Some(&victim)));
    expect_run(dedup.begin(&delivery, &claims).await)
        .complete()
        .await
        .unwrap();
    // The genuine message (its own body) arrives: processed.
    let genuine = br#"{"task":"invoice"}"#;
    let (delivery, claims) = attempt_with_body(&victim, genuine);
    let lease = expect_run(dedup.begin(&delivery, &claims).await);
    assert_eq!(lease.message_id(), victim);
    lease.complete().await.unwrap();
    // QStash's retry (same id, same body, new token): a duplicate.
    let (delivery, claims) = attempt_with_body(&victim, genuine);
    expect_duplicate(dedup.begin(&delivery, &claims).await, &victim);
}

/// A lease dropped without settling (a panic, a dropped request future) is released in the
/// background: QStash's retry runs.
pub async fn dropped_lease_is_released(store: Arc<dyn DedupStore>) {
    let dedup = Dedup::new(store);

    // Plain drop.
    let id = new_id();
    let lease = expect_run(begin(&dedup, &id).await);
    expect_in_progress(begin(&dedup, &id).await, 7260);
    drop(lease);
    eventually_runs(&dedup, &id).await.complete().await.unwrap();

    // A handler that panics while holding the lease.
    let id = new_id();
    let d = dedup.clone();
    let task_id = id.clone();
    let panicked = tokio::spawn(async move {
        let _lease = expect_run(begin(&d, &task_id).await);
        panic!("handler panicked");
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());
    eventually_runs(&dedup, &id).await.complete().await.unwrap();

    // A request future dropped mid-handler (client gone, timeout).
    let id = new_id();
    let d = dedup.clone();
    let task_id = id.clone();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let handler = tokio::spawn(async move {
        let lease = expect_run(begin(&d, &task_id).await);
        let _ = started_tx.send(());
        std::future::pending::<()>().await;
        lease.finish(200).await
    });
    started_rx.await.unwrap();
    expect_in_progress(begin(&dedup, &id).await, 7260);
    handler.abort();
    assert!(handler.await.unwrap_err().is_cancelled());
    eventually_runs(&dedup, &id).await.complete().await.unwrap();
}

/// `claim_guarded`: a new guard key records it and claims; a guard key already recorded
/// answers `Replayed` and claims nothing; the guard key is recorded whatever the claim finds.
pub async fn guarded_claim(store: Arc<dyn DedupStore>) {
    let (ttl, lease) = (Duration::from_secs(60), Duration::from_secs(600));
    let (guard, a, b) = (
        format!("jti:{}", new_id()),
        msg_key(&new_id()),
        msg_key(&new_id()),
    );
    let Ok(GuardedClaim::Claimed(ClaimOutcome::Acquired(token))) =
        store.claim_guarded(&guard, ttl, &a, lease).await
    else {
        panic!("a new guard key and a new message key: acquired");
    };
    // The guard key is written, the message key claimed.
    assert!(!store.remember(&guard, ttl).await.unwrap());
    assert!(matches!(
        store.claim(&a, lease).await.unwrap(),
        ClaimOutcome::InProgress { .. }
    ));
    // The same guard key (a replayed token) under another message key: refused, nothing claimed.
    assert_eq!(
        store.claim_guarded(&guard, ttl, &b, lease).await.unwrap(),
        GuardedClaim::Replayed
    );
    let ClaimOutcome::Acquired(b_token) = store.claim(&b, lease).await.unwrap() else {
        panic!("{b} was not claimed by the replay");
    };
    store.release(&b, &b_token).await.unwrap();
    // A new guard key on a held, then a completed, message key: recorded; the claim says so.
    let second = format!("jti:{}", new_id());
    assert!(matches!(
        store.claim_guarded(&second, ttl, &a, lease).await.unwrap(),
        GuardedClaim::Claimed(ClaimOutcome::InProgress { .. })
    ));
    assert!(!store.remember(&second, ttl).await.unwrap());
    assert_eq!(
        store.complete(&a, &token, lease).await.unwrap(),
        LeaseOutcome::Applied
    );
    let third = format!("jti:{}", new_id());
    assert_eq!(
        store.claim_guarded(&third, ttl, &a, lease).await.unwrap(),
        GuardedClaim::Claimed(ClaimOutcome::Completed)
    );
    assert!(!store.remember(&third, ttl).await.unwrap());
}

/// No `Upstash-Message-Id`: refused with 400 `missing_message_id` (QStash always sends one),
/// touching nothing; never run unguarded.
pub async fn no_message_id_is_refused(store: Arc<dyn DedupStore>) {
    let dedup = Dedup::new(store);
    let d = with_message_id(&signed(&new_id(), 0), None);
    for _ in 0..2 {
        let (delivery, claims) = verified(&d);
        assert_eq!(delivery.message_id(), None);
        match dedup.begin(&delivery, &claims).await {
            Begin::Refuse(r @ Rejection::MissingMessageId) => {
                assert_eq!((r.status(), r.code()), (400, "missing_message_id"));
            }
            other => panic!("expected MissingMessageId, got {other:?}"),
        }
    }
}
