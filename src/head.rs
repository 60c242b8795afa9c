//! The request path every adapter runs, written once and framework-free: reading the head (the
//! headers the receiver needs, the announced length, the URL the delivery must be signed for),
//! checking it, and the answers the adapters send (a refusal, a duplicate), so that tower, axum
//! and actix-web decide and answer alike. Adapters only show their request head through
//! [`RequestHead`] (actix-web 4 uses `http` 0.2 types, axum `http` 1) and turn an [`Answer`]
//! into their response type.

use std::time::{Duration, SystemTime};

use crate::dedup::{
    DUPLICATE_HEADER, DUPLICATE_HEADER_VALUE, DUPLICATE_STATUS, duplicate_json_body,
};
use crate::{Delivery, MESSAGE_ID_HEADER, Receiver, Rejection, RequestTarget, VerifiedToken};

/// A request head as the receiver reads it, whatever the framework.
pub(crate) trait RequestHead {
    /// The request method (`GET`, `POST`…).
    fn method(&self) -> &str;
    /// The path and query as received (the original one, before a router stripped a prefix).
    fn path_and_query(&self) -> Option<&str>;
    /// The scheme the server knows for sure (`https` when it terminated TLS itself), if any.
    fn scheme(&self) -> Option<&str>;
    /// The request URI's authority (absolute-form requests), if any.
    fn authority(&self) -> Option<&str>;
    /// The first value of header `name` (lower case).
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// Every header, in order (repeated names repeated).
    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])>;

    /// The `Upstash-Message-Id` header as sent, for logs (unsigned: information only;
    /// [`crate::log`] escapes and cuts it).
    #[cfg_attr(not(feature = "tower"), allow(dead_code))]
    fn message_id(&self) -> Option<&[u8]> {
        self.header(MESSAGE_ID_HEADER)
    }

    /// The announced body length, when there is a readable one.
    fn content_length(&self) -> Option<u64> {
        content_length(self.header("content-length"))
    }
}

/// The span of the delivery `head` carries ([`crate::observe`]): enter it while the request is
/// processed.
#[cfg_attr(not(any(feature = "tower", feature = "actix-web")), allow(dead_code))]
pub(crate) fn span(head: &impl RequestHead) -> tracing::Span {
    crate::observe::delivery_span(head.method(), head.header(MESSAGE_ID_HEADER))
}

/// A `Content-Length` value, when it is a readable number.
pub(crate) fn content_length(value: Option<&[u8]>) -> Option<u64> {
    std::str::from_utf8(value?).ok()?.trim().parse().ok()
}

/// The parts of `head` the receiver's URL policy reads (only those are looked up: an exact URL
/// needs neither the path nor the headers): the path and query, the scheme, `Host` (else the
/// URI's authority) and the first `X-Forwarded-Proto` / `X-Forwarded-Host` values.
pub(crate) fn request_target<'a>(
    receiver: &Receiver,
    head: &'a impl RequestHead,
) -> RequestTarget<'a> {
    let reads = receiver.get_url_policy().reads();
    let mut target = RequestTarget::new("/");
    if reads.path {
        target.path_and_query = head.path_and_query().unwrap_or("/");
    }
    if reads.headers {
        let host = head
            .header("host")
            .and_then(|h| std::str::from_utf8(h).ok())
            .or_else(|| head.authority());
        target = target
            .with_scheme(head.scheme())
            .with_host(host)
            .with_forwarded(
                first_value(head.header("x-forwarded-proto")),
                first_value(head.header("x-forwarded-host")),
            );
    }
    target
}

/// Step 1 on a request head: the token and the delivery headers against the URL the policy
/// expects ([`Receiver::check_request`], headers scanned once), then the announced length
/// against the limit (413 without reading).
pub(crate) fn check_head(
    receiver: &Receiver,
    head: &impl RequestHead,
    now: SystemTime,
) -> Result<(VerifiedToken, Delivery), Rejection> {
    let target = request_target(receiver, head);
    let checked = receiver.check_request(head.headers(), &target, now)?;
    crate::observe::delivery(&checked.1);
    receiver.check_content_length(head.content_length())?;
    Ok(checked)
}

/// The token alone, without the body nor the delivery headers' errors: what the actix-web guard
/// checks (see [`Receiver::check_token`]).
#[cfg(feature = "actix-web")]
pub(crate) fn check_token(
    receiver: &Receiver,
    head: &impl RequestHead,
    now: SystemTime,
) -> Result<VerifiedToken, Rejection> {
    let scan = crate::delivery::scan_head(head.headers());
    receiver.check_token(&scan, &request_target(receiver, head), now)
}

/// The first element of a header value (`a, b` → `a`), trimmed; `None` when empty or not
/// visible ASCII. For `X-Forwarded-Proto` / `X-Forwarded-Host`.
pub(crate) fn first_value(value: Option<&[u8]>) -> Option<&str> {
    let value = value?;
    if !value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return None;
    }
    std::str::from_utf8(value)
        .ok()?
        .split(',')
        .next()
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// An answer of the receiver itself (a refusal, a duplicate), before an adapter turns it into
/// its framework's response.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// `content-type` first, then the answer's own headers (names in lower case).
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: String,
}

