//! Unit tests of [`Dedup`](super::Dedup) and [`Lease`](super::Lease) with stores that answer
//! at once or only through futures.

use std::sync::Arc;
use std::time::Duration;

use std::time::{SystemTime, UNIX_EPOCH};

use super::config::{claim_key, retry_after_secs};
use super::*;
use crate::test_utils::Signer;
use crate::{Claims, Delivery, Rejection};

#[test]
fn retry_after_rounds_up_and_clamps() {
    assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
    assert_eq!(retry_after_secs(Duration::ZERO), 1);
    assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    assert_eq!(retry_after_secs(Duration::from_secs(u64::MAX)), 86_400);
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
    let token = LeaseToken::generate().unwrap();
    assert_eq!(token.as_str().len(), 32);
    assert!(
        token
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "lower-case hex"
    );
    assert_ne!(token, LeaseToken::generate().unwrap());
    assert_eq!(format!("{token:?}"), "LeaseToken(..)");
}

#[test]
fn lease_tokens_drawn_in_batches_are_each_handed_out_once() {
    // Several batches of the per-thread pool, on two threads: no token twice.
    let draw = || {
        (0..200)
            .map(|_| LeaseToken::generate().unwrap())
            .collect::<Vec<_>>()
    };
    let other = std::thread::spawn(draw);
    let mut all: Vec<LeaseToken> = draw();
    all.extend(other.join().unwrap());
    let distinct: std::collections::HashSet<&str> = all.iter().map(LeaseToken::as_str).collect();
    assert_eq!(distinct.len(), 400);
    assert!(
        all.iter()
            .all(|t| t.as_str().len() == 32 && t.as_str() != "0".repeat(32))
    );
}

const KEY: &str = "sig_a";
const URL: &str = "https://x.example/jobs";

/// A delivery of message `id` with a new token (as on each QStash attempt), verified.
fn attempt(id: &str) -> (Delivery, Claims) {
    let signed = Signer::new(KEY).delivery_with_id(URL, b"{}", id, 0);
    verified(&signed)
}

fn verified(signed: &crate::test_utils::SignedDelivery) -> (Delivery, Claims) {
    let keys = crate::SigningKeys::new(KEY, "sig_b").unwrap();
    let claims = crate::Verifier::new(keys)
        .verify(&signed.signature, b"{}", Some(URL))
        .unwrap();
    let delivery = Delivery::from_headers(
        signed
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    )
    .unwrap();
    (delivery, claims)
}

/// `future` polled once, without a runtime: its output when it is ready at once (a
/// [`MemoryStore`]'s futures are).
fn now<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// [`Dedup::begin`] on a new attempt of `id`, polled once: `None` when it has to wait.
fn begin_now(dedup: &Dedup, id: &str) -> Option<Begin> {
    let (delivery, claims) = attempt(id);
    now(dedup.begin(&delivery, &claims))
}

/// Pending once, then ready: a store that waits, as a networked one does.
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// A memory store whose claims answer at once or not, whose completions wait as a networked
/// store's do, and whose first `failing_releases` releases fail (a passing outage).
struct TestStore {
    inner: MemoryStore,
    claims_at_once: bool,
    failing_releases: std::sync::atomic::AtomicU32,
}

impl TestStore {
    /// Every future waits; nothing fails.
    fn async_only() -> Self {
        Self {
            inner: MemoryStore::new(),
            claims_at_once: false,
            failing_releases: 0.into(),
        }
    }
}

impl DedupStore for TestStore {
    fn claim<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, ClaimOutcome> {
        let at_once = self.claims_at_once;
        Box::pin(async move {
            if !at_once {
                yield_once().await;
            }
            self.inner.claim(key, ttl).await
        })
    }
    fn remember<'a>(&'a self, key: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        let at_once = self.claims_at_once;
        Box::pin(async move {
            if !at_once {
                yield_once().await;
            }
            self.inner.remember(key, ttl).await
        })
    }
    fn complete<'a>(
        &'a self,
        key: &'a str,
        token: &'a LeaseToken,
        retention: Duration,
    ) -> StoreFuture<'a, LeaseOutcome> {
        Box::pin(async move {
            yield_once().await;
            self.inner.complete(key, token, retention).await
        })
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
        } else if self.claims_at_once {
            self.inner.release(key, token)
        } else {
            Box::pin(async move {
                yield_once().await;
                self.inner.release(key, token).await
            })
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
    let Some(Begin::Run(lease)) = begin_now(&dedup, "m1") else {
        panic!("a new id runs");
    };
    assert!(matches!(
        lease.release().await,
        Err(StoreError::UnexpectedReply("outage"))
    ));
    // Still held for now: QStash's retry meanwhile is refused.
    assert!(matches!(
        begin_now(&dedup, "m1"),
        Some(Begin::Refuse(Rejection::InProgress { .. }))
    ));
    tokio::time::sleep(RELEASE_RETRY_DELAY + Duration::from_millis(300)).await;
    // Released by the retry: the next delivery runs.
    assert!(matches!(begin_now(&dedup, "m1"), Some(Begin::Run(_))));
}

