//! [`Receiver`]: the whole verification policy, and the framework-free steps every adapter runs.

use std::time::SystemTime;

use crate::{
    Claims, Delivery, Rejection, RequestTarget, UrlPolicy, UrlPolicyError, VerifiedToken, Verifier,
    VerifyError,
};

/// The default body limit: 10 MiB, the largest message of QStash's pay-as-you-go plan (see
/// [`Receiver::max_body_bytes`] for choosing another).
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// A callback's default limit, in multiples of the body limit (see
/// [`Receiver::get_callback_max_body_bytes`]).
const CALLBACK_FACTOR: usize = 3;

/// A configured receiver: the whole verification policy, in one place. Cheap to clone. The
/// adapters (the tower layer, the axum extractors, the actix-web middleware, extractors and
/// guard) take one and add only their own knobs.
///
/// | option | set with | read with | default |
/// |---|---|---|---|
/// | keys, leeway, regions | [`Receiver::new`]`(verifier)` | [`Receiver::verifier`] | |
/// | expected URL | [`url_policy`](Receiver::url_policy), [`public_url`](Receiver::public_url), [`expected_url`](Receiver::expected_url) | [`get_url_policy`](Receiver::get_url_policy) | unconfigured: refused with 500 `misconfigured` |
/// | body limit | [`max_body_bytes`](Receiver::max_body_bytes) | [`get_max_body_bytes`](Receiver::get_max_body_bytes) | [`DEFAULT_MAX_BODY_BYTES`] (10 MiB) |
/// | callback body limit | [`callback_max_body_bytes`](Receiver::callback_max_body_bytes) | [`get_callback_max_body_bytes`](Receiver::get_callback_max_body_bytes) | 3 × the body limit |
/// | deduplication and replay guard | [`dedup`](Receiver::dedup) | [`get_dedup`](Receiver::get_dedup) | none |
/// | answer to an unusable payload | [`non_retryable_invalid_payload`](Receiver::non_retryable_invalid_payload) | [`get_non_retryable_invalid_payload`](Receiver::get_non_retryable_invalid_payload) | 400, retried |
///
/// Each option is set with a method named after it and read with `get_` and the same name.
///
/// Its `check_*` methods are the steps every adapter runs; with them, another framework needs
/// only a thin adapter:
///
/// ```
/// # #[cfg(feature = "test-utils")] {
/// use std::time::SystemTime;
/// use qstash_receiver::{Receiver, RequestTarget, SigningKeys, UrlPolicy, Verifier, test_utils::Signer};
///
/// let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
///     .url_policy(UrlPolicy::public_base("https://app.example.com")?)
///     .max_body_bytes(64 * 1024);
///
/// let body = br#"{"task":"mail"}"#;
/// let delivery = Signer::new("sig_current").delivery("https://app.example.com/jobs", body);
/// let headers = delivery.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
///
/// // 1. Headers and token, before reading the body: refuses a bad token early.
/// let (token, meta) = receiver.check_request(headers, &RequestTarget::new("/jobs"), SystemTime::now())?;
/// // 2. The announced length against the limit (413 without reading).
/// receiver.check_content_length(Some(body.len() as u64))?;
/// // 3. Read at most `receiver.get_max_body_bytes()` bytes, then check the body.
/// let claims = receiver.check_body(token, body)?;
/// assert_eq!(claims.url(), "https://app.example.com/jobs");
/// assert_eq!(meta.message_id(), Some(delivery.message_id.as_str()));
/// # }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Receiver {
    verifier: Verifier,
    url_policy: UrlPolicy,
    max_body_bytes: usize,
    /// `None`: [`CALLBACK_FACTOR`] × `max_body_bytes`.
    callback_max_body_bytes: Option<usize>,
    non_retryable_invalid_payload: bool,
    dedup: Option<crate::dedup::Dedup>,
}

impl Receiver {
    /// A receiver with `verifier`, the default (unconfigured, fail-closed) [`UrlPolicy`] and a
    /// body limit of [`DEFAULT_MAX_BODY_BYTES`].
    #[must_use]
    pub fn new(verifier: Verifier) -> Self {
        Self {
            verifier,
            url_policy: UrlPolicy::default(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            callback_max_body_bytes: None,
            non_retryable_invalid_payload: false,
            dedup: None,
        }
    }

    /// How to decide the URL each delivery must be signed for.
    #[must_use]
    pub fn url_policy(mut self, policy: UrlPolicy) -> Self {
        self.url_policy = policy;
        self
    }

    /// Shorthand for [`UrlPolicy::exact`].
    #[must_use]
    pub fn expected_url(self, url: impl Into<String>) -> Self {
        self.url_policy(UrlPolicy::exact(url))
    }

    /// The largest body accepted, in bytes (default [`DEFAULT_MAX_BODY_BYTES`], 10 MiB).
    ///
    /// Choose your QStash plan's largest message: 1 MB free, 10 MB pay-as-you-go, 50 MB fixed.
    /// A larger message is answered 413 on every attempt (logged at `error`) and dead-letters.
    /// The body is buffered whole, and only once its token verified: callers without your keys
    /// cannot make the server buffer anything. Callbacks get 3 × this limit
    /// ([`Receiver::callback_max_body_bytes`]).
    ///
    /// Behind the tower layer, axum's `DefaultBodyLimit` is raised to this limit for verified
    /// requests; behind the actix-web middleware, register `web::PayloadConfig::new(limit)` (and
    /// `web::JsonConfig` for `web::Json`) so that actix-web's extractors accept as much.
    #[must_use]
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.max_body_bytes = limit;
        self
    }

