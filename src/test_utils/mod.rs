//! Sign deliveries exactly as QStash does, to test your own handlers (feature `test-utils`).
//!
//! - [`Signer`] makes tokens and whole deliveries ([`SignedDelivery`]): the token, the message
//!   id, the attempt number and the other headers QStash sends.
//! - A delivery becomes a request in one call: [`SignedDelivery::to_http_request`] (axum, tower,
//!   hyper; with feature `tower`) or [`SignedDelivery::to_actix_request`] (with feature
//!   `actix-web`).
//! - [`SignedDelivery::retry`] is the next attempt of the same message (same id, next
//!   `Upstash-Retried`, new token): what a handler with deduplication must treat as a duplicate.
//! - [`CallbackBuilder`] signs callback and failure-callback events as QStash shapes them.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use qstash_receiver::{SigningKeys, Verifier, test_utils::Signer};
//!
//! let url = "https://example.com/api/jobs";
//! let signer = Signer::new("sig_current");
//! let delivery = signer.delivery(url, br#"{"task":"mail"}"#);
//! // Headers as QStash sends them: the token, a fresh message id, the attempt number…
//! assert_eq!(delivery.header("upstash-signature"), Some(delivery.signature.as_str()));
//! assert_eq!(delivery.header("upstash-retried"), Some("0"));
//!
//! let verifier = Verifier::new(SigningKeys::new("sig_current", "sig_next")?);
//! let claims = verifier.verify(&delivery.signature, delivery.body(), Some(url))?;
//! assert_eq!(claims.audience(), Some(""));
//! assert_eq!(claims.not_before(), Some(-62_135_596_800));
//!
//! // Expired tokens, other keys, other times:
//! let old = Signer::new("sig_current").issued_at(SystemTime::now() - Duration::from_secs(600));
//! assert!(verifier.verify(&old.sign(url, b""), b"", Some(url)).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use hmac::Mac;
use sha2::{Digest, Sha256};

use crate::keys::hmac;

mod callback;
mod delivery;

pub use callback::CallbackBuilder;
pub use delivery::{RequestError, SignedDelivery};

/// `nbf` in QStash tokens since September 2024: Go's zero time.
pub const GO_ZERO_TIME: i64 = -62_135_596_800;

/// The local development server's (`qstash dev`) current signing key,
/// `sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r`. It is public: accept it only in development.
pub const DEV_CURRENT_KEY: &str = crate::keys::DEV_CURRENT_KEY;

/// The local development server's next signing key, `sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs` (public,
/// as [`DEV_CURRENT_KEY`]).
pub const DEV_NEXT_KEY: &str = crate::keys::DEV_NEXT_KEY;

/// How long a QStash token lives.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(300);

const STANDARD_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Produces `Upstash-Signature` tokens as QStash does today: claims in Go's alphabetical order,
/// `aud: ""`, `nbf` = Go's zero time, padded base64url body hash, 300 s lifetime,
/// `jti` = `jwt_` + random alphanumerics. Time, key, lifetime and `nbf` can be changed.
///
/// `Debug` does not show the key.
#[derive(Clone)]
pub struct Signer {
    key: String,
    issued_at: Option<SystemTime>,
    lifetime: Duration,
    not_before: Option<i64>,
    issuer: String,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key", &"[redacted]")
            .field("issued_at", &self.issued_at)
            .field("lifetime", &self.lifetime)
            .field("not_before", &self.not_before)
            .finish()
    }
}

