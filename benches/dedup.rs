//! Cost of deduplication in the `MemoryStore`, through the store's own async methods (`claim`,
//! `complete`, `release`, `remember`, `claim_guarded`), beside baselines measured in the same run: a
//! `Mutex<HashMap>` insert (what a hand-kept set of message ids costs), a lease token
//! (`LeaseToken::generate`, 128 bits from the OS generator), and SHA-256 of a 1 KiB body (as
//! verifying a delivery does). With feature `test-utils`: a delivery through `Dedup` (`begin`,
//! `finish`). With feature `redis` and `redis-server` installed, against a real redis-server on
//! loopback: claim + complete (two round trips), a guarded delivery (guard and claim in one
//! script, then complete: two round trips) and the same as three (`remember`, `claim`,
//! `complete`).
//!
//! After criterion's report, each memory-store operation is measured *paired* with the
//! `Mutex<HashMap>` insert (alternating blocks, the order swapped every round, the median of the
//! per-round ratios) and the ratios are printed: absolute times depend on the machine and its
//! load. Nothing here asserts a timing.
//!
//! `cargo bench --bench dedup` (add `--features test-utils,redis` for the `Dedup` and Redis
//! figures)
#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::collections::HashMap;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::Criterion;
use qstash_receiver::dedup::{
    ClaimOutcome, DedupStore, GuardedClaim, LeaseOutcome, LeaseToken, MemoryStore,
};
use sha2::{Digest, Sha256};

#[cfg(feature = "redis")]
#[path = "../tests/support/redis_server.rs"]
#[allow(dead_code, unreachable_pub)]
mod redis_server;

const LEASE: Duration = Duration::from_secs(60);
const RETENTION: Duration = Duration::from_secs(3600);
const GUARD_TTL: Duration = Duration::from_millis(1);

/// The memory store's futures are ready at once: poll them without a runtime.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("memory store future pending"),
    }
}

/// One insert of a new key into a hand-kept `Mutex<HashMap>` (cleared every 100 000 keys).
fn hashmap_insert(map: &Mutex<HashMap<String, u64>>, i: u64) {
    let key = format!("msg:bench_{i}");
    let mut map = map.lock().unwrap();
    if map.len() >= 100_000 {
        map.clear();
    }
    map.insert(black_box(key), i);
}

/// Claims a new key and completes it: a delivery run once, to success.
fn claim_complete(store: &MemoryStore, i: u64) {
    let key = format!("msg:bench_{i}");
    let ClaimOutcome::Acquired(token) = ready(store.claim(&key, LEASE)).unwrap() else {
        panic!("not acquired");
    };
    let done = ready(store.complete(&key, &token, RETENTION)).unwrap();
    assert_eq!(done, LeaseOutcome::Applied);
}

/// What one new delivery costs the store with the replay guard on (the default): its token's
/// `jti` recorded and its message key claimed in one call, then completed. Keys as long as
/// QStash's (`jti:jwt_` + 20 characters; `msg:msg_` + 26, `:` and a 43-character body hash).
fn guarded_claim_complete(store: &MemoryStore, i: u64) {
    let guard = format!("jti:jwt_{i:020}");
    let key = format!("msg:msg_{i:026}:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU");
    let Ok(GuardedClaim::Claimed(ClaimOutcome::Acquired(token))) =
        ready(store.claim_guarded(&guard, GUARD_TTL, &key, LEASE))
    else {
        panic!("not acquired");
    };
    let done = ready(store.complete(&key, &token, RETENTION)).unwrap();
    assert_eq!(done, LeaseOutcome::Applied);
}

/// [`guarded_claim_complete`] on a store that starts empty every 300 deliveries, as the layer
/// bench's routes do.
fn guarded_claim_complete_fresh(store: &std::cell::RefCell<MemoryStore>, i: u64) {
    if i % 300 == 0 {
        *store.borrow_mut() = MemoryStore::new();
    }
    guarded_claim_complete(&store.borrow(), i);
}

/// Claims a new key and releases it: a delivery whose handler failed.
fn claim_release(store: &MemoryStore, i: u64) {
    let key = format!("rel:bench_{i}");
    let ClaimOutcome::Acquired(token) = ready(store.claim(&key, LEASE)).unwrap() else {
        panic!("not acquired");
    };
    let done = ready(store.release(&key, &token)).unwrap();
    assert_eq!(done, LeaseOutcome::Applied);
}

