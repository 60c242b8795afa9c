//! Deduplication with the Redis store, against a real redis-server started by each test on a
//! free loopback port (skipped with a loud message when redis-server is not installed, unless
//! QSTASH_TEST_REQUIRE_REDIS=1).
#![cfg(all(feature = "redis", feature = "test-utils"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use qstash_receiver::dedup::{
    Begin, Dedup, DedupStore, LeaseOutcome, OnStoreError, RedisStore, StoreError, UnguardedReason,
};
use support::redis_server::RedisServer;
use support::*;
use tokio::io::{AsyncBufReadExt, BufReader};

async fn store(server: &RedisServer) -> Arc<dyn DedupStore> {
    Arc::new(RedisStore::connect(&server.url()).await.unwrap())
}

fn raw(server: &RedisServer) -> redis::Connection {
    redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .unwrap()
}

#[tokio::test]
async fn completed_message_is_a_duplicate() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    complete_then_duplicate(store(&server).await).await;
}

#[tokio::test]
async fn released_message_runs_again() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    release_then_runs_again(store(&server).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_run_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    concurrent_claims_one_winner(vec![Dedup::new(store(&server).await)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_sharing_one_redis_run_a_message_once() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Two receivers (two "servers"), each with its own connection to the same Redis.
    let a = Dedup::new(store(&server).await);
    let b = Dedup::new(store(&server).await);
    concurrent_claims_one_winner(vec![a.clone(), b.clone()]).await;
    // A lease taken by one is seen by the other; a release by one lets the other run.
    let id = new_id();
    let lease = expect_run(begin(&a, &id).await);
    expect_in_progress(begin(&b, &id).await, 7260);
    lease.finish(503).await.unwrap();
    expect_run(begin(&b, &id).await).finish(200).await.unwrap();
    expect_duplicate(begin(&a, &id).await, &id);
}

#[tokio::test]
async fn expired_lease_taken_over_and_late_holder_powerless() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    expired_lease_is_taken_over(store(&server).await).await;
    expired_lease_cannot_complete(store(&server).await).await;
}

#[tokio::test]
async fn completed_ids_expire_after_retention() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    retention_expires(store(&server).await).await;
}

#[tokio::test]
async fn replay_under_a_victims_id_cannot_use_it_up() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    replay_under_a_victims_id(store(&server).await).await;
}

#[tokio::test]
async fn replay_guard_refuses_the_same_token() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    replay_guard(store(&server).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_lease_is_released_in_the_background() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    dropped_lease_is_released(store(&server).await).await;
}

