//! Keys from the environment (`Verifier::from_vars`, the same rules as `Verifier::from_env`):
//! QStash's multi-region mode, the fallback to the default keys and its log lines, the log line
//! of a next-key match, and the development server's keys wherever they come from. Environments
//! are maps: the process environment is never changed.
#![cfg(feature = "test-utils")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashMap;
use std::time::SystemTime;

use common::regions::{
    DEFAULT_CURRENT, DEFAULT_NEXT, EU_CURRENT, EU_NEXT, US_CURRENT, US_NEXT, env,
};
use common::{Logs, level_of};
use qstash_receiver::test_utils::Signer;
use qstash_receiver::{KeyError, MatchedKey, SigningKeys, Verifier, VerifyError};

const URL: &str = "https://receiver.test/jobs";
const DEV_CURRENT: &str = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r";
const DEV_NEXT: &str = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs";

fn capture() -> (Logs, common::CaptureGuard) {
    Logs::capture()
}

fn verifier(env: &HashMap<&'static str, &'static str>) -> Result<Verifier, KeyError> {
    Verifier::from_vars(|name| env.get(name).map(|v| (*v).to_owned()))
}

/// Verifies a token signed with `key`, sent with `region` as its `Upstash-Region`.
fn verify(v: &Verifier, key: &str, region: Option<&str>) -> Result<MatchedKey, VerifyError> {
    let token = Signer::new(key).sign(URL, b"{}");
    v.verify_token_in_region_at(&token, Some(URL), region, SystemTime::now())
        .and_then(|t| t.verify_body(b"{}"))
        .map(|claims| claims.matched_key())
}

#[test]
fn each_delivery_is_verified_with_the_keys_its_region_names_and_only_those() {
    let v = verifier(&env(true)).unwrap();
    assert_eq!(
        verify(&v, EU_CURRENT, Some("eu-central-1")),
        Ok(MatchedKey::Current)
    );
    assert_eq!(
        verify(&v, EU_NEXT, Some("EU-CENTRAL-1")),
        Ok(MatchedKey::Next)
    );
    assert_eq!(
        verify(&v, US_CURRENT, Some("US-EAST-1")),
        Ok(MatchedKey::Current)
    );
    assert_eq!(verify(&v, US_NEXT, Some("us_east_1")), Ok(MatchedKey::Next));
    // Another region's keys, or the default keys, are never tried for a region with keys.
    for (key, region) in [
        (EU_CURRENT, "US-EAST-1"),
        (EU_NEXT, "US-EAST-1"),
        (US_CURRENT, "EU-CENTRAL-1"),
        (DEFAULT_CURRENT, "EU-CENTRAL-1"),
        (DEFAULT_NEXT, "US-EAST-1"),
    ] {
        assert_eq!(
            verify(&v, key, Some(region)),
            Err(VerifyError::InvalidSignature),
            "{region}"
        );
    }
}

#[test]
fn a_missing_or_unknown_region_falls_back_to_the_default_keys_only() {
    let v = verifier(&env(true)).unwrap();
    for region in [None, Some(""), Some("AP-SOUTHEAST-1"), Some("EU-CENTRAL-2")] {
        assert_eq!(
            verify(&v, DEFAULT_CURRENT, region),
            Ok(MatchedKey::Current),
            "{region:?}"
        );
        assert_eq!(
            verify(&v, DEFAULT_NEXT, region),
            Ok(MatchedKey::Next),
            "{region:?}"
        );
        // The fallback is to the default keys, never to any region's.
        for key in [EU_CURRENT, US_CURRENT, US_NEXT] {
            assert_eq!(
                verify(&v, key, region),
                Err(VerifyError::InvalidSignature),
                "{region:?}"
            );
        }
    }
    // A region QStash runs without keys here falls back too.
    let mut eu_only = env(true);
    eu_only.remove("US_EAST_1_QSTASH_CURRENT_SIGNING_KEY");
    eu_only.remove("US_EAST_1_QSTASH_NEXT_SIGNING_KEY");
    let v = verifier(&eu_only).unwrap();
    assert_eq!(
        verify(&v, DEFAULT_CURRENT, Some("US-EAST-1")),
        Ok(MatchedKey::Current)
    );
    assert_eq!(
        verify(&v, EU_CURRENT, Some("US-EAST-1")),
        Err(VerifyError::InvalidSignature)
    );
}

