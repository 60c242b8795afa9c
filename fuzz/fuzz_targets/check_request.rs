//! Fuzz `Receiver::check_request` (the one-pass scan of a request's headers: signature, region
//! and delivery headers) with arbitrary header lists.
//!
//! Input: `[mode: u8] name 0xFE value 0xFF name 0xFE value 0xFF …` (names lossy UTF-8, values
//! raw bytes). Mode bit 0 set: a valid signature for the body `b""` is added first, so the scan
//! goes past the token to the delivery headers.
//!
//! Besides "never panics": an accepted request's `Delivery` equals `Delivery::from_headers` of
//! the same headers, and every value it holds is visible ASCII, trimmed, at most 256 bytes, with
//! a non-empty message id.
#![no_main]

use std::time::SystemTime;

use libfuzzer_sys::fuzz_target;
use qstash_receiver::test_utils::Signer;
use qstash_receiver::{Delivery, Receiver, RequestTarget, SigningKeys, UrlPolicy, Verifier};

const CURRENT: &str = "sig_4Xq9VJmZ2cP7tLw8RbN3kYfH6dGs";
const NEXT: &str = "sig_8TnE5uWq1zA6mKc3XvJ9pLr2hDyB";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut headers: Vec<(String, Vec<u8>)> = Vec::new();
    if mode & 1 == 1 {
        let signature = Signer::new(CURRENT).sign("https://fuzz.example/jobs", b"");
        headers.push(("upstash-signature".to_owned(), signature.into_bytes()));
    }
    for pair in rest.split(|&b| b == 0xFF) {
        let mut parts = pair.splitn(2, |&b| b == 0xFE);
        let name = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let value = parts.next().unwrap_or_default().to_vec();
        headers.push((name, value));
    }
    let keys = SigningKeys::new(CURRENT, NEXT).expect("keys");
    let receiver = Receiver::new(Verifier::new(keys)).url_policy(UrlPolicy::skip());
    let pairs = || headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
    let checked = receiver.check_request(pairs(), &RequestTarget::new("/jobs"), SystemTime::now());
    let Ok((_, delivery)) = checked else {
        return;
    };
    let alone = Delivery::from_headers(pairs()).expect("the same headers parse alone");
    assert_eq!(alone, delivery);
    for value in [
        delivery.message_id(),
        delivery.region(),
        delivery.caller_ip(),
        delivery.schedule_id(),
        delivery.url_group(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(value.len() <= 256);
        assert!(value.bytes().all(|b| b.is_ascii_graphic() || b == b' '));
        assert_eq!(value, value.trim_matches(|c| c == ' ' || c == '\t'));
    }
    assert!(delivery.message_id().is_none_or(|id| !id.is_empty()));
});