#[tokio::test]
async fn delivery_without_message_id_is_refused() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    no_message_id_is_refused(store(&server).await).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut raw(&server))
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn keys_values_ttls_and_prefixes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let one = RedisStore::connect(&server.url())
        .await
        .unwrap()
        .key_prefix("app1:");
    let two = RedisStore::connect(&server.url())
        .await
        .unwrap()
        .key_prefix("app2:");
    let retention = Duration::from_secs(3600);
    let a = Dedup::new(Arc::new(one)).retention(retention);
    let b = Dedup::new(Arc::new(two)).lease_ttl(Duration::from_secs(120));
    let id = new_id();
    let lease = expect_run(begin(&a, &id).await);
    let mut conn = raw(&server);
    let leased: String = redis::cmd("GET")
        .arg(format!("app1:{}", msg_key(&id)))
        .query(&mut conn)
        .unwrap();
    assert!(
        leased.starts_with("lease:") && leased.len() == 6 + 32,
        "{leased}"
    );
    lease.complete().await.unwrap();
    let done: String = redis::cmd("GET")
        .arg(format!("app1:{}", msg_key(&id)))
        .query(&mut conn)
        .unwrap();
    assert_eq!(done, "done");
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("app1:{}", msg_key(&id)))
        .query(&mut conn)
        .unwrap();
    assert!(pttl > 0 && pttl <= 3_600_000, "{pttl}");
    // Another prefix is another namespace.
    let lease = expect_run(begin(&b, &id).await);
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("app2:{}", msg_key(&id)))
        .query(&mut conn)
        .unwrap();
    assert!(pttl > 0 && pttl <= 120_000, "{pttl}");
    lease.release().await.unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("app2:{}", msg_key(&id)))
        .query(&mut conn)
        .unwrap();
    assert!(!exists);
    // The default prefix.
    let c = Dedup::new(store(&server).await);
    expect_run(begin(&c, &id).await).complete().await.unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("qstash:{}", msg_key(&id)))
        .query(&mut conn)
        .unwrap();
    assert!(exists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_fails_closed_then_recovers_after_restart() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let shared = store(&server).await;
    let closed = Dedup::new(Arc::clone(&shared));
    let open = Dedup::new(Arc::clone(&shared)).on_store_error(OnStoreError::FailOpen);

    let held = expect_run(begin(&closed, &new_id()).await);
    server.kill();

    // Fail closed (default): 503 + Retry-After, the handler does not run.
    expect_store_unavailable(begin(&closed, &new_id()).await, 10);
    expect_store_unavailable(begin(&closed, &new_id()).await, 10);
    // Fail open: run without dedup.
    match begin(&open, &new_id()).await {
        Begin::RunUnguarded { reason } => assert_eq!(reason, UnguardedReason::StoreUnavailable),
        other => panic!("expected RunUnguarded, got {other:?}"),
    }
    // A lease held across the crash cannot be completed: reported, not hidden.
    let err = held.finish(200).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");

    // Same port again: the ConnectionManager reconnects by itself; claims succeed again (the
    // scripts are reloaded on first use).
    server.restart();
    let id = new_id();
    let mut lease = None;
    for _ in 0..100 {
        match begin(&closed, &id).await {
            Begin::Run(l) => {
                lease = Some(l);
                break;
            }
            other => expect_store_unavailable(other, 10),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease = lease.expect("no reconnection after restart");
    assert_eq!(lease.finish(200).await.unwrap(), LeaseOutcome::Applied);
    expect_duplicate(begin(&closed, &id).await, &id);
}

#[tokio::test]
async fn rediss_urls_use_tls_and_errors_hide_the_password() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // TLS against a plain-text server: the handshake fails cleanly (no crypto-provider panic).
    let url = format!(
        "rediss://default:s3cretPassw0rd@127.0.0.1:{}",
        server.port()
    );
    let err = RedisStore::connect(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    assert!(!err.to_string().contains("s3cretPassw0rd"), "{err}");
    assert!(!format!("{err:?}").contains("s3cretPassw0rd"));
    let err = RedisStore::connect("not a url").await.unwrap_err();
    assert!(matches!(err, StoreError::Backend(_)), "{err:?}");
    // Debug of a store shows its prefix only.
    let store = RedisStore::connect(&server.url()).await.unwrap();
    assert_eq!(
        format!("{store:?}"),
        r#"RedisStore { prefix: "qstash:", .. }"#
    );
}

/// Commands the store sent, as `MONITOR` saw them between two sentinels (commands run inside
/// Lua scripts excluded).
struct Monitor {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    conn: redis::Connection,
    n: u32,
}

impl Monitor {
    async fn start(server: &RedisServer) -> Self {
        let mut child = tokio::process::Command::new("redis-cli")
            .args(["-p", &server.port().to_string(), "monitor"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-cli (package redis-tools, installed with redis-server)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("OK"));
        let mut monitor = Self {
            child,
            lines,
            conn: raw(server),
            n: 0,
        };
        monitor.commands().await; // up to a first sentinel
        monitor
    }

    /// The client commands since the previous call.
    async fn commands(&mut self) -> Vec<String> {
        self.n += 1;
        let sentinel = format!("qstash-sentinel-{}", self.n);
        let _: String = redis::cmd("ECHO")
            .arg(&sentinel)
            .query(&mut self.conn)
            .unwrap();
        let mut seen = Vec::new();
        loop {
            let line = self
                .lines
                .next_line()
                .await
                .unwrap()
                .expect("monitor ended");
            if line.contains(&sentinel) {
                return seen;
            }
            if !line.contains(" lua]") && !line.contains("qstash-sentinel") {
                seen.push(line);
            }
        }
    }
}

#[tokio::test]
async fn a_new_delivery_costs_two_round_trips_with_the_guard_or_without() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dedup = Dedup::new(store(&server).await);
    let mut monitor = Monitor::start(&server).await;

    // New delivery: the replay guard and the claim in one script, then complete.
    let first = signed(&new_id(), 0);
    let id = first.message_id.clone();
    let (delivery, claims) = verified(&first);
    expect_run(dedup.begin(&delivery, &claims).await)
        .finish(200)
        .await
        .unwrap();
    let commands = monitor.commands().await;
    assert_eq!(commands.len(), 2, "{commands:#?}");
    assert!(
        commands.iter().all(|c| c.contains("\"EVALSHA\"")),
        "{commands:#?}"
    );
    let jti = claims.jwt_id().unwrap();
    assert!(
        commands[0].contains(&format!("\"qstash:jti:{jti}\""))
            && commands[0].contains(&format!("\"qstash:{}\"", msg_key(&id))),
        "{commands:#?}"
    );

    // Duplicate: one script.
    expect_duplicate(begin(&dedup, &id).await, &id);
    assert_eq!(monitor.commands().await.len(), 1);

    // The token replayed under another id: one script, refused, nothing claimed.
    let other = new_id();
    let (delivery, claims) = verified(&with_message_id(&first, Some(&other)));
    assert!(matches!(
        dedup.begin(&delivery, &claims).await,
        Begin::Refuse(qstash_receiver::Rejection::Replayed)
    ));
    assert_eq!(monitor.commands().await.len(), 1);
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("qstash:{}", msg_key(&other)))
        .query(&mut raw(&server))
        .unwrap();
    assert!(!exists, "the replay claimed {other}");
    monitor.commands().await; // the test's own EXISTS

    // Failed handler: guarded claim + release.
    let id = new_id();
    expect_run(begin(&dedup, &id).await)
        .finish(500)
        .await
        .unwrap();
    assert_eq!(monitor.commands().await.len(), 2);

    // Without the replay guard: claim + complete.
    let unguarded = dedup.clone().replay_guard(false);
    expect_run(begin(&unguarded, &new_id()).await)
        .finish(200)
        .await
        .unwrap();
    let commands = monitor.commands().await;
    assert_eq!(commands.len(), 2, "{commands:#?}");
    assert!(
        commands
            .iter()
            .all(|c| c.contains("\"EVALSHA\"") && !c.contains("qstash:jti:")),
        "{commands:#?}"
    );

    // Failing open: the guard's SET NX PX on its own (a failing guard lets the claim be tried),
    // then claim + complete.
    let open = dedup.clone().on_store_error(OnStoreError::FailOpen);
    expect_run(begin(&open, &new_id()).await)
        .finish(200)
        .await
        .unwrap();
    let commands = monitor.commands().await;
    assert_eq!(commands.len(), 3, "{commands:#?}");
    assert!(
        commands[0].contains("\"SET\"") && commands[0].contains("\"NX\""),
        "{commands:#?}"
    );
    drop(monitor.child.kill().await);
}

#[tokio::test]
async fn the_guard_and_the_claim_in_one_script() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    guarded_claim(store(&server).await).await;
}