#[test]
fn without_default_keys_a_delivery_naming_no_configured_region_is_refused() {
    let v = verifier(&env(false)).unwrap();
    for region in [None, Some("AP-SOUTHEAST-1")] {
        for key in [EU_CURRENT, US_CURRENT, DEFAULT_CURRENT] {
            assert_eq!(
                verify(&v, key, region),
                Err(VerifyError::InvalidSignature),
                "{region:?}"
            );
        }
    }
    // Malformed tokens are still reported as such.
    assert!(matches!(
        v.verify_token_in_region_at("a.b", None, None, SystemTime::now()),
        Err(VerifyError::Malformed(_))
    ));
    assert_eq!(
        verify(&v, EU_CURRENT, Some("eu-central-1")),
        Ok(MatchedKey::Current)
    );
}

#[test]
fn a_fallback_is_logged_once_per_kind_and_names_no_key() {
    let (logs, _guard) = capture();
    let v = verifier(&env(true)).unwrap();
    let start = logs.take();
    assert_eq!(start.len(), 1, "{start:?}");
    assert!(
        level_of(&start[0]) == "INFO" && start[0].contains("EU_CENTRAL_1,US_EAST_1"),
        "{start:?}"
    );

    // A region with keys: no fallback, nothing logged.
    for _ in 0..3 {
        verify(&v, EU_CURRENT, Some("EU-CENTRAL-1")).unwrap();
    }
    assert_eq!(logs.take(), Vec::<String>::new());

    for _ in 0..3 {
        verify(&v, DEFAULT_CURRENT, None).unwrap();
    }
    let lines = logs.take();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(level_of(&lines[0]), "WARN");
    assert!(
        lines[0].contains("without an Upstash-Region header") && lines[0].contains("default"),
        "{lines:?}"
    );

    for region in ["AP-SOUTHEAST-1", "XX", "eu-west-9"] {
        let _ = verify(&v, DEFAULT_CURRENT, Some(region));
    }
    let lines = logs.take();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("names no configured region"), "{lines:?}");
    for line in &lines {
        for key in [EU_CURRENT, US_CURRENT, DEFAULT_CURRENT, DEFAULT_NEXT] {
            assert!(!line.contains(key), "{line}");
        }
    }

    // Without default keys, the refusal is logged once, as such.
    let v = verifier(&env(false)).unwrap();
    logs.take();
    for _ in 0..3 {
        let _ = verify(&v, EU_CURRENT, None);
    }
    let lines = logs.take();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        level_of(&lines[0]) == "WARN" && lines[0].contains("refused"),
        "{lines:?}"
    );
}

#[test]
fn a_region_of_qstash_without_keys_is_named_in_its_fallback_line() {
    let (logs, _guard) = capture();
    let mut eu_only = env(true);
    eu_only.remove("US_EAST_1_QSTASH_CURRENT_SIGNING_KEY");
    eu_only.remove("US_EAST_1_QSTASH_NEXT_SIGNING_KEY");
    let v = verifier(&eu_only).unwrap();
    logs.take();
    for _ in 0..2 {
        verify(&v, DEFAULT_CURRENT, Some("us-east-1")).unwrap();
    }
    let lines = logs.take();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        level_of(&lines[0]) == "WARN" && lines[0].contains("region US_EAST_1"),
        "{lines:?}"
    );
}

#[test]
fn a_next_key_match_is_logged_at_info_once_per_key_pair() {
    let (logs, _guard) = capture();
    let v = verifier(&env(true)).unwrap();
    logs.take();
    verify(&v, EU_CURRENT, Some("EU-CENTRAL-1")).unwrap();
    assert_eq!(logs.take(), Vec::<String>::new());
    for _ in 0..3 {
        assert_eq!(
            verify(&v, EU_NEXT, Some("EU-CENTRAL-1")),
            Ok(MatchedKey::Next)
        );
    }
    let lines = logs.take();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(level_of(&lines[0]), "INFO");
    assert!(
        lines[0].contains("next signing key") && lines[0].contains("EU_CENTRAL_1"),
        "{lines:?}"
    );
    assert!(
        !lines[0].contains(EU_NEXT) && !lines[0].contains(EU_CURRENT),
        "{lines:?}"
    );
    // Another pair has its own line.
    verify(&v, US_NEXT, Some("US-EAST-1")).unwrap();
    let lines = logs.take();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("US_EAST_1"), "{lines:?}");

    // A single-region verifier; new keys are a new key set, logged again.
    let v = Verifier::new(SigningKeys::new(DEFAULT_CURRENT, DEFAULT_NEXT).unwrap());
    verify(&v, DEFAULT_NEXT, None).unwrap();
    verify(&v, DEFAULT_NEXT, None).unwrap();
    let lines = logs.take();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("keys=\"default\""), "{lines:?}");
    v.set_keys(SigningKeys::new(DEFAULT_NEXT, "sig_newNext").unwrap());
    verify(&v, DEFAULT_NEXT, None).unwrap();
    assert_eq!(logs.take(), Vec::<String>::new());
    verify(&v, "sig_newNext", None).unwrap();
    assert_eq!(logs.take().len(), 1);
    // A token that fails after its next-key MAC matched is not a delivery: not logged.
    v.set_keys(SigningKeys::new(DEFAULT_CURRENT, DEFAULT_NEXT).unwrap());
    let expired = Signer::new(DEFAULT_NEXT)
        .issued_at(SystemTime::now() - std::time::Duration::from_secs(3600))
        .sign(URL, b"{}");
    assert!(v.verify(&expired, b"{}", Some(URL)).is_err());
    assert_eq!(logs.take(), Vec::<String>::new());
}

