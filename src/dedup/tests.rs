//! Unit tests of [`Dedup`](super::Dedup) and [`Lease`](super::Lease) with stores that answer
//! at once or only through futures.

use std::sync::Arc;
use std::time::Duration;

use super::config::ceil_secs;
use super::*;
use crate::{Delivery, Rejection};

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
    fn release<'a>(&'a self, key: &'a str, token: &'a LeaseToken) -> StoreFuture<'a, LeaseOutcome> {
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