#[test]
fn a_lease_dropped_outside_a_runtime_is_released_by_a_store_that_answers_at_once() {
    // No tokio runtime here (as when one is shutting down): no task can be spawned.
    let dedup = Dedup::new(Arc::new(MemoryStore::new()));
    let Some(Begin::Run(lease)) = begin_now(&dedup, "m1") else {
        panic!("a new id runs");
    };
    drop(lease);
    // Released at once: the retry runs (it would wait out the lease TTL otherwise).
    assert!(matches!(begin_now(&dedup, "m1"), Some(Begin::Run(_))));
}

#[test]
fn a_store_that_answers_at_once_is_used_without_waiting() {
    let dedup = Dedup::new(Arc::new(MemoryStore::new()));
    let Some(Begin::Run(lease)) = begin_now(&dedup, "m1") else {
        panic!("a new id runs");
    };
    assert_eq!(lease.message_id(), "m1");
    // Held: a second delivery meanwhile is refused (409), without waiting either.
    assert!(matches!(
        begin_now(&dedup, "m1"),
        Some(Begin::Refuse(Rejection::InProgress { .. }))
    ));
    assert!(matches!(
        now(lease.finish(200)),
        Some(Ok(LeaseOutcome::Applied))
    ));
    assert!(matches!(
        begin_now(&dedup, "m1"),
        Some(Begin::Duplicate { message_id }) if message_id == "m1"
    ));
    // A failure releases: the retry runs.
    let Some(Begin::Run(lease)) = begin_now(&dedup, "m2") else {
        panic!("a new id runs");
    };
    assert!(matches!(
        now(lease.finish(500)),
        Some(Ok(LeaseOutcome::Applied))
    ));
    assert!(matches!(begin_now(&dedup, "m2"), Some(Begin::Run(_))));
    // No message id: refused (400), never run unguarded.
    let (_, claims) = attempt("m3");
    assert!(matches!(
        now(dedup.begin(&Delivery::default(), &claims)),
        Some(Begin::Refuse(Rejection::MissingMessageId))
    ));
}

#[test]
fn otherwise_the_caller_awaits() {
    // A store that waits: `begin` and `finish` are awaited.
    let store = Arc::new(TestStore::async_only());
    let dedup = Dedup::new(store);
    assert!(begin_now(&dedup, "m1").is_none(), "this store waits");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (delivery, claims) = attempt("m1");
    let Begin::Run(lease) = rt.block_on(dedup.begin(&delivery, &claims)) else {
        panic!("a new id runs");
    };
    assert!(matches!(
        rt.block_on(lease.finish(200)),
        Ok(LeaseOutcome::Applied)
    ));
    let (delivery, claims) = attempt("m1");
    assert!(matches!(
        rt.block_on(dedup.begin(&delivery, &claims)),
        Begin::Duplicate { .. }
    ));
}

#[test]
fn the_replay_guard_is_on_by_default_and_answers_at_once_in_memory() {
    let dedup = Dedup::new(Arc::new(MemoryStore::new()));
    let signed = Signer::new(KEY).delivery_with_id(URL, b"{}", "m1", 0);
    let (delivery, claims) = verified(&signed);
    let at = SystemTime::now();
    let Some(Begin::Run(lease)) = now(dedup.begin_at(&delivery, &claims, at)) else {
        panic!("a new id runs");
    };
    assert!(matches!(now(lease.finish(500)), Some(Ok(_))));
    // The same token again, even once its message id is free: refused.
    assert!(matches!(
        now(dedup.begin_at(&delivery, &claims, at)),
        Some(Begin::Refuse(Rejection::Replayed))
    ));
    // Explicitly off: the same token runs again.
    let off = Dedup::new(Arc::new(MemoryStore::new())).replay_guard(false);
    for _ in 0..2 {
        let Some(Begin::Run(lease)) = now(off.begin_at(&delivery, &claims, at)) else {
            panic!("no guard: runs");
        };
        assert!(matches!(now(lease.finish(500)), Some(Ok(_))));
    }
}

#[test]
fn the_claim_key_binds_the_message_id_to_the_signed_body() {
    let padded = "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=";
    assert_eq!(
        claim_key("msg_1", padded),
        "msg:msg_1:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
    );
    // With or without padding: the same key.
    assert_eq!(
        claim_key("msg_1", padded),
        claim_key("msg_1", padded.trim_end_matches('='))
    );
    assert_ne!(claim_key("msg_1", padded), claim_key("msg_1", "other"));
    // The message id is recovered from the key (for `Lease::message_id` and logs), even with `:`.
    let dedup = Dedup::new(Arc::new(MemoryStore::new()));
    let Some(Begin::Run(lease)) = begin_now(&dedup, "a:b") else {
        panic!("a new id runs");
    };
    assert_eq!(lease.message_id(), "a:b");
    assert_eq!(
        format!("{lease:?}"),
        r#"Lease { message_id: "a:b", completing: false, .. }"#
    );
}