/// Two stores (two instances) on one Redis: a token accepted by one is refused by the other,
/// and the guard's key lives until the token can no longer verify, the verifier's leeway
/// included.
#[tokio::test]
async fn the_replay_guard_is_shared_by_instances_and_lives_while_the_token_can_verify() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let leeway = Duration::from_secs(60);
    let a = Dedup::new(store(&server).await).verifier_leeway(leeway);
    let b = Dedup::new(store(&server).await).verifier_leeway(leeway);
    let first = signed(&new_id(), 0);
    let (delivery, claims) = verified(&first);
    expect_run(a.begin(&delivery, &claims).await)
        .complete()
        .await
        .unwrap();
    let (delivery, claims) = verified(&with_message_id(&first, Some(&new_id())));
    assert!(matches!(
        b.begin(&delivery, &claims).await,
        Begin::Refuse(qstash_receiver::Rejection::Replayed)
    ));
    let jti = claims.jwt_id().unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg(format!("qstash:jti:{jti}"))
        .query(&mut raw(&server))
        .unwrap();
    // The signer's tokens live 300 s: 300 + 60 s of leeway + 1 s of rounding, give or take
    // the second this test took.
    assert!((355_000..=361_000).contains(&pttl), "{pttl}");
}

#[tokio::test]
async fn flushed_scripts_are_loaded_again_on_first_use() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Without the guard: the claim is what is observed.
    let dedup = Dedup::new(store(&server).await).replay_guard(false);
    // As after a Redis restart without persistence: the server no longer knows the scripts.
    let flushed: String = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut raw(&server))
        .unwrap();
    assert_eq!(flushed, "OK");
    let mut monitor = Monitor::start(&server).await;

    let id = new_id();
    let lease = expect_run(begin(&dedup, &id).await);
    // The claim: EVALSHA answered NOSCRIPT, the script loaded, EVALSHA again (once).
    let commands = monitor.commands().await;
    let verbs: Vec<&str> = commands
        .iter()
        .map(|c| c.split('"').nth(1).unwrap_or_default())
        .collect();
    assert_eq!(verbs, ["EVALSHA", "SCRIPT", "EVALSHA"], "{commands:#?}");
    assert!(commands[1].contains("\"LOAD\""), "{commands:#?}");
    // The same command sent again (MONITOR lines differ only in their timestamp prefix).
    let args = |line: &str| line[line.find('"').unwrap()..].to_owned();
    assert_eq!(args(&commands[0]), args(&commands[2]));

    // The completion's script was flushed too: loaded on its first use, then the message is a
    // duplicate (the lease really was completed).
    assert_eq!(lease.finish(200).await.unwrap(), LeaseOutcome::Applied);
    let verbs: Vec<String> = monitor
        .commands()
        .await
        .iter()
        .map(|c| c.split('"').nth(1).unwrap_or_default().to_owned())
        .collect();
    assert_eq!(verbs, ["EVALSHA", "SCRIPT", "EVALSHA"]);
    expect_duplicate(begin(&dedup, &id).await, &id);
    assert_eq!(monitor.commands().await.len(), 1);
    drop(monitor.child.kill().await);
}