impl Signer {
    /// A signer with `key` (the signing key string, e.g. `sig_…`), issuing at the current time.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            issued_at: None,
            lifetime: TOKEN_LIFETIME,
            not_before: Some(GO_ZERO_TIME),
            issuer: "Upstash".to_owned(),
        }
    }

    /// A signer with the local development server's current key ([`DEV_CURRENT_KEY`]).
    pub fn qstash_dev() -> Self {
        Self::new(DEV_CURRENT_KEY)
    }

    /// Issue tokens as of `time` instead of the clock's current time.
    #[must_use]
    pub fn issued_at(mut self, time: SystemTime) -> Self {
        self.issued_at = Some(time);
        self
    }

    /// Token lifetime (`exp - iat`); QStash uses 300 s.
    #[must_use]
    pub fn lifetime(mut self, lifetime: Duration) -> Self {
        self.lifetime = lifetime;
        self
    }

    /// The `nbf` claim, Unix seconds; `None` omits it. QStash sends [`GO_ZERO_TIME`].
    #[must_use]
    pub fn not_before(mut self, nbf: Option<i64>) -> Self {
        self.not_before = nbf;
        self
    }

    /// The `iss` claim (QStash: `Upstash`); to test a wrong issuer.
    #[must_use]
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = issuer.into();
        self
    }

    /// Signs a delivery of `body` to `url`: the value of `Upstash-Signature`.
    pub fn sign(&self, url: &str, body: &[u8]) -> String {
        let iat = unix_seconds(self.issued_at.unwrap_or_else(SystemTime::now));
        let exp = iat.saturating_add(i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX));
        let body_hash = URL_SAFE.encode(Sha256::digest(body));
        let mut claims = String::with_capacity(256 + url.len());
        claims.push_str(r#"{"aud":"","body":"#);
        claims.push_str(&json_string(&body_hash));
        claims.push_str(&format!(r#","exp":{exp},"iat":{iat},"iss":"#));
        claims.push_str(&json_string(&self.issuer));
        claims.push_str(r#","jti":"#);
        claims.push_str(&json_string(&format!("jwt_{}", random_alnum(20))));
        if let Some(nbf) = self.not_before {
            claims.push_str(&format!(r#","nbf":{nbf}"#));
        }
        claims.push_str(r#","sub":"#);
        claims.push_str(&json_string(url));
        claims.push('}');
        self.sign_raw(STANDARD_HEADER, &URL_SAFE_NO_PAD.encode(claims))
    }

    /// Signs arbitrary base64url header and payload segments: `header.payload.mac`. For tests of
    /// unusual tokens.
    pub fn sign_raw(&self, header_b64: &str, payload_b64: &str) -> String {
        let mut token = format!("{header_b64}.{payload_b64}");
        let mut mac = hmac(self.key.as_bytes());
        mac.update(token.as_bytes());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
        token
    }

    /// A full delivery of `body` to `url`: the token and every header QStash sends with it, with a
    /// fresh message id and attempt 0.
    pub fn delivery(&self, url: &str, body: &[u8]) -> SignedDelivery {
        let message_id = format!("msg_{}", random_alnum(24));
        self.delivery_with_id(url, body, &message_id, 0)
    }

    /// A delivery with a given message id and attempt number (a retry keeps the message id and
    /// gets a new token).
    pub fn delivery_with_id(
        &self,
        url: &str,
        body: &[u8],
        message_id: &str,
        retried: u32,
    ) -> SignedDelivery {
        SignedDelivery::new(self.clone(), url, body.to_vec(), message_id, retried)
    }
}

pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// `n` random ASCII alphanumerics.
pub(crate) fn random_alnum(n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; n];
    // Test tooling only: without a random generator there is nothing sensible to sign with.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    bytes
        .iter()
        .map(|b| {
            ALPHABET
                .get(usize::from(*b) % ALPHABET.len())
                .copied()
                .unwrap_or(b'A') as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_qstash_shape() {
        let token = Signer::new("k")
            .issued_at(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
            .sign("https://e.x/a", b"");
        let payload = token.split('.').nth(1).unwrap();
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let expected_prefix = r#"{"aud":"","body":"47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=","exp":1767225900,"iat":1767225600,"iss":"Upstash","jti":"jwt_"#;
        assert!(json.starts_with(expected_prefix), "{json}");
        assert!(
            json.ends_with(r#","nbf":-62135596800,"sub":"https://e.x/a"}"#),
            "{json}"
        );
        assert!(token.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));
    }

    #[test]
    fn jti_and_message_ids_are_unique() {
        let s = Signer::new("k");
        let a = s.delivery("u", b"");
        let b = s.delivery("u", b"");
        assert_ne!(a.message_id, b.message_id);
        assert_ne!(a.signature, b.signature);
        assert!(a.message_id.starts_with("msg_"));
    }

    #[test]
    fn debug_hides_the_key() {
        assert!(!format!("{:?}", Signer::new("sig_topsecret")).contains("topsecret"));
    }
}