#[test]
fn the_guard_remembers_a_token_until_it_can_no_longer_verify_leeway_included() {
    let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
    let exp = 1_000_i64;
    let plain = Dedup::new(Arc::new(MemoryStore::new()));
    // exp - now, plus a second for the rounding of `now`.
    assert_eq!(
        plain.replay_guard_ttl(exp, at(900)),
        Duration::from_secs(101)
    );
    let lenient = plain.clone().verifier_leeway(Duration::from_secs(60));
    assert_eq!(
        lenient.replay_guard_ttl(exp, at(900)),
        Duration::from_secs(161)
    );
    // Accepted at exp + 59 (within the leeway): still remembered past exp + 60.
    assert_eq!(
        lenient.replay_guard_ttl(exp, at(1059)),
        Duration::from_secs(2)
    );
    // Past it (cannot verify any more): the minimum.
    assert_eq!(
        lenient.replay_guard_ttl(exp, at(5000)),
        Duration::from_secs(1)
    );
    // Extreme values saturate.
    assert_eq!(
        lenient.replay_guard_ttl(i64::MAX, at(0)),
        crate::dedup::MAX_TTL
    );
    assert_eq!(
        lenient.replay_guard_ttl(i64::MIN, at(0)),
        Duration::from_secs(1)
    );
    let huge = plain.clone().verifier_leeway(Duration::MAX);
    assert_eq!(huge.replay_guard_ttl(exp, at(900)), crate::dedup::MAX_TTL);
    // The larger leeway wins.
    assert_eq!(
        lenient
            .verifier_leeway(Duration::from_secs(5))
            .replay_guard_ttl(exp, at(900)),
        Duration::from_secs(161)
    );
}

#[test]
fn a_receiver_gives_its_verifier_leeway_to_its_dedup() {
    let keys = crate::SigningKeys::new(KEY, "sig_b").unwrap();
    let verifier = crate::Verifier::new(keys).with_leeway(Duration::from_secs(30));
    let receiver = crate::Receiver::new(verifier).dedup(Dedup::new(Arc::new(MemoryStore::new())));
    let dedup = receiver.get_dedup().unwrap();
    assert_eq!(
        dedup.replay_guard_ttl(1_000, UNIX_EPOCH + Duration::from_secs(900)),
        Duration::from_secs(131)
    );
}

#[test]
fn retry_after_never_overflows() {
    assert_eq!(retry_after_secs(Duration::MAX), 86_400);
    assert_eq!(
        InProgressRetryAfter::Fixed(Duration::MAX).seconds(Duration::ZERO),
        86_400
    );
    assert_eq!(
        InProgressRetryAfter::RemainingLease { max: Duration::MAX }.seconds(Duration::MAX),
        86_400
    );
}

#[cfg(any(feature = "tower", feature = "actix-web", feature = "redis"))]
#[tokio::test]
async fn a_completion_dropped_midway_is_written_in_the_background() {
    let dedup = Dedup::new(Arc::new(TestStore::async_only()));
    let (delivery, claims) = attempt("m1");
    let Begin::Run(lease) = dedup.begin(&delivery, &claims).await else {
        panic!("a new id runs");
    };
    // Committed by `finish(2xx)`, dropped before its first poll.
    drop(lease.finish(204));
    let (delivery, claims) = attempt("m1");
    let mut begin = dedup.begin(&delivery, &claims).await;
    for _ in 0..100 {
        if !matches!(begin, Begin::Refuse(Rejection::InProgress { .. })) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (delivery, claims) = attempt("m1");
        begin = dedup.begin(&delivery, &claims).await;
    }
    assert!(matches!(begin, Begin::Duplicate { .. }), "{begin:?}");
    // A lease whose `finish(2xx)` had to wait, then dropped midway: completed too.
    let (delivery, claims) = attempt("m2");
    let Begin::Run(lease) = dedup.begin(&delivery, &claims).await else {
        panic!("a new id runs");
    };
    let mut finish = Box::pin(lease.finish(200));
    assert!(now(finish.as_mut()).is_none(), "this store waits");
    drop(finish);
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (delivery, claims) = attempt("m2");
    assert!(matches!(
        dedup.begin(&delivery, &claims).await,
        Begin::Duplicate { .. }
    ));
}

#[test]
fn a_completion_dropped_outside_a_runtime_completes_in_a_store_that_answers_at_once() {
    let dedup = Dedup::new(Arc::new(MemoryStore::new()));
    let Some(Begin::Run(lease)) = begin_now(&dedup, "m1") else {
        panic!("a new id runs");
    };
    drop(lease.complete());
    assert!(matches!(
        begin_now(&dedup, "m1"),
        Some(Begin::Duplicate { .. })
    ));
}