/// Remembers a new token id (the replay guard), with a short TTL so that the entries expire
/// and the store never fills.
fn remember(store: &MemoryStore, i: u64) {
    let key = format!("jti:bench_{i}");
    assert!(ready(store.remember(&key, GUARD_TTL)).unwrap());
}

fn baselines(c: &mut Criterion) {
    let mut group = c.benchmark_group("dedup");
    let map: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    let mut i = 0u64;
    group.bench_function("baseline_mutex_hashmap_insert", |b| {
        b.iter(|| {
            i += 1;
            hashmap_insert(&map, i);
        })
    });
    group.bench_function("baseline_lease_token", |b| {
        b.iter(|| LeaseToken::generate().unwrap())
    });
    let body = vec![0x5au8; 1024];
    group.bench_function("baseline_sha256_1KiB", |b| {
        b.iter(|| Sha256::digest(black_box(&body)))
    });

    let store = MemoryStore::new();
    let mut i = 0u64;
    group.bench_function("memory_claim_complete", |b| {
        b.iter(|| {
            i += 1;
            claim_complete(&store, i);
        })
    });
    let mut i = 0u64;
    group.bench_function("memory_guarded_claim_complete", |b| {
        b.iter(|| {
            i += 1;
            guarded_claim_complete(&store, i);
        })
    });
    let fresh = std::cell::RefCell::new(MemoryStore::new());
    let mut i = 0u64;
    group.bench_function("memory_guarded_claim_complete_fresh", |b| {
        b.iter(|| {
            i += 1;
            guarded_claim_complete_fresh(&fresh, i);
        })
    });
    let mut i = 0u64;
    group.bench_function("memory_claim_release", |b| {
        b.iter(|| {
            i += 1;
            claim_release(&store, i);
        })
    });
    let mut i = 0u64;
    group.bench_function("memory_remember", |b| {
        b.iter(|| {
            i += 1;
            remember(&store, i);
        })
    });
    let mut i = 0u64;
    group.bench_function("memory_claim_duplicate", |b| {
        b.iter(|| {
            i += 1;
            let key = format!("msg:bench_{}", i % 1000 + 1);
            black_box(ready(store.claim(&key, LEASE)).unwrap())
        })
    });
    group.finish();
}

/// Each memory-store operation against the `Mutex<HashMap>` insert, paired: blocks of the two
/// alternate (41 rounds, the order swapped every round); the median per-round ratio is printed.
fn paired_ratios() {
    const ROUNDS: usize = 41;
    const BLOCK: u64 = 2000;
    let map: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    let store = MemoryStore::new();
    let mut next = 0u64;
    let mut time = |op: &dyn Fn(u64)| {
        let start = Instant::now();
        for _ in 0..BLOCK {
            next += 1;
            op(next);
        }
        start.elapsed().as_secs_f64()
    };
    let baseline = |i| hashmap_insert(&map, i);
    let fresh = std::cell::RefCell::new(MemoryStore::new());
    let ops: [(&str, &dyn Fn(u64)); 6] = [
        ("memory claim + complete", &|i| claim_complete(&store, i)),
        ("memory guarded claim + complete (a delivery)", &|i| {
            guarded_claim_complete(&store, i)
        }),
        ("the same, a new store every 300", &|i| {
            guarded_claim_complete_fresh(&fresh, i)
        }),
        ("memory claim + release", &|i| claim_release(&store, i)),
        ("memory remember (replay guard)", &|i| remember(&store, i)),
        ("LeaseToken::generate", &|_| {
            black_box(LeaseToken::generate().unwrap());
        }),
    ];
    println!(
        "\ndedup: paired ratios to a Mutex<HashMap> insert (median of {ROUNDS} alternating rounds of {BLOCK})\n"
    );
    println!("| operation | ratio | per operation (median round) |");
    println!("|---|---:|---:|");
    for (name, op) in ops {
        let mut rounds: Vec<(f64, f64)> = (0..ROUNDS)
            .map(|round| {
                let (a, b) = if round % 2 == 0 {
                    let a = time(op);
                    (a, time(&baseline))
                } else {
                    let b = time(&baseline);
                    (time(op), b)
                };
                (a / b, a)
            })
            .collect();
        rounds.sort_by(|x, y| x.0.total_cmp(&y.0));
        let (ratio, a) = rounds[ROUNDS / 2];
        let per_op = Duration::from_secs_f64(a / BLOCK as f64);
        println!("| {name} | {ratio:.2}x | {per_op:?} |");
    }
}

