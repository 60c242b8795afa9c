//! Fuzz `Verifier::verify_at` with arbitrary tokens, bodies, URLs, times and leeways.
//!
//! Input layout (split by hand so seeds are easy to write, see `fuzz/fuzz_seeds.py`):
//!
//! ```text
//! [mode: u8][now: i64 LE][leeway seconds: u8] A 0xFF url 0xFF body
//! ```
//!
//! - mode bit 0 clear: `A` is the token, verbatim (lossy UTF-8).
//! - mode bit 0 set: `A` is `header-json 0xFE payload-json`; the target base64url-encodes both and
//!   signs them with the current key (mode bit 1 clear) or the next key (bit 1 set), so the
//!   fuzzer reaches the header and claims parsers and every check after the MAC.
//! - mode bit 2 set: no expected URL (`None`).
//!
//! Besides "never panics", an accepted token must satisfy the policy's invariants.
#![no_main]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use qstash_receiver::test_utils::Signer;
use qstash_receiver::{MatchedKey, SigningKeys, Verifier};

const CURRENT: &str = "sig_4Xq9VJmZ2cP7tLw8RbN3kYfH6dGs";
const NEXT: &str = "sig_8TnE5uWq1zA6mKc3XvJ9pLr2hDyB";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some((now, rest)) = rest.split_first_chunk::<8>() else {
        return;
    };
    let Some((&leeway, rest)) = rest.split_first() else {
        return;
    };
    let mut parts = rest.splitn(3, |&b| b == 0xFF);
    let first = parts.next().unwrap_or_default();
    let url = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();

    let signed = mode & 1 == 1;
    let token = if signed {
        let mut json = first.splitn(2, |&b| b == 0xFE);
        let header = URL_SAFE_NO_PAD.encode(json.next().unwrap_or_default());
        let payload = URL_SAFE_NO_PAD.encode(json.next().unwrap_or_default());
        let key = if mode & 2 == 0 { CURRENT } else { NEXT };
        Signer::new(key).sign_raw(&header, &payload)
    } else {
        String::from_utf8_lossy(first).into_owned()
    };
    let url = (mode & 4 == 0).then_some(&*url);

    let now_secs = i64::from_le_bytes(*now);
    let now = if now_secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(now_secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(now_secs.unsigned_abs()))
    };
    let Some(now) = now else {
        return;
    };

    let keys = SigningKeys::new(CURRENT, NEXT).unwrap();
    let verifier = Verifier::new(keys).with_leeway(Duration::from_secs(u64::from(leeway)));
    let result = verifier.verify_at(&token, body, url, now);

    // The token-only path and the full path agree.
    let token_only = verifier.verify_token_at(&token, url, now);
    match (&result, &token_only) {
        (Ok(_), Err(e)) => panic!("full path accepted, token path refused: {e:?}"),
        (Err(full), Err(partial)) => assert_eq!(full, partial),
        _ => {}
    }

    if let Ok(claims) = result {
        assert_eq!(claims.issuer(), "Upstash");
        if let Some(url) = url {
            assert_eq!(claims.url(), url);
        }
        // Inside the window: exp > now - leeway, nbf <= now + leeway.
        let (now, leeway) = (i128::from(now_secs), i128::from(leeway));
        assert!(i128::from(claims.expires_at()) > now - leeway);
        if let Some(nbf) = claims.not_before() {
            assert!(i128::from(nbf) <= now + leeway);
        }
        if signed {
            // The keys differ, so a token signed with NEXT never matches CURRENT.
            let expected = if mode & 2 == 0 { MatchedKey::Current } else { MatchedKey::Next };
            assert_eq!(claims.matched_key(), expected);
        }
    }
});
