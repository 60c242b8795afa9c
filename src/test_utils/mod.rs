//! Sign deliveries exactly as QStash does, to test your own handlers (feature `test-utils`).
//!
//! [`Signer`] signs tokens and [`SignedDelivery`]s (every header QStash sends, retries, requests
//! for axum/tower/hyper and actix-web in one call); [`CallbackBuilder`] signs callback events.
//!
//! ```
//! use qstash_receiver::test_utils::{CallbackBuilder, Signer};
//! use qstash_receiver::{FailureCallbackEvent, SigningKeys, Verifier};
//!
//! let (url, signer) = ("https://example.com/jobs", Signer::new("sig_current"));
//! let delivery = signer.delivery(url, br#"{"task":"mail"}"#);
//! let verifier = Verifier::new(SigningKeys::new("sig_current", "sig_next")?);
//! verifier.verify(&delivery.signature, delivery.body(), Some(url))?;
//!
//! // QStash retries with the same message id, the next attempt number and a new token.
//! let retry = delivery.retry();
//! assert_eq!(retry.message_id, delivery.message_id);
//! assert_eq!(retry.header("upstash-retried"), Some("1"));
//!
//! // The last attempt failed: QStash calls the failure callback, a signed delivery of its own.
//! let failed = CallbackBuilder::failure_callback(&retry).response_body("database down");
//! let callback = failed.sign(&signer, "https://example.com/failed");
//! let event: FailureCallbackEvent = serde_json::from_slice(callback.body())?;
//! assert_eq!(event.source_message_id, delivery.message_id);
//! assert_eq!(event.body_text(), Ok("database down"));
//! assert!(event.is_final_attempt() && event.dlq_id.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use hmac::Mac;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::keys::hmac;
use crate::verify::STANDARD_HEADER;

/// Builder methods that set one field each: `/// doc`, then `name(arg: Type) => field = value;`.
macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident($arg:ident: $ty:ty) => $($f:ident).+ = $val:expr;)*) => {$(
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, $arg: $ty) -> Self {
            self.$($f).+ = $val;
            self
        }
    )*};
}

mod callback;

pub use callback::CallbackBuilder;

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

/// Produces `Upstash-Signature` tokens as QStash does today: claims in Go's alphabetical order,
/// `aud: ""`, `nbf` = Go's zero time, padded base64url body hash, 300 s lifetime, `jti` =
/// `jwt_` + random hex digits. Time, key, lifetime and `nbf` can be changed; `Debug` hides the key.
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

    setters! {
        /// Issue tokens as of `time` instead of the clock's current time.
        issued_at(time: SystemTime) => issued_at = Some(time);
        /// Token lifetime (`exp - iat`); QStash uses 300 s.
        lifetime(lifetime: Duration) => lifetime = lifetime;
        /// The `nbf` claim, Unix seconds; `None` omits it. QStash sends [`GO_ZERO_TIME`].
        not_before(nbf: Option<i64>) => not_before = nbf;
        /// The `iss` claim (QStash: `Upstash`); to test a wrong issuer.
        issuer(issuer: impl Into<String>) => issuer = issuer.into();
    }

    /// Signs a delivery of `body` to `url`: the value of `Upstash-Signature`.
    pub fn sign(&self, url: &str, body: &[u8]) -> String {
        let iat = unix_seconds(self.issued_at.unwrap_or_else(SystemTime::now));
        let exp = iat.saturating_add(i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX));
        let nbf = self.not_before.map(|nbf| format!(r#","nbf":{nbf}"#));
        let claims = format!(
            r#"{{"aud":"","body":"{}","exp":{exp},"iat":{iat},"iss":{},"jti":"jwt_{}"{},"sub":{}}}"#,
            URL_SAFE.encode(Sha256::digest(body)),
            Value::from(self.issuer.as_str()),
            random_id(),
            nbf.unwrap_or_default(),
            Value::from(url),
        );
        self.sign_raw(STANDARD_HEADER, &URL_SAFE_NO_PAD.encode(claims))
    }

    /// Signs arbitrary base64url header and payload segments: `header.payload.mac`. For tests of
    /// unusual tokens.
    pub fn sign_raw(&self, header_b64: &str, payload_b64: &str) -> String {
        let signed = format!("{header_b64}.{payload_b64}");
        let mut mac = hmac(self.key.as_bytes());
        mac.update(signed.as_bytes());
        let mac = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{mac}")
    }

    /// A full delivery of `body` to `url`: the token and every header QStash sends with it, with a
    /// fresh message id and attempt 0.
    pub fn delivery(&self, url: &str, body: &[u8]) -> SignedDelivery {
        self.delivery_with_id(url, body, &format!("msg_{}", random_id()), 0)
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
        let signature = self.sign(url, body);
        let headers = [
            ("upstash-signature", signature.as_str()),
            ("upstash-message-id", message_id),
            ("upstash-retried", &retried.to_string()),
            ("upstash-region", "US-EAST-1"),
            ("upstash-caller-ip", "127.0.0.1"),
            ("user-agent", "Upstash-QStash"),
        ];
        SignedDelivery {
            headers: headers.map(|(n, v)| (n.to_owned(), v.to_owned())).into(),
            signature,
            message_id: message_id.to_owned(),
            signer: self.clone(),
            url: url.to_owned(),
            body: body.to_vec(),
            method: "POST".to_owned(),
            retried,
        }
    }
}

