//! Verification of the `Upstash-Signature` token against the raw body.
//!
//! ```
//! # #[cfg(feature = "test-utils")] {
//! use std::time::{Duration, SystemTime};
//! use qstash_receiver::{SigningKeys, Verifier, VerifyError, test_utils::Signer};
//!
//! let verifier = Verifier::new(SigningKeys::new("sig_current", "sig_next")?)
//!     .with_leeway(Duration::from_secs(5));
//!
//! let url = "https://example.com/api/qstash";
//! let token = Signer::new("sig_current").sign(url, b"{\"hello\":1}");
//!
//! let claims = verifier.verify(&token, b"{\"hello\":1}", Some(url))?;
//! assert_eq!(claims.url(), url);
//!
//! // A changed body, or a token for another URL, is refused with a precise error.
//! assert_eq!(verifier.verify(&token, b"{\"hello\":2}", Some(url)), Err(VerifyError::BodyMismatch));
//! assert!(matches!(
//!     verifier.verify(&token, b"{\"hello\":1}", Some("https://example.com/other")),
//!     Err(VerifyError::UrlMismatch { .. })
//! ));
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::VerifyError;
use crate::claims::{Claims, RawClaims};
use crate::error::bounded;
use crate::keys::{KeyError, MatchedKey, SigningKeys, region_env_prefix};
use crate::keyset::{KeySet, Pair, note_match};

/// The issuer QStash puts in every token.
const ISSUER: &str = "Upstash";

