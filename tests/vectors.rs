//! Every public signature vector gets its expected verdict through `verify_at`.
//!
//! `tests/data/signature-cases.jsonl` is a copy of the project's shared vectors: inputs and the
//! verdict under the policy (`accept`, `reject`, or `either` where the policy leaves it open;
//! an `either` case must still return, never panic).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use qstash_receiver::{SigningKeys, Verifier, VerifyError};
use serde::Deserialize;

const CASES: &str = include_str!("data/signature-cases.jsonl");

#[derive(Deserialize)]
struct Case {
    id: String,
    current_key: String,
    next_key: String,
    signature: String,
    body_b64: String,
    url: Option<String>,
    clock_tolerance: Option<f64>,
    now: Option<f64>,
    expect: String,
}

fn cases() -> Vec<Case> {
    CASES
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("vector line parses"))
        .collect()
}

fn run(case: &Case) -> Result<qstash_receiver::Claims, VerifyError> {
    let keys = SigningKeys::new(&case.current_key, &case.next_key).expect("vector keys non-empty");
    let leeway = Duration::from_secs_f64(case.clock_tolerance.unwrap_or(0.0));
    let verifier = Verifier::new(keys).with_leeway(leeway);
    let body = base64::engine::general_purpose::STANDARD
        .decode(&case.body_b64)
        .expect("vector body is base64");
    let now = case
        .now
        .map_or_else(SystemTime::now, |t| UNIX_EPOCH + Duration::from_secs_f64(t));
    verifier.verify_at(&case.signature, &body, case.url.as_deref(), now)
}

#[test]
fn every_vector_gets_its_verdict() {
    let cases = cases();
    assert!(cases.len() >= 90, "only {} vectors", cases.len());
    let mut failures = Vec::new();
    let (mut accepted, mut rejected, mut either) = (0, 0, 0);
    for case in &cases {
        let verdict = run(case);
        match (case.expect.as_str(), &verdict) {
            ("accept", Ok(_)) => accepted += 1,
            ("reject", Err(_)) => rejected += 1,
            ("either", _) => either += 1,
            _ => failures.push(format!(
                "{}: expected {}, got {:?}",
                case.id, case.expect, verdict
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        accepted > 20 && rejected > 40 && either > 5,
        "{accepted}/{rejected}/{either}"
    );
}

/// The cause matters, not only the verdict: a few vectors pinned to their exact error.
#[test]
fn vectors_fail_for_the_right_reason() {
    let by_id = |id: &str| {
        let all = cases();
        let case = all.into_iter().find(|c| c.id == id).expect("vector exists");
        run(&case)
    };
    assert!(matches!(
        by_id("time_expired"),
        Err(VerifyError::Expired { .. })
    ));
    assert!(matches!(
        by_id("time_exp_eq_now"),
        Err(VerifyError::Expired { .. })
    ));
    assert!(matches!(
        by_id("time_tol_nbf_outside"),
        Err(VerifyError::NotYetValid { .. })
    ));
    assert!(matches!(
        by_id("iss_trailing_space"),
        Err(VerifyError::WrongIssuer { .. })
    ));
    assert_eq!(
        by_id("iss_missing").unwrap_err(),
        VerifyError::MissingClaim("iss")
    );
    assert_eq!(
        by_id("time_missing_exp").unwrap_err(),
        VerifyError::MissingClaim("exp")
    );
    assert_eq!(
        by_id("time_iat_string_numeric").unwrap_err(),
        VerifyError::InvalidClaim("iat")
    );
    assert_eq!(
        by_id("time_nbf_string_numeric").unwrap_err(),
        VerifyError::InvalidClaim("nbf")
    );
    assert_eq!(
        by_id("body_claim_null").unwrap_err(),
        VerifyError::InvalidClaim("body")
    );
    assert_eq!(
        by_id("url_null_sub_number").unwrap_err(),
        VerifyError::InvalidClaim("sub")
    );
    assert!(matches!(
        by_id("url_trailing_slash_in_url"),
        Err(VerifyError::UrlMismatch { .. })
    ));
    // Signed with the next key: the URL mismatch is reported as such, not hidden as a bad MAC.
    assert!(matches!(
        by_id("url_mismatch_signed_next"),
        Err(VerifyError::UrlMismatch { .. })
    ));
    assert_eq!(
        by_id("body_tampered").unwrap_err(),
        VerifyError::BodyMismatch
    );
    assert_eq!(
        by_id("modern_wrong_key").unwrap_err(),
        VerifyError::InvalidSignature
    );
    assert!(matches!(
        by_id("alg_none_upper"),
        Err(VerifyError::UnsupportedAlgorithm(_))
    ));
    assert!(matches!(
        by_id("alg_rs256_confusion"),
        Err(VerifyError::UnsupportedAlgorithm(_))
    ));
    assert!(matches!(
        by_id("fmt_space_in_signature"),
        Err(VerifyError::Malformed(_))
    ));
    assert!(matches!(
        by_id("hdr_not_object"),
        Err(VerifyError::Malformed(_))
    ));
    let next = by_id("key_next_only").unwrap();
    assert_eq!(next.matched_key(), qstash_receiver::MatchedKey::Next);
    let real = by_id("real_v1").unwrap();
    assert_eq!(real.audience(), Some(""));
    assert_eq!(real.jwt_id(), Some("jwt_7AqGnDKWwKNf6tGT4LgF8jtCDB8j"));
    assert_eq!(real.issued_at(), Some(1657530456));
    assert_eq!(real.expires_at(), 1657530756);
}