/// A signed delivery made by [`Signer::delivery`]: the token, every header QStash sends with it,
/// and what it was signed for (URL, body, method, attempt number). See the
/// [module example](self). `Debug` shows neither the token nor the body.
#[derive(Clone)]
#[non_exhaustive]
pub struct SignedDelivery {
    /// The `Upstash-Signature` token.
    pub signature: String,
    /// The `Upstash-Message-Id`.
    pub message_id: String,
    /// Every header to send, names lower-case, the signature included.
    pub headers: Vec<(String, String)>,
    signer: Signer,
    url: String,
    body: Vec<u8>,
    method: String,
    retried: u32,
}

impl fmt::Debug for SignedDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<_> = self.headers.iter().map(|(n, _)| n).collect();
        f.debug_struct("SignedDelivery")
            .field("message_id", &self.message_id)
            .field("url", &self.url)
            .field("method", &self.method)
            .field("retried", &self.retried)
            .field("body_len", &self.body.len())
            .field("headers", &header_names)
            .finish_non_exhaustive()
    }
}

impl SignedDelivery {
    /// The URL the token was signed for (its `sub` claim).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The body the token was signed for.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The HTTP method of the requests made from this delivery (`POST` unless changed with
    /// [`with_method`](SignedDelivery::with_method)).
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The attempt number (`Upstash-Retried`): 0 for the first delivery.
    pub fn retried(&self) -> u32 {
        self.retried
    }

