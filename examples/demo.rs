//! The crate's main job, with nothing external: sign deliveries as QStash does, then verify
//! them and show what is accepted and what is refused, with the reason.
//!
//! Run: `cargo run --example demo --features test-utils`

use std::time::{Duration, SystemTime};

use qstash_receiver::test_utils::Signer;
use qstash_receiver::{SigningKeys, Verifier};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (current, next) = (
        "sig_demoCurrentKey0123456789ab",
        "sig_demoNextKey0123456789abcde",
    );
    let verifier = Verifier::new(SigningKeys::new(current, next)?);
    let url = "https://example.com/api/jobs";
    let body = br#"{"task":"send-welcome-mail"}"#;
    let now = SystemTime::now();

    let good = Signer::new(current).sign(url, body);
    let rolled = Signer::new(next).sign(url, body);
    let expired = Signer::new(current)
        .issued_at(now - Duration::from_secs(600))
        .sign(url, body);
    let foreign = Signer::new("sig_someoneElsesKey").sign(url, body);

    let cases: [(&str, &str, &[u8], &str); 7] = [
        ("signed with the current key", &good, body, url),
        (
            "signed with the next key (after a roll)",
            &rolled,
            body,
            url,
        ),
        (
            "body changed after signing",
            &good,
            br#"{"task":"drop-tables"}"#,
            url,
        ),
        (
            "token replayed against another URL",
            &good,
            body,
            "https://example.com/api/admin",
        ),
        ("expired token (10 minutes old)", &expired, body, url),
        ("signed with an unknown key", &foreign, body, url),
        ("not a token at all", "hello", body, url),
    ];
    for (what, token, body, url) in cases {
        match verifier.verify_at(token, body, Some(url), now) {
            Ok(claims) => println!(
                "ACCEPTED  {what}: key={:?} jti={}",
                claims.matched_key(),
                claims.jwt_id().unwrap_or("-")
            ),
            Err(e) => println!("REFUSED   {what}: [{}] {e}", e.code()),
        }
    }
    Ok(())
}