/// The header every QStash token carries today, base64url-encoded: `{"alg":"HS256","typ":"JWT"}`.
/// Recognized without decoding or parsing.
pub(crate) const STANDARD_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Tokens longer than this are refused as malformed before any decoding (QStash's are ~400 bytes).
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Verifies QStash signatures: HS256 only, the current key then the next key, strict claims,
/// exact URL, and the SHA-256 of the raw body.
///
/// Cheap to clone (an `Arc` inside) and `Send + Sync`. Clones share the keys:
/// [`Verifier::set_keys`] on any clone rotates them for all, without a restart.
#[derive(Clone)]
pub struct Verifier {
    keys: Arc<ArcSwap<KeySet>>,
    leeway: Duration,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self.keys.load();
        f.debug_struct("Verifier")
            .field("keys", &keys.default_pair().map(Pair::keys))
            .field(
                "regions",
                &keys.regions().iter().map(|(r, _)| r).collect::<Vec<_>>(),
            )
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl Verifier {
    /// A verifier for one key pair, with no clock leeway.
    #[must_use]
    pub fn new(keys: SigningKeys) -> Self {
        Self::from_set(KeySet::new(Some(Pair::new(keys)), Vec::new()))
    }

    fn from_set(set: KeySet) -> Self {
        Self {
            keys: Arc::new(ArcSwap::from_pointee(set)),
            leeway: Duration::ZERO,
        }
    }

    /// A verifier with the keys the environment holds, as QStash's official SDKs read them,
    /// multi-region mode included.
    ///
    /// - Without `QSTASH_REGION` (or empty): `QSTASH_CURRENT_SIGNING_KEY` and
    ///   `QSTASH_NEXT_SIGNING_KEY`, as [`SigningKeys::from_env`] reads them; `Upstash-Region`
    ///   is ignored.
    /// - With `QSTASH_REGION` set (`EU_CENTRAL_1`, `US_EAST_1`; `eu-central-1` reads the same):
    ///   the pairs prefixed `EU_CENTRAL_1_`, `US_EAST_1_` and the unprefixed pair, each when set.
    ///   A delivery is verified with the pair of the region its first `Upstash-Region` header
    ///   names, and only with it; without one, with the unprefixed pair (a warning logged once
    ///   per kind), else refused as `invalid_signature`. The header is not signed: it only
    ///   chooses among your own pairs.
    ///
    /// Values are trimmed. Where the official TypeScript SDK warns and carries on, this refuses
    /// to start with a [`KeyError`] (`UnknownRegion`, `IncompletePair`, `EmptyEnv`, `NoKeys`).
    /// It never falls back to the development server's keys, and warns when given them
    /// ([`SigningKeys::is_dev`]).
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use qstash_receiver::Verifier;
    ///
    /// let env = HashMap::from([
    ///     ("QSTASH_REGION", "EU_CENTRAL_1"),
    ///     ("EU_CENTRAL_1_QSTASH_CURRENT_SIGNING_KEY", "sig_eu_current"),
    ///     ("EU_CENTRAL_1_QSTASH_NEXT_SIGNING_KEY", "sig_eu_next"),
    ///     ("US_EAST_1_QSTASH_CURRENT_SIGNING_KEY", "sig_us_current"),
    ///     ("US_EAST_1_QSTASH_NEXT_SIGNING_KEY", "sig_us_next"),
    /// ]);
    /// // `Verifier::from_env()` reads the process environment the same way.
    /// let verifier = Verifier::from_vars(|name| env.get(name).map(|v| v.to_string()))?;
    /// # Ok::<(), qstash_receiver::KeyError>(())
    /// ```
    pub fn from_env() -> Result<Self, KeyError> {
        crate::env::load(crate::keys::process_env).map(Self::from_set)
    }

    /// [`Verifier::from_env`] reading variables through `var` (a variable's value, `None` when
    /// it is not set) instead of the process environment: for tests, or keys kept elsewhere.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, KeyError> {
        crate::env::load(|name| Ok(var(name))).map(Self::from_set)
    }

    /// Tolerated clock skew, applied to `exp` and `nbf` (default: none). A few seconds
    /// absorb skew between QStash and this machine; tokens live 300 s.
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Adds the key pair of one QStash region (`"US-EAST-1"`, `"EU-CENTRAL-1"`…). Deliveries whose
    /// `Upstash-Region` header names that region are verified with it, and only with it; others
    /// with the default pair, the first of each kind logged as [`Verifier::from_env`] describes.
    /// (The header is not signed, but it only *selects* keys: a token must still match one.)
    ///
    /// This verifier's key set is changed in place, for every clone.
    #[must_use]
    pub fn with_region_keys(self, region: &str, keys: SigningKeys) -> Self {
        self.set_region_keys(region, keys);
        self
    }

    /// Replaces the default key pair, for this verifier and every clone of it, at once. Verifications
    /// under way finish with the keys they started with.
    pub fn set_keys(&self, keys: SigningKeys) {
        self.keys
            .rcu(|set| KeySet::new(Some(Pair::new(keys.clone())), set.regions().to_vec()));
    }

    /// Adds or replaces the key pair of one region, for this verifier and every clone of it.
    pub fn set_region_keys(&self, region: &str, keys: SigningKeys) {
        let name = region_env_prefix(region);
        self.keys.rcu(|set| {
            let mut regions: Vec<_> = set
                .regions()
                .iter()
                .filter(|(r, _)| *r != name)
                .cloned()
                .collect();
            regions.push((name.clone(), Pair::new(keys.clone())));
            KeySet::new(set.default_pair().cloned(), regions)
        });
    }

    /// The configured leeway.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Verifies a token against the raw body at the system clock's time.
    ///
    /// `url`: the URL this receiver expects the delivery to be addressed to (`sub`), compared
    /// exactly; `None` skips the URL check.
    pub fn verify(
        &self,
        signature: &str,
        body: &[u8],
        url: Option<&str>,
    ) -> Result<Claims, VerifyError> {
        self.verify_at(signature, body, url, SystemTime::now())
    }

    /// Verifies a token against the raw body at the time `now`.
    pub fn verify_at(
        &self,
        signature: &str,
        body: &[u8],
        url: Option<&str>,
        now: SystemTime,
    ) -> Result<Claims, VerifyError> {
        self.verify_token_at(signature, url, now)?.verify_body(body)
    }

    /// Verifies everything but the body (format, algorithm, MAC, issuer, time, URL) at the system
    /// clock's time. Lets a server refuse a bad token before reading a single body byte; the
    /// body is then checked with [`VerifiedToken::verify_body`].
    pub fn verify_token(
        &self,
        signature: &str,
        url: Option<&str>,
    ) -> Result<VerifiedToken, VerifyError> {
        self.verify_token_at(signature, url, SystemTime::now())
    }

    /// [`Verifier::verify_token`] at the time `now`.
    pub fn verify_token_at(
        &self,
        signature: &str,
        url: Option<&str>,
        now: SystemTime,
    ) -> Result<VerifiedToken, VerifyError> {
        self.verify_token_in_region_at(signature, url, None, now)
    }

    /// [`Verifier::verify_token_at`] with the keys of `region` (the first `Upstash-Region`
    /// header's value) when this verifier has keys for it, else the default keys (see
    /// [`Verifier::from_env`]). A token that matches the next key is logged at `info` the first
    /// time for each key pair: QStash rolled its keys, time to update the configuration.
    pub fn verify_token_in_region_at(
        &self,
        signature: &str,
        url: Option<&str>,
        region: Option<&str>,
        now: SystemTime,
    ) -> Result<VerifiedToken, VerifyError> {
        let set = self.keys.load();
        let selected = set.select(region);
        let claims = check_token(selected.map(|(_, pair)| pair.keys()), signature)?;
        let token = check_claims(claims, url, now, self.leeway)?;
        if let Some((region, pair)) = selected {
            note_match(region, pair, token.claims.matched_key());
        }
        Ok(token)
    }
}

/// A token whose MAC, issuer, time window and URL passed; the body is still to be checked.
#[derive(Debug, Clone)]
#[must_use = "the body is not verified until `verify_body` is called"]
pub struct VerifiedToken {
    claims: Claims,
}

impl VerifiedToken {
    /// The claims; the `body` claim is not checked yet.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// Step 5: the token's `sub` must be exactly `expected` (`None`: not checked). Run last
    /// among the token's checks, so a receiver may compute the expected URL once the MAC and
    /// the time window passed (a misconfigured URL policy is then reported only for tokens
    /// that verified).
    pub(crate) fn check_url(self, expected: Option<&str>) -> Result<Self, VerifyError> {
        match expected {
            Some(expected) if self.claims.subject() != expected => Err(VerifyError::UrlMismatch {
                expected: expected.to_owned(),
                found: bounded(self.claims.subject(), 2048),
            }),
            _ => Ok(self),
        }
    }

    /// Checks that base64url(SHA-256(`body`)) is the token's `body` claim (padding ignored,
    /// constant time), over the raw bytes as received.
    pub fn verify_body(self, body: &[u8]) -> Result<Claims, VerifyError> {
        let digest = Sha256::digest(body);
        self.verify_body_digest(&digest.into())
    }

    /// [`VerifiedToken::verify_body`] for a SHA-256 digest computed by the caller (for example
    /// incrementally, while the body streams in).
    pub fn verify_body_digest(self, sha256: &[u8; 32]) -> Result<Claims, VerifyError> {
        let mut encoded = [0u8; 43];
        let written = URL_SAFE_NO_PAD
            .encode_slice(sha256, &mut encoded)
            .map_err(|_| VerifyError::BodyMismatch)?;
        let ours = encoded.get(..written).unwrap_or_default();
        let theirs = self.claims.body_hash().trim_end_matches('=').as_bytes();
        // The length is public (43 for every SHA-256); the content is compared in constant time.
        if bool::from(ours.ct_eq(theirs)) {
            Ok(self.claims)
        } else {
            Err(VerifyError::BodyMismatch)
        }
    }
}

/// Steps 1–3 of the policy: format, header, MAC (current key, then next on a mismatch only),
/// and the claims parsed.
fn check_token(keys: Option<&SigningKeys>, token: &str) -> Result<Claims, VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::Malformed("token is too long"));
    }
    // Three segments: the last dot, then the first. A dot in the middle segment is refused by
    // its base64url decoding below.
    let three = VerifyError::Malformed("token must have three segments");
    let (signing_input, signature) = token.rsplit_once('.').ok_or(three.clone())?;
    let (header, payload) = signing_input.split_once('.').ok_or(three)?;

    if header != STANDARD_HEADER {
        check_header(header)?;
    }

    let mut mac_bytes = [0u8; 32];
    let sig_len = URL_SAFE_NO_PAD
        .decode_slice(signature, &mut mac_bytes)
        .map_err(|_| VerifyError::Malformed("signature segment is not base64url"))?;
    // Decode the payload before the MAC step, so a malformed token is reported as such
    // whatever its MAC.
    let Ok(json) = URL_SAFE_NO_PAD.decode(payload) else {
        return Err(VerifyError::Malformed("payload segment is not base64url"));
    };

    let signing_input = signing_input.as_bytes();

    let key = if sig_len != mac_bytes.len() {
        return Err(VerifyError::InvalidSignature);
    } else if let Some(keys) = keys {
        if mac_matches(keys, MatchedKey::Current, signing_input, &mac_bytes) {
            MatchedKey::Current
        } else if mac_matches(keys, MatchedKey::Next, signing_input, &mac_bytes) {
            MatchedKey::Next
        } else {
            return Err(VerifyError::InvalidSignature);
        }
    } else {
        // No keys for this delivery's region, and no default keys (logged by the key set).
        return Err(VerifyError::InvalidSignature);
    };
    // Only a payload whose MAC matched is parsed.
    let raw = RawClaims::parse(&json)?;
    Claims::build(raw, key)
}