    /// The value of header `name` (case-insensitive), as it will be sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut headers = self.headers.iter();
        let (_, value) = headers.find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        Some(value)
    }

    /// Sets header `name` (replacing a header of that name), e.g. `Content-Type` or
    /// `Upstash-Topic-Name`. Headers are not signed: changing one keeps the token valid
    /// (setting `Upstash-Signature` replaces the token, to test a wrong one).
    #[must_use]
    pub fn with_header(self, name: &str, value: impl Into<String>) -> Self {
        let (name, value) = (name.to_ascii_lowercase(), value.into());
        let mut next = self.without_header(&name);
        if name == "upstash-signature" {
            next.signature.clone_from(&value);
        }
        next.headers.push((name, value));
        next
    }

    /// Removes header `name` (case-insensitive), e.g. to test a delivery without
    /// `Upstash-Message-Id`.
    #[must_use]
    pub fn without_header(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    setters! {
        /// The method of the requests made from this delivery (QStash: `GET`, `POST`, `PUT`,
        /// `PATCH` or `DELETE`, as the publisher chose). The token does not cover it.
        with_method(method: &str) => method = method.to_ascii_uppercase();
    }

    /// The next attempt of the same message, as QStash sends it after a failure (or as a
    /// duplicate after a lost answer): the same message id, URL, body, method and headers,
    /// `Upstash-Retried` one higher, and a new token (new `jti`) signed now (or at the signer's
    /// fixed time).
    #[must_use]
    pub fn retry(&self) -> Self {
        let mut next = self.clone();
        next.retried = self.retried.saturating_add(1);
        next.signature = self.signer.sign(&self.url, &self.body);
        for (name, value) in &mut next.headers {
            match name.as_str() {
                "upstash-signature" => value.clone_from(&next.signature),
                "upstash-retried" => *value = next.retried.to_string(),
                _ => {}
            }
        }
        next
    }

    /// The request target (the URL's path and query) and the headers of a request carrying this
    /// delivery: `Host` (from the URL) and `Content-Length` unless set, then every header.
    #[cfg(any(feature = "tower", feature = "actix-web", test))]
    fn request_head(&self) -> (String, Vec<(String, String)>) {
        let url = self.url.split('#').next().unwrap_or_default();
        let (host, rest) = match url.split_once("://") {
            Some((_, after)) => after.split_at(after.find(['/', '?']).unwrap_or(after.len())),
            None => ("", url),
        };
        let mut headers = Vec::new();
        if !host.is_empty() && self.header("host").is_none() {
            headers.push(("host".to_owned(), host.to_owned()));
        }
        if self.header("content-length").is_none() {
            headers.push(("content-length".to_owned(), self.body.len().to_string()));
        }
        headers.extend(self.headers.iter().cloned());
        let slash = if rest.starts_with('/') { "" } else { "/" };
        (format!("{slash}{rest}"), headers)
    }

    /// An `http::Request` carrying this delivery as QStash sends it (method, path and query,
    /// `Host`, every header, `Content-Length`, body), for axum's and tower's `oneshot` or a hyper
    /// client: `app.oneshot(delivery.to_http_request()?)`. Another body type than `Full<Bytes>`:
    /// `.map(axum::body::Body::new)`.
    ///
    /// Fails only when the URL, the method or a header cannot be put in a request.
    #[cfg(feature = "tower")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
    pub fn to_http_request(
        &self,
    ) -> Result<http::Request<http_body_util::Full<bytes::Bytes>>, RequestError> {
        let ((path, headers), method) = (self.request_head(), self.method.as_str());
        let req = http::Request::builder().method(method).uri(path);
        let req = headers
            .into_iter()
            .fold(req, |req, (name, value)| req.header(name, value));
        let body = http_body_util::Full::new(bytes::Bytes::from(self.body.clone()));
        req.body(body).map_err(request_error)
    }

    /// An actix-web `TestRequest` carrying this delivery as QStash sends it, as
    /// [`to_http_request`](SignedDelivery::to_http_request) does:
    /// `test::call_service(&app, delivery.to_actix_request()?.to_request())`.
    ///
    /// Fails only when the URL, the method or a header cannot be put in a request.
    #[cfg(feature = "actix-web")]
    #[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
    pub fn to_actix_request(&self) -> Result<actix_web::test::TestRequest, RequestError> {
        use actix_web::http::header::{HeaderName, HeaderValue};
        use actix_web::{http::Method, http::Uri, test::TestRequest};

        let (path, headers) = self.request_head();
        // `TestRequest` panics on an invalid method, URI or header: check them first.
        let method = Method::from_bytes(self.method.as_bytes()).map_err(request_error)?;
        Uri::try_from(path.as_str()).map_err(request_error)?;
        let mut req = TestRequest::default().method(method).uri(&path);
        for (name, value) in headers {
            let name = HeaderName::try_from(name).map_err(request_error)?;
            let value = HeaderValue::try_from(value).map_err(request_error)?;
            req = req.append_header((name, value));
        }
        Ok(req.set_payload(self.body.clone()))
    }
}

/// Why a [`SignedDelivery`] could not be turned into a request: its URL, method or a header is
/// not valid HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the delivery cannot be sent as a request: {0}")]
pub struct RequestError(String);