const JSON: &str = "application/json";

impl Answer {
    /// A refusal: [`Rejection::status`], [`Rejection::headers`], the JSON [`Rejection::json_body`].
    pub(crate) fn rejection(rejection: &Rejection) -> Self {
        let mut headers = vec![("content-type", JSON.to_owned())];
        headers.extend(rejection.headers());
        Self {
            status: rejection.status(),
            headers,
            body: rejection.json_body(),
        }
    }

    /// An already completed message: [`DUPLICATE_STATUS`], [`DUPLICATE_HEADER`] and
    /// [`duplicate_json_body`].
    pub(crate) fn duplicate(message_id: &str) -> Self {
        Self {
            status: DUPLICATE_STATUS,
            headers: vec![
                ("content-type", JSON.to_owned()),
                (DUPLICATE_HEADER, DUPLICATE_HEADER_VALUE.to_owned()),
            ],
            body: duplicate_json_body(message_id),
        }
    }
}

/// A `Retry-After` value: whole seconds, rounded up, at least 1.
pub(crate) fn retry_after_secs(delay: Duration) -> u64 {
    delay
        .as_secs()
        .saturating_add(u64::from(delay.subsec_nanos() > 0))
        .max(1)
}

/// The statuses a framework's body extractors answer a body they cannot use with (axum's
/// `Json`/`Form`/`Query` rejections, actix-web's `web::Json`/`web::Form`): 400, 415, 422. Behind
/// the layer or the middleware, the body is verified, so retrying cannot change the answer:
/// with [`Receiver::non_retryable_invalid_payload`] they become 489.
pub(crate) fn is_payload_refusal(status: u16) -> bool {
    matches!(status, 400 | 415 | 422)
}

/// The handler behind the layer or the middleware answered `status` to a verified delivery:
/// counted and logged. `true` when the answer must go out as 489 with
/// `Upstash-NonRetryable-Error: true` (the receiver's choice, for a payload refusal).
pub(crate) fn handler_answered(receiver: &Receiver, status: u16) -> bool {
    crate::observe::handled(status);
    if status == 413 {
        crate::log::handler_too_large();
    }
    let non_retryable = receiver.get_non_retryable_invalid_payload() && is_payload_refusal(status);
    if non_retryable {
        crate::log::payload_refused_downstream(status);
    }
    non_retryable
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Head(Vec<(&'static str, &'static str)>, &'static str);

    impl RequestHead for Head {
        fn method(&self) -> &str {
            "POST"
        }
        fn path_and_query(&self) -> Option<&str> {
            Some(self.1)
        }
        fn scheme(&self) -> Option<&str> {
            None
        }
        fn authority(&self) -> Option<&str> {
            None
        }
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.0
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_bytes())
        }
        fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
            self.0.iter().map(|(n, v)| (*n, v.as_bytes()))
        }
    }

    #[test]
    fn target_takes_first_forwarded_values_and_host() {
        let head = Head(
            vec![
                ("host", "internal:8080"),
                ("x-forwarded-proto", "https, http"),
                ("x-forwarded-host", " app.example ,proxy"),
                ("content-length", " 12 "),
            ],
            "/jobs?a=1",
        );
        let keys = crate::SigningKeys::new("sig_a", "sig_b").unwrap();
        let receiver = Receiver::new(crate::Verifier::new(keys))
            .url_policy(crate::UrlPolicy::trust_forwarded_headers("https"));
        let t = request_target(&receiver, &head);
        assert_eq!(t.path_and_query, "/jobs?a=1");
        assert_eq!(t.scheme, None);
        assert_eq!(t.host, Some("internal:8080"));
        assert_eq!(t.forwarded_proto, Some("https"));
        assert_eq!(t.forwarded_host, Some("app.example"));
        assert_eq!(head.content_length(), Some(12));
        // An exact URL reads nothing of the request.
        let exact = receiver.expected_url("https://x.example/a");
        let t = request_target(&exact, &head);
        assert_eq!((t.path_and_query, t.host), ("/", None));
    }

    #[test]
    fn first_value_refuses_control_characters_and_empty() {
        assert_eq!(first_value(Some(b"a, b")), Some("a"));
        assert_eq!(first_value(Some(b" , b")), None);
        assert_eq!(first_value(Some(b"a\nb")), None);
        assert_eq!(first_value(None), None);
    }

    #[test]
    fn answers_and_retry_after() {
        let d = Answer::duplicate("msg_1");
        assert_eq!(d.status, 200);
        assert_eq!(
            d.headers,
            vec![
                ("content-type", JSON.to_owned()),
                ("qstash-duplicate", "true".to_owned())
            ]
        );
        assert_eq!(d.body, r#"{"duplicate":true,"messageId":"msg_1"}"#);
        let r = Answer::rejection(&Rejection::InProgress {
            retry_after_secs: 7,
        });
        assert_eq!(r.status, 409);
        assert_eq!(r.headers.get(1), Some(&("retry-after", "7".to_owned())));
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::MAX), u64::MAX);
        assert!(is_payload_refusal(422) && !is_payload_refusal(401));
    }
}
