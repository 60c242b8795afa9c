//! Properties of `Verifier::verify_at` over arbitrary bodies, URLs, times, leeways and tampered
//! tokens: a token from the signer is accepted inside its window and refused, with the error
//! that names the cause, everywhere else; no input makes the verifier panic.
#![cfg(feature = "test-utils")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use proptest::test_runner::Config;
use qstash_receiver::test_utils::{GO_ZERO_TIME, Signer};
use qstash_receiver::{MatchedKey, SigningKeys, Verifier, VerifyError};
use sha2::{Digest, Sha256};

const CURRENT: &str = "sig_4Xq9VJmZ2cP7tLw8RbN3kYfH6dGs";
const NEXT: &str = "sig_8TnE5uWq1zA6mKc3XvJ9pLr2hDyB";
const OTHER: &str = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs";
const LIFETIME: i64 = 300;

fn verifier(leeway_secs: u64) -> Verifier {
    Verifier::new(SigningKeys::new(CURRENT, NEXT).unwrap())
        .with_leeway(Duration::from_secs(leeway_secs))
}

fn at(secs: i64, nanos: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nanos.into())
    }
}

fn signer(key: &str, iat: i64) -> Signer {
    Signer::new(key).issued_at(at(iat, 0))
}

/// Issue times from 1970 to 2096, the years QStash can be in.
fn iat() -> impl Strategy<Value = i64> {
    0i64..4_000_000_000
}

/// Any text, common URL shapes included.
fn url() -> impl Strategy<Value = String> {
    prop_oneof![
        "https://[a-z]{1,12}\\.[a-z]{2,4}(:[0-9]{1,5})?(/[a-zA-Z0-9_.~-]{0,10}){0,4}(\\?[a-z]=[0-9]{1,3})?",
        ".*",
    ]
}

