//! `Verifier::verify_at` against its floor, and against `jsonwebtoken`, at 0 B, 1 KiB, 64 KiB
//! and 1 MiB bodies.
//!
//! - `crate`: [`Verifier::verify_at`], token signed with the current key (one MAC).
//! - `crate_next_key`: the same, token signed with the next key (two MACs: current, then next).
//! - `floor`: the work no verifier can skip, with the same primitives: SHA-256 of the body and one
//!   HMAC-SHA256 of the token's signing input, keyed from scratch as a naive implementation would.
//! - `floor_two_macs`: the floor of the next-key path (SHA-256 + two fresh HMACs).
//! - `jsonwebtoken`: `jsonwebtoken` 12 (`rust_crypto`) configured as well as it allows: HS256
//!   pinned, the decoding key built once, audience check off, `exp`/`sub`/`iss` required and
//!   checked, `nbf` unchecked (it cannot parse QStash's negative `nbf`), the body hash compared by
//!   hand in constant time.
//!
//! Run: `cargo bench --bench verify --features test-utils`. After criterion's own report, a
//! table of medians and ratios (read back from `target/criterion/verify/*/*/new/estimates.json`)
//! is printed; `python3 perf/scripts/verify_chart.py` draws `docs/verify.svg` from the same files.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{BenchmarkId, Criterion, Throughput};
use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use qstash_receiver::test_utils::Signer;
use qstash_receiver::{MatchedKey, SigningKeys, Verifier};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

const CURRENT: &str = "sig_4Xq9VJmZ2cP7tLw8RbN3kYfH6dGs";
const NEXT: &str = "sig_8TnE5uWq1zA6mKc3XvJ9pLr2hDyB";
const URL: &str = "https://example.com/api/qstash";
const SIZES: [(usize, &str); 4] = [
    (0, "0 B"),
    (1024, "1 KiB"),
    (64 * 1024, "64 KiB"),
    (1024 * 1024, "1 MiB"),
];
const GROUP: &str = "verify";
const FUNCTIONS: [&str; 5] = [
    "crate",
    "floor",
    "crate_next_key",
    "floor_two_macs",
    "jsonwebtoken",
];

fn body_of(len: usize) -> Vec<u8> {
    // Binary, not compressible, deterministic.
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// The naive floor: SHA-256 of the body, and `macs` HMACs of the signing input keyed from scratch.
fn floor(token: &str, body: &[u8], keys: &[&str]) -> bool {
    let digest = Sha256::digest(body);
    let signing_input = &token.as_bytes()[..token.rfind('.').unwrap()];
    let mut ok = false;
    for key in keys {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(signing_input);
        ok |= mac.finalize().into_bytes()[0] == digest[0];
    }
    ok
}

#[derive(serde::Deserialize)]
struct JwtClaims {
    body: String,
}

/// `jsonwebtoken` as well as it allows, then the body hash by hand; the next key on failure.
fn with_jsonwebtoken(
    token: &str,
    body: &[u8],
    keys: &[DecodingKey; 2],
    validation: &Validation,
) -> Option<MatchedKey> {
    for (key, which) in keys.iter().zip([MatchedKey::Current, MatchedKey::Next]) {
        let Ok(data) = jsonwebtoken::decode::<JwtClaims>(token, key, validation) else {
            continue;
        };
        let ours = URL_SAFE_NO_PAD.encode(Sha256::digest(body));
        let theirs = data.claims.body.trim_end_matches('=');
        return bool::from(ours.as_bytes().ct_eq(theirs.as_bytes())).then_some(which);
    }
    None
}

fn bench(c: &mut Criterion) {
    // jsonwebtoken reads the system clock: sign at the real time, with room for a long run.
    let now = SystemTime::now();
    let current = Signer::new(CURRENT)
        .issued_at(now)
        .lifetime(Duration::from_secs(3600));
    let next = Signer::new(NEXT)
        .issued_at(now)
        .lifetime(Duration::from_secs(3600));
    let verifier = Verifier::new(SigningKeys::new(CURRENT, NEXT).unwrap());

    let mut validation = Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    validation.validate_nbf = false;
    validation.set_required_spec_claims(&["exp", "sub", "iss"]);
    validation.set_issuer(&["Upstash"]);
    validation.sub = Some(URL.to_owned());
    let jwt_keys = [
        DecodingKey::from_secret(CURRENT.as_bytes()).unwrap(),
        DecodingKey::from_secret(NEXT.as_bytes()).unwrap(),
    ];

    let mut group = c.benchmark_group(GROUP);
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    for (len, _) in SIZES {
        let body = body_of(len);
        let token = current.sign(URL, &body);
        let next_token = next.sign(URL, &body);

        // Every contender accepts the inputs it is timed on.
        let claims = verifier.verify_at(&token, &body, Some(URL), now).unwrap();
        assert_eq!(claims.matched_key(), MatchedKey::Current);
        let claims = verifier
            .verify_at(&next_token, &body, Some(URL), now)
            .unwrap();
        assert_eq!(claims.matched_key(), MatchedKey::Next);
        assert_eq!(
            with_jsonwebtoken(&token, &body, &jwt_keys, &validation),
            Some(MatchedKey::Current)
        );
        assert_eq!(
            with_jsonwebtoken(&next_token, &body, &jwt_keys, &validation),
            Some(MatchedKey::Next)
        );

        group.throughput(Throughput::Bytes(len as u64));
        group.bench_with_input(BenchmarkId::new("crate", len), &body, |b, body| {
            b.iter(|| verifier.verify_at(black_box(&token), black_box(body), Some(URL), now));
        });
        group.bench_with_input(BenchmarkId::new("floor", len), &body, |b, body| {
            b.iter(|| floor(black_box(&token), black_box(body), &[CURRENT]));
        });
        group.bench_with_input(BenchmarkId::new("crate_next_key", len), &body, |b, body| {
            b.iter(|| verifier.verify_at(black_box(&next_token), black_box(body), Some(URL), now));
        });
        group.bench_with_input(BenchmarkId::new("floor_two_macs", len), &body, |b, body| {
            b.iter(|| floor(black_box(&next_token), black_box(body), &[CURRENT, NEXT]));
        });
        group.bench_with_input(BenchmarkId::new("jsonwebtoken", len), &body, |b, body| {
            b.iter(|| {
                with_jsonwebtoken(black_box(&token), black_box(body), &jwt_keys, &validation)
            });
        });
    }
    group.finish();
}

/// criterion's output directory: `$CRITERION_HOME`, else `<target dir>/criterion`.
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    target.join("criterion")
}