/// A delivery through `Dedup` (replay guard on): `begin`, then `finish(200)`, on a store new
/// every 300 deliveries (as the layer bench's routes have), deliveries signed and verified
/// beforehand. With feature `test-utils` (it signs them).
#[cfg(feature = "test-utils")]
fn through_dedup(c: &mut Criterion) {
    use qstash_receiver::dedup::{Begin, Dedup};
    use qstash_receiver::test_utils::Signer;
    use qstash_receiver::{Delivery, SigningKeys, Verifier};
    use std::sync::Arc;
    const URL: &str = "https://bench.example/jobs";
    let verifier = Verifier::new(SigningKeys::new("sig_benchCurrent", "sig_benchNext").unwrap());
    let signer = Signer::new("sig_benchCurrent");
    let deliveries: Vec<_> = (0..300)
        .map(|_| {
            let d = signer.delivery(URL, b"{}");
            let claims = verifier.verify(&d.signature, b"{}", Some(URL)).unwrap();
            let headers = d.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
            (Delivery::from_headers(headers).unwrap(), claims)
        })
        .collect();
    let mut group = c.benchmark_group("dedup");
    group.bench_function("dedup_begin_finish_fresh", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(300);
                left -= n;
                let dedup = Dedup::new(Arc::new(MemoryStore::new()));
                let start = Instant::now();
                for (delivery, claims) in &deliveries[..n as usize] {
                    let Begin::Run(lease) = ready(dedup.begin(delivery, claims)) else {
                        panic!("not run");
                    };
                    black_box(ready(lease.finish(200)).unwrap());
                }
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

#[cfg(not(feature = "test-utils"))]
fn through_dedup(_: &mut Criterion) {}

#[cfg(feature = "redis")]
fn redis(c: &mut Criterion) {
    use qstash_receiver::dedup::RedisStore;
    let Some(server) = redis_server::RedisServer::start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = rt
        .block_on(RedisStore::connect(&server.url()))
        .unwrap()
        .key_prefix("bench:");
    let mut group = c.benchmark_group("dedup");
    let mut i = 0u64;
    group.bench_function("redis_loopback_claim_complete", |b| {
        b.iter(|| {
            i += 1;
            let key = format!("msg:bench_{i}");
            rt.block_on(async {
                let ClaimOutcome::Acquired(token) = store.claim(&key, LEASE).await.unwrap() else {
                    panic!("not acquired");
                };
                store.complete(&key, &token, RETENTION).await.unwrap()
            })
        })
    });
    // A delivery with the replay guard (the default): guard and claim in one script, then
    // complete (two round trips), beside the same as three (the guard's own `SET NX PX`).
    let mut i = 0u64;
    group.bench_function("redis_loopback_guarded_claim_complete", |b| {
        b.iter(|| {
            i += 1;
            let (guard, key) = (format!("jti:bench_{i}"), format!("msg:guarded_{i}"));
            rt.block_on(async {
                let Ok(GuardedClaim::Claimed(ClaimOutcome::Acquired(token))) =
                    store.claim_guarded(&guard, LEASE, &key, LEASE).await
                else {
                    panic!("not acquired");
                };
                store.complete(&key, &token, RETENTION).await.unwrap()
            })
        })
    });
    let mut i = 0u64;
    group.bench_function("redis_loopback_remember_claim_complete", |b| {
        b.iter(|| {
            i += 1;
            let (guard, key) = (format!("jti:three_{i}"), format!("msg:three_{i}"));
            rt.block_on(async {
                assert!(store.remember(&guard, LEASE).await.unwrap());
                let ClaimOutcome::Acquired(token) = store.claim(&key, LEASE).await.unwrap() else {
                    panic!("not acquired");
                };
                store.complete(&key, &token, RETENTION).await.unwrap()
            })
        })
    });
    group.finish();
    drop(server);
}

#[cfg(not(feature = "redis"))]
fn redis(_: &mut Criterion) {}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    baselines(&mut criterion);
    through_dedup(&mut criterion);
    redis(&mut criterion);
    criterion.final_summary();
    let listing_or_testing = std::env::args().any(|a| a == "--test" || a == "--list");
    if !listing_or_testing {
        paired_ratios();
    }
}