    /// The largest callback body accepted, in bytes (default: 3 × [`Receiver::max_body_bytes`]).
    ///
    /// A callback carries the message's body and the response's body in base64: for a message
    /// of `n` bytes, about 2.7 × `n` at most. The callback extractors apply this limit when they
    /// verify by themselves; a layer or middleware in front of callback routes reads the body
    /// first, with [`max_body_bytes`](Receiver::max_body_bytes): give it
    /// [`Receiver::for_callbacks`].
    #[must_use]
    pub fn callback_max_body_bytes(mut self, limit: usize) -> Self {
        self.callback_max_body_bytes = Some(limit);
        self
    }

    /// This receiver for callback routes: its body limit becomes its callback limit
    /// ([`Receiver::get_callback_max_body_bytes`]). For the tower layer or the actix-web
    /// middleware in front of `Upstash-Callback` / `Upstash-Failure-Callback` routes.
    ///
    /// ```
    /// use qstash_receiver::{Receiver, SigningKeys, Verifier};
    ///
    /// let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
    ///     .expected_url("https://app.example.com/callbacks")
    ///     .max_body_bytes(10 * 1024 * 1024);
    /// let callbacks = receiver.clone().for_callbacks();
    /// assert_eq!(callbacks.get_max_body_bytes(), 30 * 1024 * 1024);
    /// # Ok::<(), qstash_receiver::KeyError>(())
    /// ```
    #[must_use]
    pub fn for_callbacks(mut self) -> Self {
        let limit = self.get_callback_max_body_bytes();
        self.max_body_bytes = limit;
        self.callback_max_body_bytes = Some(limit);
        self
    }

    /// Answer a verified payload that cannot be used with 489 and
    /// `Upstash-NonRetryable-Error: true` (QStash moves the message to the dead-letter queue at
    /// once) instead of 400 (retried until it dead-letters, uselessly: a verified body never
    /// changes). Off by default.
    ///
    /// It applies to this crate's extractors ([`Rejection::InvalidPayload`]: 400, or 489) and,
    /// behind the tower layer or the actix-web middleware, to the framework's own extractors
    /// (`Json`, `Form`, `Query`…): an answer of **400, 415 or 422** from behind the layer
    /// becomes **489**. A handler behind the layer that wants a retry answers something else
    /// (409, 429, 5xx…).
    pub fn non_retryable_invalid_payload(mut self, enabled: bool) -> Self {
        self.non_retryable_invalid_payload = enabled;
        self
    }

    /// Deduplicate deliveries by message id (see [`crate::dedup`]): the tower layer and the
    /// actix-web middleware then run each message's handler to success once.
    ///
    /// The replay guard (on by default) learns this receiver's verifier leeway
    /// ([`Dedup::verifier_leeway`](crate::dedup::Dedup::verifier_leeway)), so that it remembers
    /// each token for as long as this verifier could accept it.
    #[must_use]
    pub fn dedup(mut self, dedup: crate::dedup::Dedup) -> Self {
        self.dedup = Some(dedup.verifier_leeway(self.verifier.leeway()));
        self
    }

    /// Every delivery must be signed for `base` followed by the request's original path and
    /// query: shorthand for [`UrlPolicy::public_base`], the app's public URL behind a proxy or a
    /// tunnel.
    ///
    /// # Errors
    ///
    /// `base` is not an absolute `http://` or `https://` URL without a query.
    pub fn public_url(self, base: impl Into<String>) -> Result<Self, UrlPolicyError> {
        let policy = UrlPolicy::public_base(base)?;
        Ok(self.url_policy(policy))
    }

