//! Cost of deduplication: a claim + complete of a new message id in the `MemoryStore`, beside
//! baselines measured in the same run (a `Mutex<HashMap>` insert, SHA-256 of a 1 KiB body, as
//! verifying a delivery does); and, with feature `redis` and `redis-server` installed, claim +
//! complete against a real redis-server on loopback (two round trips). Compare the figures as
//! ratios: absolute times depend on the machine.
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
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use qstash_receiver::dedup::{ClaimOutcome, DedupStore, LeaseOutcome, MemoryStore};
use sha2::{Digest, Sha256};

#[cfg(feature = "redis")]
#[path = "../tests/support/redis_server.rs"]
#[allow(dead_code, unreachable_pub)]
mod redis_server;

const LEASE: Duration = Duration::from_secs(60);
const RETENTION: Duration = Duration::from_secs(3600);

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

fn baselines(c: &mut Criterion) {
    let mut group = c.benchmark_group("dedup");
    let map: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    let mut i = 0u64;
    group.bench_function("baseline_mutex_hashmap_insert", |b| {
        b.iter(|| {
            i += 1;
            let key = format!("msg:bench_{i}");
            let mut map = map.lock().unwrap();
            if map.len() >= 100_000 {
                map.clear();
            }
            map.insert(black_box(key), i);
        })
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
            let key = format!("msg:bench_{i}");
            let ClaimOutcome::Acquired(token) = ready(store.claim(&key, LEASE)).unwrap() else {
                panic!("not acquired");
            };
            let done = ready(store.complete(&key, &token, RETENTION)).unwrap();
            assert_eq!(done, LeaseOutcome::Applied);
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
    group.finish();
    drop(server);
}

#[cfg(not(feature = "redis"))]
fn redis(_: &mut Criterion) {}

criterion_group!(benches, baselines, redis);
criterion_main!(benches);