/// Pauses every write command (`EVALSHA` included) on the server for `ms`: Redis stalls, as
/// during a fork for `BGSAVE`, a slow script or a network hiccup.
fn pause_writes(server: &RedisServer, ms: u64) {
    let paused: String = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .arg("WRITE")
        .query(&mut raw(server))
        .unwrap();
    assert_eq!(paused, "OK");
}

/// The value of `id`'s key once Redis has run what was sent (polled: a release goes out in the
/// background), or the last one seen after 5 s.
async fn settled_value(server: &RedisServer, id: &str) -> Option<String> {
    let key = format!("qstash:{}", msg_key(id));
    let mut value = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        value = redis::cmd("GET").arg(&key).query(&mut raw(server)).unwrap();
        if value.is_none() {
            break;
        }
    }
    value
}

/// Begins a delivery of `id` and drops it after 150 ms, while Redis (paused) has not run its
/// claim: a client gone, a timeout around the service, a shutdown.
async fn drop_a_claim_in_flight(server: &RedisServer, dedup: &Dedup, id: &str) {
    pause_writes(server, 400);
    let dropped = tokio::time::timeout(Duration::from_millis(150), begin(dedup, id)).await;
    assert!(dropped.is_err(), "the claim was still in flight");
}

/// The next delivery of `id` runs, and once completed the one after is a duplicate.
async fn runs_then_duplicate(dedup: &Dedup, id: &str) {
    expect_run(begin(dedup, id).await)
        .finish(200)
        .await
        .unwrap();
    expect_duplicate(begin(dedup, id).await, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_answered_after_the_reply_timeout_does_not_hold_the_id() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    // Without the guard (its SET would be the command paused): the claim is lost.
    let dedup = Dedup::new(store(&server).await).replay_guard(false);
    let id = new_id();
    // Redis runs the claim only after the connection's 500 ms reply timeout: the delivery is
    // answered 503 (nothing ran, QStash retries), yet the script took the lease.
    pause_writes(&server, 900);
    expect_store_unavailable(begin(&dedup, &id).await, 10);
    // The lease the lost claim took is released, so QStash's retry runs.
    assert_eq!(settled_value(&server, &id).await, None);
    runs_then_duplicate(&dedup, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_dropped_in_flight_does_not_hold_the_id() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dedup = Dedup::new(store(&server).await).replay_guard(false);
    let id = new_id();
    drop_a_claim_in_flight(&server, &dedup, &id).await;
    assert_eq!(settled_value(&server, &id).await, None);
    runs_then_duplicate(&dedup, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_claims_release_leaves_another_holders_lease_alone() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let dedup = Dedup::new(store(&server).await).replay_guard(false);
    let id = new_id();
    let lease = expect_run(begin(&dedup, &id).await);
    // A second delivery's claim is lost while the first one holds the lease: its release (for
    // its own token) must not free the holder's lease.
    drop_a_claim_in_flight(&server, &dedup, &id).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let value: String = redis::cmd("GET")
        .arg(format!("qstash:{}", msg_key(&id)))
        .query(&mut raw(&server))
        .unwrap();
    assert!(value.starts_with("lease:"), "{value}");
    expect_in_progress(begin(&dedup, &id).await, 7260);
    assert_eq!(lease.finish(200).await.unwrap(), LeaseOutcome::Applied);
    expect_duplicate(begin(&dedup, &id).await, &id);
}