#[test]
fn without_qstash_region_the_unprefixed_pair_is_read_and_the_header_ignored() {
    let mut single = env(true);
    single.remove("QSTASH_REGION");
    let v = verifier(&single).unwrap();
    for region in [None, Some("EU-CENTRAL-1"), Some("US-EAST-1")] {
        assert_eq!(verify(&v, DEFAULT_CURRENT, region), Ok(MatchedKey::Current));
        assert_eq!(
            verify(&v, EU_CURRENT, region),
            Err(VerifyError::InvalidSignature)
        );
    }
    let mut regions_only = env(false);
    regions_only.remove("QSTASH_REGION");
    assert_eq!(
        verifier(&regions_only).unwrap_err(),
        KeyError::MissingEnv {
            var: "QSTASH_CURRENT_SIGNING_KEY".into()
        }
    );
}

#[test]
fn the_development_keys_are_never_a_fallback() {
    for vars in [
        HashMap::new(),
        HashMap::from([("QSTASH_REGION", "US_EAST_1")]),
    ] {
        let err = verifier(&vars).unwrap_err();
        assert!(
            matches!(err, KeyError::MissingEnv { .. } | KeyError::NoKeys),
            "{err}"
        );
    }
    // Nor is a region's half pair completed with them.
    let err = verifier(&HashMap::from([
        ("QSTASH_REGION", "US_EAST_1"),
        ("US_EAST_1_QSTASH_CURRENT_SIGNING_KEY", US_CURRENT),
    ]))
    .unwrap_err();
    assert!(matches!(err, KeyError::IncompletePair { .. }), "{err}");
}

#[test]
fn development_keys_are_flagged_and_warned_about_wherever_they_come_from() {
    let (logs, _guard) = capture();
    let assert_warned = |what: &str| {
        let lines = logs.take();
        let warnings: Vec<_> = lines.iter().filter(|l| level_of(l) == "WARN").collect();
        assert_eq!(warnings.len(), 1, "{what}: {lines:?}");
        assert!(
            warnings[0].contains("local QStash development server")
                && warnings[0].contains("anyone can sign"),
            "{what}: {lines:?}"
        );
    };

    assert!(SigningKeys::qstash_dev().is_dev());
    assert_warned("qstash_dev");
    assert!(SigningKeys::new(DEV_CURRENT, DEV_NEXT).unwrap().is_dev());
    assert_warned("new");
    // One public key is enough for anyone to sign.
    assert!(SigningKeys::new(DEV_CURRENT, "sig_real").unwrap().is_dev());
    assert_warned("new, current only");
    assert!(SigningKeys::new("sig_real", DEV_NEXT).unwrap().is_dev());
    assert_warned("new, next only");
    assert!(
        !SigningKeys::new(DEFAULT_CURRENT, DEFAULT_NEXT)
            .unwrap()
            .is_dev()
    );
    assert_eq!(logs.take(), Vec::<String>::new());

    // From the environment, one region or several (trimmed as read).
    let v = verifier(&HashMap::from([
        (
            "QSTASH_CURRENT_SIGNING_KEY",
            " sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r\n",
        ),
        ("QSTASH_NEXT_SIGNING_KEY", DEV_NEXT),
    ]))
    .unwrap();
    assert_warned("from_vars");
    assert!(format!("{v:?}").contains("dev: true"), "{v:?}");
    let mut regional = env(false);
    regional.insert("US_EAST_1_QSTASH_CURRENT_SIGNING_KEY", DEV_CURRENT);
    regional.insert("US_EAST_1_QSTASH_NEXT_SIGNING_KEY", DEV_NEXT);
    verifier(&regional).unwrap();
    assert_warned("from_vars, a region");
}