    /// The verifier (clones share its keys: rotate them with [`Verifier::set_keys`]).
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The expected-URL policy, set with [`Receiver::url_policy`] (or [`Receiver::public_url`],
    /// [`Receiver::expected_url`]).
    pub fn get_url_policy(&self) -> &UrlPolicy {
        &self.url_policy
    }

    /// The body limit in bytes, set with [`Receiver::max_body_bytes`].
    pub fn get_max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The callback body limit in bytes: set with [`Receiver::callback_max_body_bytes`], else
    /// 3 × [`Receiver::get_max_body_bytes`].
    pub fn get_callback_max_body_bytes(&self) -> usize {
        self.callback_max_body_bytes
            .unwrap_or_else(|| self.max_body_bytes.saturating_mul(CALLBACK_FACTOR))
    }

    /// The deduplication, when set with [`Receiver::dedup`].
    pub fn get_dedup(&self) -> Option<&crate::dedup::Dedup> {
        self.dedup.as_ref()
    }

    /// Whether a verified payload that cannot be used is answered 489 (non-retryable), set with
    /// [`Receiver::non_retryable_invalid_payload`].
    pub fn get_non_retryable_invalid_payload(&self) -> bool {
        self.non_retryable_invalid_payload
    }

    /// The deduplication, when configured with [`Receiver::dedup`].
    #[deprecated(since = "0.2.0", note = "use `Receiver::get_dedup`")]
    pub fn deduplication(&self) -> Option<&crate::dedup::Dedup> {
        self.get_dedup()
    }

    /// The expected-URL policy.
    #[deprecated(since = "0.2.0", note = "use `Receiver::get_url_policy`")]
    pub fn policy(&self) -> &UrlPolicy {
        self.get_url_policy()
    }

    /// The body limit, in bytes.
    #[deprecated(since = "0.2.0", note = "use `Receiver::get_max_body_bytes`")]
    pub fn limit(&self) -> usize {
        self.get_max_body_bytes()
    }

    /// The rejection for a verified body that does not parse (400, or 489 when configured).
    pub fn invalid_payload(&self, message: impl Into<String>) -> Rejection {
        Rejection::InvalidPayload {
            message: message.into(),
            non_retryable: self.non_retryable_invalid_payload,
        }
    }

    /// Step 1, before reading the body: the signature header, the token at time `now` (keys of
    /// the `Upstash-Region` when configured), the expected URL, and the delivery headers.
    ///
    /// Header names are matched case-insensitively. Returns the token, whose body is still to
    /// be checked, and the delivery metadata.
    pub fn check_request<'a, I, N>(
        &self,
        headers: I,
        target: &RequestTarget<'_>,
        now: SystemTime,
    ) -> Result<(VerifiedToken, Delivery), Rejection>
    where
        I: IntoIterator<Item = (N, &'a [u8])>,
        N: AsRef<str>,
    {
        // One pass over the headers; a problem with the delivery headers (400) is reported
        // only once the token passed (401 first).
        let scan = crate::delivery::scan_head(headers);
        let token = self.check_token(&scan, target, now)?;
        Ok((token, scan.delivery?))
    }

    /// The token of a scanned head: MAC (region keys), claims and time window first, the URL
    /// policy last, so that a misconfigured policy (500) shows only to tokens signed with the
    /// user's keys; anyone else gets 401.
    pub(crate) fn check_token(
        &self,
        scan: &crate::delivery::HeadScan<'_>,
        target: &RequestTarget<'_>,
        now: SystemTime,
    ) -> Result<VerifiedToken, Rejection> {
        let signature = scan
            .signature
            .map_err(|()| VerifyError::Malformed("more than one upstash-signature header"))?
            .ok_or(VerifyError::MissingSignature)?;
        let signature = std::str::from_utf8(signature)
            .map_err(|_| VerifyError::Malformed("signature header is not ascii"))?;
        let region = scan.region.and_then(|r| std::str::from_utf8(r).ok());
        let token = self.verifier.verify_token_in_region_at(
            signature.trim_matches([' ', '\t']),
            None,
            region,
            now,
        )?;
        let url = self.url_policy.expected_url_cow(target)?;
        Ok(token.check_url(url.as_deref())?)
    }

    /// Step 2: a `Content-Length` over the limit is refused (413) without reading the body.
    pub fn check_content_length(&self, content_length: Option<u64>) -> Result<(), Rejection> {
        match content_length {
            Some(len) if len > self.max_body_bytes as u64 => Err(self.too_large()),
            _ => Ok(()),
        }
    }

    /// The rejection for a body over the limit (413).
    pub fn too_large(&self) -> Rejection {
        Rejection::PayloadTooLarge {
            limit: self.max_body_bytes,
        }
    }

    /// Step 3, once the body is read (at most [`Receiver::get_max_body_bytes`] bytes): the body hash.
    pub fn check_body(&self, token: VerifiedToken, body: &[u8]) -> Result<Claims, Rejection> {
        if body.len() > self.max_body_bytes {
            return Err(self.too_large());
        }
        let claims = token.verify_body(body)?;
        crate::observe::verified(&claims);
        Ok(claims)
    }
}

#[cfg(all(test, feature = "test-utils"))]
mod tests {
    use super::*;
    use crate::SigningKeys;
    use crate::test_utils::Signer;

