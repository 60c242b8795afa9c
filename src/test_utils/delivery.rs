//! [`SignedDelivery`]: a signed message, its retries, and the requests that carry it.

use std::fmt;

use super::Signer;

/// A signed delivery made by [`Signer::delivery`]: the token, every header QStash sends with it,
/// and what it was signed for (URL, body, method, attempt number).
///
/// Turn it into a request for your framework in one call
/// ([`to_http_request`](SignedDelivery::to_http_request) for axum, tower and hyper,
/// [`to_actix_request`](SignedDelivery::to_actix_request) for actix-web), and make the next
/// attempt of the same message with [`retry`](SignedDelivery::retry).
///
/// ```
/// use qstash_receiver::test_utils::Signer;
///
/// let first = Signer::new("sig_current").delivery("https://example.com/jobs", b"{}");
/// assert_eq!(first.header("upstash-retried"), Some("0"));
///
/// // QStash retries with the same message id, the next attempt number and a new token.
/// let second = first.retry();
/// assert_eq!(second.message_id, first.message_id);
/// assert_eq!(second.header("upstash-retried"), Some("1"));
/// assert_ne!(second.signature, first.signature);
/// ```
///
/// `Debug` shows neither the token nor the body.
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
        f.debug_struct("SignedDelivery")
            .field("message_id", &self.message_id)
            .field("url", &self.url)
            .field("method", &self.method)
            .field("retried", &self.retried)
            .field("body_len", &self.body.len())
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl SignedDelivery {
    pub(super) fn new(
        signer: Signer,
        url: &str,
        body: Vec<u8>,
        message_id: &str,
        retried: u32,
    ) -> Self {
        let signature = signer.sign(url, &body);
        let headers = vec![
            ("upstash-signature".to_owned(), signature.clone()),
            ("upstash-message-id".to_owned(), message_id.to_owned()),
            ("upstash-retried".to_owned(), retried.to_string()),
            ("upstash-region".to_owned(), "US-EAST-1".to_owned()),
            ("upstash-caller-ip".to_owned(), "127.0.0.1".to_owned()),
            ("user-agent".to_owned(), "Upstash-QStash".to_owned()),
        ];
        Self {
            signature,
            message_id: message_id.to_owned(),
            headers,
            signer,
            url: url.to_owned(),
            body,
            method: "POST".to_owned(),
            retried,
        }
    }

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
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets header `name` (replacing a header of that name), e.g. `Content-Type` or
    /// `Upstash-Topic-Name`. Headers are not signed: changing one keeps the token valid
    /// (setting `Upstash-Signature` replaces the token, to test a wrong one).
    #[must_use]
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        let name = name.to_ascii_lowercase();
        let value = value.into();
        self.headers.retain(|(n, _)| *n != name);
        if name == "upstash-signature" {
            self.signature.clone_from(&value);
        }
        self.headers.push((name, value));
        self
    }

    /// Removes header `name` (case-insensitive), e.g. to test a delivery without
    /// `Upstash-Message-Id`.
    #[must_use]
    pub fn without_header(mut self, name: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self
    }

    /// The method of the requests made from this delivery (QStash: `GET`, `POST`, `PUT`,
    /// `PATCH` or `DELETE`, as the publisher chose). The token does not cover it.
    #[must_use]
    pub fn with_method(mut self, method: &str) -> Self {
        self.method = method.to_ascii_uppercase();
        self
    }

    /// The next attempt of the same message, as QStash sends it after a failure (or as a
    /// duplicate after a lost answer): the same message id, URL, body, method and extra
    /// headers, `Upstash-Retried` one higher, and a new token (new `jti`) signed now (or at the
    /// signer's fixed time).
    #[must_use]
    pub fn retry(&self) -> Self {
        let retried = self.retried.saturating_add(1);
        let mut next = Self::new(
            self.signer.clone(),
            &self.url,
            self.body.clone(),
            &self.message_id,
            retried,
        );
        next.method.clone_from(&self.method);
        // Keep the headers this delivery was given, with the new token and attempt number.
        let mut headers = self.headers.clone();
        for (name, value) in &mut headers {
            match name.as_str() {
                "upstash-signature" => value.clone_from(&next.signature),
                "upstash-retried" => *value = retried.to_string(),
                _ => {}
            }
        }
        next.headers = headers;
        next
    }

    /// Where the request goes: the URL's authority (for `Host`) and its path and query (the
    /// request target a server sees).
    #[cfg_attr(
        not(any(feature = "tower", feature = "actix-web", test)),
        allow(dead_code)
    )]
    fn target(&self) -> (Option<&str>, String) {
        let url = self.url.split('#').next().unwrap_or_default();
        let (authority, rest) = match url.split_once("://") {
            Some((_, after)) => {
                let end = after.find(['/', '?']).unwrap_or(after.len());
                let (authority, rest) = after.split_at(end);
                ((!authority.is_empty()).then_some(authority), rest)
            }
            None => (None, url),
        };
        let path = if rest.starts_with('/') {
            rest.to_owned()
        } else {
            format!("/{rest}")
        };
        (authority, path)
    }

    /// An `http::Request` carrying this delivery as QStash sends it, for axum's and tower's
    /// `oneshot` or a hyper client: the method, the URL's path and query as the URI, `Host` from
    /// the URL, every delivery header, `Content-Length`, and the body (an
    /// `http_body_util::Full<Bytes>`; a service that wants another body type takes
    /// `.map(axum::body::Body::new)`).
    ///
    /// ```
    /// # #[cfg(feature = "axum")] {
    /// use axum::{Router, http::StatusCode, routing::post};
    /// use qstash_receiver::{Receiver, SigningKeys, Verifier, axum::Verified, test_utils::Signer};
    /// use tower::ServiceExt as _;
    ///
    /// async fn job(Verified(body): Verified<String>) -> String {
    ///     body
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
    /// let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
    ///     .expected_url("https://app.example.com/jobs");
    /// let app = Router::new().route("/jobs", post(job)).with_state(receiver);
    ///
    /// let delivery = Signer::new("sig_current").delivery("https://app.example.com/jobs", b"hi");
    /// let res = app.oneshot(delivery.to_http_request()?).await?;
    /// assert_eq!(res.status(), StatusCode::OK);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Fails only when the URL, the method or a header cannot be put in a request.
    #[cfg(feature = "tower")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
    pub fn to_http_request(
        &self,
    ) -> Result<http::Request<http_body_util::Full<bytes::Bytes>>, RequestError> {
        let (authority, path) = self.target();
        let mut builder = http::Request::builder()
            .method(self.method.as_str())
            .uri(path);
        if let Some(host) = authority.filter(|_| self.header("host").is_none()) {
            builder = builder.header(http::header::HOST, host);
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        if self.header("content-length").is_none() {
            builder = builder.header(http::header::CONTENT_LENGTH, self.body.len());
        }
        builder
            .body(http_body_util::Full::new(bytes::Bytes::from(
                self.body.clone(),
            )))
            .map_err(|e| RequestError(e.to_string()))
    }

    /// An actix-web `TestRequest` carrying this delivery as QStash sends it: the method, the
    /// URL's path and query, `Host` from the URL, every delivery header and the body. Call
    /// `.to_request()` (for `test::call_service`) or `.to_http_request()` on it.
    ///
    /// ```
    /// # #[cfg(feature = "actix-web")] {
    /// use actix_web::{App, HttpResponse, test, web};
    /// use qstash_receiver::{Receiver, SigningKeys, Verifier, actix::Verified, test_utils::Signer};
    ///
    /// async fn job(Verified(body): Verified<String>) -> HttpResponse {
    ///     HttpResponse::Ok().body(body)
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
    ///     .expected_url("https://app.example.com/jobs");
    /// let app = test::init_service(
    ///     App::new().app_data(web::Data::new(receiver)).route("/jobs", web::post().to(job)),
    /// )
    /// .await;
    ///
    /// let delivery = Signer::new("sig_current").delivery("https://app.example.com/jobs", b"hi");
    /// let res = test::call_service(&app, delivery.to_actix_request()?.to_request()).await;
    /// assert_eq!(res.status(), 200);
    /// assert_eq!(test::read_body(res).await, "hi");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// Fails only when the URL, the method or a header cannot be put in a request.
    #[cfg(feature = "actix-web")]
    #[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
    pub fn to_actix_request(&self) -> Result<actix_web::test::TestRequest, RequestError> {
        use actix_web::http::header::{HeaderName, HeaderValue};
        use actix_web::http::{Method, Uri};

        let (authority, path) = self.target();
        let method =
            Method::from_bytes(self.method.as_bytes()).map_err(|e| RequestError(e.to_string()))?;
        // `TestRequest` panics on an invalid URI or header: check them first.
        Uri::try_from(path.as_str()).map_err(|e| RequestError(e.to_string()))?;
        let mut headers = Vec::with_capacity(self.headers.len() + 1);
        if let Some(host) = authority.filter(|_| self.header("host").is_none()) {
            headers.push(("host", host));
        }
        headers.extend(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let mut req = actix_web::test::TestRequest::default()
            .method(method)
            .uri(&path);
        for (name, value) in headers {
            let name = HeaderName::try_from(name).map_err(|e| RequestError(e.to_string()))?;
            let value = HeaderValue::try_from(value).map_err(|e| RequestError(e.to_string()))?;
            req = req.append_header((name, value));
        }
        Ok(req.set_payload(self.body.clone()))
    }
}

/// Why a [`SignedDelivery`] could not be turned into a request: its URL, method or a header is
/// not valid HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError(String);

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the delivery cannot be sent as a request: {}", self.0)
    }
}

impl std::error::Error for RequestError {}

#[cfg(test)]
mod tests {
    use super::*;

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
        let d = |url: &str| Signer::new("k").delivery(url, b"");
        assert_eq!(
            d("https://e.x:8443/a/b?x=1#frag").target(),
            (Some("e.x:8443"), "/a/b?x=1".to_owned())
        );
        assert_eq!(d("https://e.x").target(), (Some("e.x"), "/".to_owned()));
        assert_eq!(d("https://e.x?q").target(), (Some("e.x"), "/?q".to_owned()));
        assert_eq!(d("/jobs").target(), (None, "/jobs".to_owned()));
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