/// Whether `expected` is the MAC of `input` under the key `which`, compared in constant time.
fn mac_matches(keys: &SigningKeys, which: MatchedKey, input: &[u8], expected: &[u8; 32]) -> bool {
    let mut mac = keys.key(which).clone();
    mac.update(input);
    mac.verify_slice(expected).is_ok()
}

/// Steps 4–5: issuer, time window, URL.
fn check_claims(
    claims: Claims,
    url: Option<&str>,
    now: SystemTime,
    leeway: Duration,
) -> Result<VerifiedToken, VerifyError> {
    if claims.issuer() != ISSUER {
        return Err(VerifyError::WrongIssuer {
            found: bounded(claims.issuer(), 64),
        });
    }
    let now = unix_nanos(now);
    let leeway = i128::try_from(leeway.as_nanos()).unwrap_or(i128::MAX);
    const NANOS: i128 = 1_000_000_000;
    if i128::from(claims.exp) * NANOS <= now.saturating_sub(leeway) {
        return Err(VerifyError::Expired { exp: claims.exp });
    }
    if let Some(nbf) = claims.nbf {
        if i128::from(nbf) * NANOS > now.saturating_add(leeway) {
            return Err(VerifyError::NotYetValid { nbf });
        }
    }
    VerifiedToken { claims }.check_url(url)
}