#[cfg(any(feature = "tower", feature = "actix-web"))]
fn request_error(e: impl fmt::Display) -> RequestError {
    RequestError(e.to_string())
}

/// Seconds since the Unix epoch, negative before it.
fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// 32 random hex digits.
fn random_id() -> String {
    // Test tooling only: without a random generator there is nothing sensible to sign with.
    #[allow(clippy::expect_used)]
    let random = || getrandom::u64().expect("the operating system's random generator failed");
    format!("{:016x}{:016x}", random(), random())
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

    #[test]
    fn retry_keeps_the_message_and_extra_headers() {
        let first = Signer::new("k")
            .delivery("https://e.x/a", b"body")
            .with_header("Content-Type", "application/json")
            .with_method("put");
        let third = first.retry().retry();
        assert_eq!(third.message_id, first.message_id);
        assert_eq!(third.retried(), 2);
        assert_eq!(third.header("upstash-retried"), Some("2"));
        assert_eq!(third.header("content-type"), Some("application/json"));
        assert_eq!(
            third.header("upstash-signature"),
            Some(third.signature.as_str())
        );
        assert_ne!(third.signature, first.signature);
        assert_eq!(third.method(), "PUT");
        assert_eq!(third.body(), b"body");
        assert_eq!(third.url(), "https://e.x/a");
    }

    #[test]
    fn target_is_origin_form_with_the_host() {
        let head = |url: &str| {
            let (path, headers) = Signer::new("k").delivery(url, b"").request_head();
            let host = headers.into_iter().find(|(n, _)| n == "host");
            (host.map(|(_, v)| v), path)
        };
        let some = |host: &str| Some(host.to_owned());
        assert_eq!(
            head("https://e.x:8443/a/b?x=1#frag"),
            (some("e.x:8443"), "/a/b?x=1".to_owned())
        );
        assert_eq!(head("https://e.x"), (some("e.x"), "/".to_owned()));
        assert_eq!(head("https://e.x?q"), (some("e.x"), "/?q".to_owned()));
        assert_eq!(head("/jobs"), (None, "/jobs".to_owned()));
    }

    #[test]
    fn debug_hides_the_token_and_the_body() {
        let d = Signer::new("k").delivery("https://e.x/a", b"secret-body");
        let debug = format!("{d:?}");
        assert!(!debug.contains(&d.signature), "{debug}");
        assert!(!debug.contains("secret-body"), "{debug}");
        assert!(debug.contains(&d.message_id), "{debug}");
    }

    #[test]
    fn setting_the_signature_header_replaces_the_token() {
        let d = Signer::new("k")
            .delivery("https://e.x/a", b"")
            .with_header("Upstash-Signature", "x.y.z");
        assert_eq!(d.signature, "x.y.z");
        assert_eq!(d.header("upstash-signature"), Some("x.y.z"));
        let d = d.without_header("upstash-message-id");
        assert_eq!(d.header("upstash-message-id"), None);
    }

    #[cfg(feature = "tower")]
    #[test]
    fn http_request_carries_everything() {
        let d = Signer::new("k").delivery("https://e.x/a?b=1", b"xyz");
        let req = d.to_http_request().unwrap();
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri(), "/a?b=1");
        assert_eq!(req.headers()["host"], "e.x");
        assert_eq!(req.headers()["content-length"], "3");
        assert_eq!(req.headers()["upstash-signature"], d.signature.as_str());
        assert_eq!(http_body::Body::size_hint(req.body()).exact(), Some(3));
        let bad = d.with_method("NOT A METHOD");
        assert!(bad.to_http_request().is_err());
    }

    #[cfg(feature = "actix-web")]
    #[test]
    fn actix_request_refuses_bad_input_without_panicking() {
        let d = Signer::new("k").delivery("https://e.x/a", b"");
        assert!(
            d.clone()
                .with_method("BAD METHOD")
                .to_actix_request()
                .is_err()
        );
        assert!(
            d.with_header("x-bad", "line\nbreak")
                .to_actix_request()
                .is_err()
        );
    }
}