    fn receiver() -> Receiver {
        Receiver::new(Verifier::new(SigningKeys::new("sig_a", "sig_b").unwrap()))
            .url_policy(UrlPolicy::public_base("https://x.example").unwrap())
            .max_body_bytes(16)
    }

    fn headers(pairs: &[(String, String)]) -> Vec<(&str, &[u8])> {
        pairs
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes()))
            .collect()
    }

    #[test]
    fn full_path_accepts_and_reports_each_failure() {
        let r = receiver();
        let target = RequestTarget::new("/jobs");
        let d = Signer::new("sig_b").delivery("https://x.example/jobs", b"hi");
        let (token, meta) = r
            .check_request(headers(&d.headers), &target, SystemTime::now())
            .unwrap();
        assert_eq!(meta.retried(), 0);
        assert_eq!(
            r.check_body(token.clone(), b"hi").unwrap().matched_key(),
            crate::MatchedKey::Next
        );
        assert_eq!(
            r.check_body(token, b"ho").unwrap_err().code(),
            "body_mismatch"
        );

        let other = RequestTarget::new("/other");
        let err = r
            .check_request(headers(&d.headers), &other, SystemTime::now())
            .unwrap_err();
        assert_eq!((err.status(), err.code()), (401, "url_mismatch"));

        let missing = r
            .check_request(Vec::<(&str, &[u8])>::new(), &target, SystemTime::now())
            .unwrap_err();
        assert_eq!(
            (missing.status(), missing.code()),
            (401, "missing_signature")
        );

        let mut bad_retried = d.headers.clone();
        bad_retried.push(("upstash-retried".into(), "x".into()));
        let err = r
            .check_request(headers(&bad_retried), &target, SystemTime::now())
            .unwrap_err();
        assert_eq!(err.status(), 400);

        assert_eq!(r.check_content_length(Some(17)).unwrap_err().status(), 413);
        assert!(r.check_content_length(Some(16)).is_ok());
        assert!(r.check_content_length(None).is_ok());
    }

    #[test]
    fn only_blanks_around_the_token_are_trimmed() {
        // HTTP's optional whitespace (spaces, tabs) around a header value is not part of it;
        // anything else after the token makes it malformed, as the core says.
        let r = receiver();
        let target = RequestTarget::new("/jobs");
        let d = Signer::new("sig_a").delivery("https://x.example/jobs", b"");
        let with_signature = |suffix: &str| {
            d.headers
                .iter()
                .map(|(n, v)| {
                    let v = if n == crate::SIGNATURE_HEADER {
                        format!(" \t{v}{suffix}")
                    } else {
                        v.clone()
                    };
                    (n.clone(), v)
                })
                .collect::<Vec<_>>()
        };
        assert!(
            r.check_request(headers(&with_signature(" \t")), &target, SystemTime::now())
                .is_ok()
        );
        for suffix in ["\n", "\u{a0}", "\u{3000}", "\r"] {
            let err = r
                .check_request(headers(&with_signature(suffix)), &target, SystemTime::now())
                .unwrap_err();
            assert_eq!(
                (err.status(), err.code()),
                (401, "malformed_token"),
                "{suffix:?}"
            );
        }
    }

    #[test]
    fn unconfigured_url_policy_fails_closed() {
        let r = Receiver::new(Verifier::new(SigningKeys::new("sig_a", "sig_b").unwrap()));
        let d = Signer::new("sig_a").delivery("https://x.example/jobs", b"");
        let err = r
            .check_request(
                headers(&d.headers),
                &RequestTarget::new("/jobs"),
                SystemTime::now(),
            )
            .unwrap_err();
        assert_eq!((err.status(), err.code()), (500, "misconfigured"));
    }

    #[test]
    fn region_header_selects_region_keys() {
        let verifier = Verifier::new(SigningKeys::new("sig_a", "sig_b").unwrap()).with_region_keys(
            "EU-CENTRAL-1",
            SigningKeys::new("sig_eu", "sig_eu2").unwrap(),
        );
        let r = Receiver::new(verifier).url_policy(UrlPolicy::skip());
        let mut d = Signer::new("sig_eu").delivery("https://x.example/jobs", b"");
        // The signer says US-EAST-1: the default keys are used and refuse the EU token.
        let err = r
            .check_request(
                headers(&d.headers),
                &RequestTarget::new("/jobs"),
                SystemTime::now(),
            )
            .unwrap_err();
        assert_eq!(err.code(), "invalid_signature");
        for (name, value) in &mut d.headers {
            if name == "upstash-region" {
                *value = "eu-central-1".into();
            }
        }
        assert!(
            r.check_request(
                headers(&d.headers),
                &RequestTarget::new("/jobs"),
                SystemTime::now()
            )
            .is_ok()
        );
    }
}