/// A body of `len` pseudo-random bytes from `seed`: big bodies without generating every byte.
fn big_body(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn body_hash(body: &[u8]) -> String {
    URL_SAFE.encode(Sha256::digest(body))
}

/// Errors a token whose bytes were altered may get: never an acceptance, never a claim- or
/// body-level error (the MAC covers those), never a panic.
fn is_tamper_error(e: &VerifyError) -> bool {
    matches!(
        e,
        VerifyError::Malformed(_)
            | VerifyError::InvalidSignature
            | VerifyError::UnsupportedAlgorithm(_)
            | VerifyError::CriticalHeader
    )
}

proptest! {
    #![proptest_config(Config::with_cases(256))]

    /// Inside the window (`nbf` = Go's zero time, `exp` = iat + 300, plus the leeway): accepted,
    /// with every claim as signed.
    #[test]
    fn signed_deliveries_are_accepted_inside_their_window(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        url in url(),
        iat in iat(),
        leeway in 0u64..600,
        offset in 0i64..LIFETIME + 600,
        nanos in 0u32..1_000_000_000,
        check_url in any::<bool>(),
    ) {
        let offset = offset % (LIFETIME + leeway as i64);
        let token = signer(CURRENT, iat).sign(&url, &body);
        let expected = check_url.then_some(url.as_str());
        let claims = verifier(leeway)
            .verify_at(&token, &body, expected, at(iat + offset, nanos))
            .unwrap();
        prop_assert_eq!(claims.url(), url.as_str());
        prop_assert_eq!(claims.issuer(), "Upstash");
        prop_assert_eq!(claims.expires_at(), iat + LIFETIME);
        prop_assert_eq!(claims.issued_at(), Some(iat));
        prop_assert_eq!(claims.not_before(), Some(GO_ZERO_TIME));
        prop_assert_eq!(claims.audience(), Some(""));
        prop_assert_eq!(claims.body_hash(), body_hash(&body));
        prop_assert_eq!(claims.matched_key(), MatchedKey::Current);
    }

    /// At `exp - leeway` and later: expired, naming `exp`. Before `nbf - leeway`: not yet valid.
    #[test]
    fn outside_the_window_the_time_error_is_reported(
        iat in iat(),
        leeway in 0u64..600,
        late in 0i64..100_000,
        early in 1i64..100_000,
        nanos in 0u32..1_000_000_000,
    ) {
        let body = b"{}";
        let url = "https://example.com/api/qstash";
        let exp = iat + LIFETIME;
        let v = verifier(leeway);
        let token = signer(CURRENT, iat).sign(url, body);
        let now = at(exp + leeway as i64 + late, if late == 0 { 0 } else { nanos });
        prop_assert_eq!(v.verify_at(&token, body, Some(url), now), Err(VerifyError::Expired { exp }));

        // nbf = iat (QStash before September 2024).
        let token = signer(CURRENT, iat).not_before(Some(iat)).sign(url, body);
        let now = at(iat - leeway as i64 - early, nanos);
        prop_assert_eq!(v.verify_at(&token, body, Some(url), now), Err(VerifyError::NotYetValid { nbf: iat }));
        // ...and at nbf - leeway exactly, valid.
        prop_assert!(v.verify_at(&token, body, Some(url), at(iat - leeway as i64, 0)).is_ok());
    }

    /// Changing any character of the token (any position, any replacement) is refused as
    /// tampering, never accepted.
    #[test]
    fn any_changed_token_character_is_refused(
        body in proptest::collection::vec(any::<u8>(), 0..256),
        index in any::<prop::sample::Index>(),
        replacement in any::<char>(),
        next_key in any::<bool>(),
    ) {
        let iat = 1_767_225_600;
        let url = "https://example.com/api/qstash";
        let key = if next_key { NEXT } else { CURRENT };
        let token = signer(key, iat).sign(url, &body);
        let i = index.index(token.len());
        let original = token.as_bytes()[i] as char;
        prop_assume!(replacement != original);
        let mut tampered = String::with_capacity(token.len() + 4);
        tampered.push_str(&token[..i]);
        tampered.push(replacement);
        tampered.push_str(&token[i + 1..]);
        let err = verifier(0).verify_at(&tampered, &body, Some(url), at(iat, 0)).unwrap_err();
        prop_assert!(is_tamper_error(&err), "position {i}: {err:?}");
    }

    /// Flipping any bit of the token's bytes (a high bit makes it invalid UTF-8: read lossily,
    /// as a server reading the header as text would) is refused as tampering.
    #[test]
    fn any_flipped_token_bit_is_refused(
        index in any::<prop::sample::Index>(),
        bit in 0u8..8,
        url in url(),
    ) {
        let iat = 1_767_225_600;
        let token = signer(CURRENT, iat).sign(&url, b"payload");
        let mut bytes = token.into_bytes();
        let i = index.index(bytes.len());
        bytes[i] ^= 1 << bit;
        let tampered = String::from_utf8_lossy(&bytes);
        let err = verifier(0).verify_at(&tampered, b"payload", Some(&url), at(iat, 0)).unwrap_err();
        prop_assert!(is_tamper_error(&err), "byte {i} bit {bit}: {err:?}");
    }

    /// Flipping any bit of the body, or cutting or extending it, is a body mismatch, for tokens
    /// of either key.
    #[test]
    fn any_changed_body_is_a_body_mismatch(
        body in proptest::collection::vec(any::<u8>(), 1..2048),
        index in any::<prop::sample::Index>(),
        bit in 0u8..8,
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 1..64),
        next_key in any::<bool>(),
    ) {
        let iat = 1_767_225_600;
        let url = "https://example.com/api/qstash";
        let key = if next_key { NEXT } else { CURRENT };
        let token = signer(key, iat).sign(url, &body);
        let v = verifier(0);
        let now = at(iat, 0);

        let mut flipped = body.clone();
        flipped[index.index(body.len())] ^= 1 << bit;
        prop_assert_eq!(v.verify_at(&token, &flipped, Some(url), now), Err(VerifyError::BodyMismatch));

        let truncated = &body[..cut.index(body.len())];
        prop_assert_eq!(v.verify_at(&token, truncated, Some(url), now), Err(VerifyError::BodyMismatch));

        let mut extended = body.clone();
        extended.extend_from_slice(&extra);
        prop_assert_eq!(v.verify_at(&token, &extended, Some(url), now), Err(VerifyError::BodyMismatch));

        // The original still passes: the refusals above are about the changes.
        prop_assert!(v.verify_at(&token, &body, Some(url), now).is_ok());
    }

    /// A token cut short or with anything appended is refused as tampering.
    #[test]
    fn truncated_or_extended_tokens_are_refused(
        cut in any::<prop::sample::Index>(),
        suffix in prop_oneof!["[A-Za-z0-9_-]{1,8}", "=+", "\\.[A-Za-z0-9_-]{0,8}", ".{1,8}"],
    ) {
        let iat = 1_767_225_600;
        let url = "https://example.com/api/qstash";
        let token = signer(CURRENT, iat).sign(url, b"");
        let v = verifier(0);
        let now = at(iat, 0);

        let truncated = &token[..cut.index(token.len())];
        let err = v.verify_at(truncated, b"", Some(url), now).unwrap_err();
        prop_assert!(is_tamper_error(&err), "cut at {}: {err:?}", truncated.len());

        let extended = format!("{token}{suffix}");
        let err = v.verify_at(&extended, b"", Some(url), now).unwrap_err();
        prop_assert!(is_tamper_error(&err), "suffix {suffix:?}: {err:?}");
    }

    /// Arbitrary text as the token, arbitrary bytes as the body, any time and leeway: an error,
    /// never a panic.
    #[test]
    fn arbitrary_tokens_never_panic(
        token in prop_oneof![
            ".*",
            "[A-Za-z0-9_=+/-]{0,80}(\\.[A-Za-z0-9_=-]{0,80}){0,4}",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9\\.[A-Za-z0-9_-]{0,200}\\.[A-Za-z0-9_-]{40,46}",
        ],
        body in proptest::collection::vec(any::<u8>(), 0..512),
        url in proptest::option::of(url()),
        secs in any::<i32>(),
        leeway in any::<u64>(),
    ) {
        let v = Verifier::new(SigningKeys::new(CURRENT, NEXT).unwrap())
            .with_leeway(Duration::from_secs(leeway));
        let result = v.verify_at(&token, &body, url.as_deref(), at(secs.into(), 0));
        prop_assert!(result.is_err(), "{result:?}");
    }

    /// Arbitrary header and payload bytes, correctly signed: whatever the JSON, a verdict and no
    /// panic; an acceptance only for claims that satisfy the policy.
    #[test]
    fn arbitrary_signed_json_never_panics(
        header in prop_oneof![
            Just(br#"{"alg":"HS256","typ":"JWT"}"#.to_vec()),
            "\\{\"alg\":\"[A-Za-z0-9]{0,6}\"(,\"(crit|typ|kid)\":(1|\"x\"|\\[\\]|null))?\\}".prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..64),
        ],
        payload in prop_oneof![
            "\\{(\"(iss|sub|exp|nbf|iat|body|aud|jti|x)\":(\"Upstash\"|\"\"|-?[0-9]{1,20}|1\\.5e9|null|true|\\[\\]|\\{\\}),?){0,10}\\}"
                .prop_map(String::into_bytes),
            proptest::collection::vec(any::<u8>(), 0..256),
        ],
        secs in 0i64..4_000_000_000,
    ) {
        let token = Signer::new(CURRENT).sign_raw(&URL_SAFE_NO_PAD.encode(&header), &URL_SAFE_NO_PAD.encode(&payload));
        let result = verifier(0).verify_at(&token, b"", None, at(secs, 0));
        if let Ok(claims) = result {
            prop_assert_eq!(claims.issuer(), "Upstash");
            prop_assert!(claims.expires_at() > secs);
            let empty = body_hash(b"");
            prop_assert_eq!(claims.body_hash().trim_end_matches('='), empty.trim_end_matches('='));
        }
    }

    /// Key rotation: a token of the next key is accepted as `Next`; once the next key matched,
    /// a URL, body or time error is reported as itself, not as an invalid signature. A token of
    /// neither key is an invalid signature.
    #[test]
    fn next_key_tokens_report_their_own_errors(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        url in url(),
        other_url in url(),
        iat in iat(),
    ) {
        let v = verifier(0);
        let now = at(iat, 0);
        let token = signer(NEXT, iat).sign(&url, &body);

        let claims = v.verify_at(&token, &body, Some(&url), now).unwrap();
        prop_assert_eq!(claims.matched_key(), MatchedKey::Next);

        if other_url != url {
            let err = v.verify_at(&token, &body, Some(&other_url), now).unwrap_err();
            prop_assert_eq!(err, VerifyError::UrlMismatch { expected: other_url.clone(), found: url.clone() });
        }
        let mut wrong_body = body.clone();
        wrong_body.push(0);
        prop_assert_eq!(v.verify_at(&token, &wrong_body, Some(&url), now), Err(VerifyError::BodyMismatch));
        prop_assert_eq!(
            v.verify_at(&token, &body, Some(&url), at(iat + LIFETIME, 0)),
            Err(VerifyError::Expired { exp: iat + LIFETIME })
        );

        let stranger = signer(OTHER, iat).sign(&url, &body);
        prop_assert_eq!(v.verify_at(&stranger, &body, Some(&url), now), Err(VerifyError::InvalidSignature));
    }
}

proptest! {
    #![proptest_config(Config::with_cases(16))]

    /// Big bodies (up to 2 MiB) round-trip, and one flipped bit anywhere is a body mismatch.
    #[test]
    fn big_bodies_round_trip(
        len in 0usize..2 * 1024 * 1024,
        seed in any::<u64>(),
        index in any::<prop::sample::Index>(),
    ) {
        let iat = 1_767_225_600;
        let url = "https://example.com/big";
        let mut body = big_body(len, seed);
        let token = signer(CURRENT, iat).sign(url, &body);
        let v = verifier(0);
        let claims = v.verify_at(&token, &body, Some(url), at(iat + 1, 0)).unwrap();
        prop_assert_eq!(claims.body_hash(), body_hash(&body));
        if !body.is_empty() {
            let i = index.index(body.len());
            body[i] ^= 0x80;
            prop_assert_eq!(v.verify_at(&token, &body, Some(url), at(iat + 1, 0)), Err(VerifyError::BodyMismatch));
        }
    }
}