/// Nanoseconds since the Unix epoch, negative before it.
fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).unwrap_or(i128::MAX),
        Err(e) => -i128::try_from(e.duration().as_nanos()).unwrap_or(i128::MAX),
    }
}

/// Step 2 for a header other than the standard one: a JSON object whose `alg` (last member wins)
/// is exactly `HS256`, without `crit`.
fn check_header(segment: &str) -> Result<(), VerifyError> {
    let json = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| VerifyError::Malformed("header segment is not base64url"))?;
    // Rare (QStash sends the standard header): a plain map is fast enough, and keeps the last
    // of duplicated members.
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&json)
        .map_err(|_| VerifyError::Malformed("header is not a json object"))?;
    if header.contains_key("crit") {
        return Err(VerifyError::CriticalHeader);
    }
    match header.get("alg") {
        Some(serde_json::Value::String(alg)) if alg == "HS256" => Ok(()),
        Some(serde_json::Value::String(alg)) => {
            Err(VerifyError::UnsupportedAlgorithm(bounded(alg, 32)))
        }
        Some(_) => Err(VerifyError::UnsupportedAlgorithm("<not a string>".into())),
        None => Err(VerifyError::UnsupportedAlgorithm("<missing>".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compile-time: a `Verifier` can be shared across threads and cloned into handlers.
    const _: () = {
        const fn shareable<T: Send + Sync + Clone + 'static>() {}
        shareable::<Verifier>();
        shareable::<SigningKeys>();
        shareable::<VerifiedToken>();
    };

    #[test]
    fn cloning_a_verifier_shares_its_keys() {
        // Cheap to clone: one `Arc` and a `Duration`, whatever the number of keys.
        assert!(std::mem::size_of::<Verifier>() <= 3 * std::mem::size_of::<usize>());
        let a = Verifier::new(SigningKeys::new("sig_a", "sig_b").unwrap());
        let b = a.clone();
        assert!(Arc::ptr_eq(&a.keys, &b.keys));
    }

    #[test]
    fn debug_shows_no_key() {
        let verifier =
            Verifier::new(SigningKeys::new("sig_secretcurrent", "sig_secretnext").unwrap())
                .with_region_keys(
                    "EU-CENTRAL-1",
                    SigningKeys::new("sig_secreteu1", "sig_secreteu2").unwrap(),
                );
        let debug = format!("{verifier:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(
            debug.contains("[redacted]") && debug.contains("EU_CENTRAL_1"),
            "{debug}"
        );
    }
}