/// The median (ns) of one benchmark of this run, from criterion's `estimates.json`.
fn median_ns(function: &str, len: usize) -> Option<f64> {
    let path = criterion_dir()
        .join(GROUP)
        .join(function)
        .join(len.to_string())
        .join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn summary(started: SystemTime) {
    // Only estimates written by this run (a filtered run leaves older ones behind).
    let fresh = |function: &str, len: usize| {
        let path = criterion_dir()
            .join(GROUP)
            .join(function)
            .join(len.to_string())
            .join("new/estimates.json");
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
        (modified >= started)
            .then(|| median_ns(function, len))
            .flatten()
    };
    println!(
        "\nverify: medians and ratios (bars: crate/floor <= 3x at 0 B, 1.8x at 1 KiB, 1.1x at 64 KiB, 1.05x at 1 MiB)\n"
    );
    println!(
        "| body | crate | floor | crate/floor | next key | 2-MAC floor | next/floor2 | jsonwebtoken | jwt/crate |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let bars = [3.0, 1.8, 1.1, 1.05];
    for ((len, label), bar) in SIZES.into_iter().zip(bars) {
        let m: Vec<Option<f64>> = FUNCTIONS.iter().map(|f| fresh(f, len)).collect();
        let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), fmt_ns);
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".to_owned(),
        };
        let verdict = match (m[0], m[1]) {
            (Some(a), Some(b)) if a / b <= bar => " ok",
            (Some(_), Some(_)) => " MISSED",
            _ => "",
        };
        println!(
            "| {label} | {} | {} | {}{verdict} | {} | {} | {} | {} | {} |",
            cell(m[0]),
            cell(m[1]),
            ratio(m[0], m[1]),
            cell(m[2]),
            cell(m[3]),
            ratio(m[2], m[3]),
            cell(m[4]),
            ratio(m[4], m[0]),
        );
    }
}

/// crate/floor measured *paired*: blocks of the crate and of the floor alternate (41 rounds, the
/// order swapped every round) and the median of the per-round ratios is kept. On shared, noisy
/// cores the load drifts between criterion's separate measurements; pairing cancels the drift.
fn paired_ratios() {
    let now = SystemTime::now();
    let signer = Signer::new(CURRENT)
        .issued_at(now)
        .lifetime(Duration::from_secs(3600));
    let verifier = Verifier::new(SigningKeys::new(CURRENT, NEXT).unwrap());
    println!("\nverify: paired crate/floor (median of 41 alternating rounds)\n");
    println!("| body | paired crate/floor | bar |");
    println!("|---:|---:|---:|");
    let bars = [3.0, 1.8, 1.1, 1.05];
    for ((len, label), bar) in SIZES.into_iter().zip(bars) {
        let body = body_of(len);
        let token = signer.sign(URL, &body);
        // About 2 ms per block (≈ 0.6 µs + 0.7 ns per body byte for the floor here).
        let per_block = (2.0e6 / (600.0 + len as f64 * 0.7)).ceil().max(2.0) as usize;
        let time = |f: &dyn Fn()| {
            let start = std::time::Instant::now();
            for _ in 0..per_block {
                f();
            }
            start.elapsed().as_secs_f64()
        };
        let ours = || {
            black_box(verifier.verify_at(black_box(&token), black_box(&body), Some(URL), now)).ok();
        };
        let naive = || {
            black_box(floor(black_box(&token), black_box(&body), &[CURRENT]));
        };
        let mut ratios: Vec<f64> = (0..41)
            .map(|round| {
                if round % 2 == 0 {
                    let a = time(&ours);
                    a / time(&naive)
                } else {
                    let b = time(&naive);
                    time(&ours) / b
                }
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        let verdict = if median <= bar { "ok" } else { "MISSED" };
        println!("| {label} | {median:.2}x {verdict} | {bar}x |");
    }
}

fn main() {
    let started = SystemTime::now() - Duration::from_secs(1);
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
    let listing_or_testing = std::env::args().any(|a| a == "--test" || a == "--list");
    if !listing_or_testing {
        summary(started);
        paired_ratios();
    }
}
