//! Observability: one `tracing` span per delivery, and counters (feature `metrics`).
//!
//! # The delivery span
//!
//! Every adapter (the tower layer, the actix-web middleware, and the axum and actix-web
//! extractors when they verify by themselves) runs each request inside one `info` span named
//! `qstash.delivery`. The handler runs inside it too behind the layer or the middleware, so its
//! own events are the span's children. Field names follow OpenTelemetry's semantic conventions
//! where one exists (`tracing-opentelemetry` reads the `otel.*` fields); the others are in the
//! `messaging.qstash.*` namespace. Fields are recorded as they become known:
//!
//! | field | value | when |
//! |---|---|---|
//! | `otel.name` | `process qstash` | always |
//! | `otel.kind` | `consumer` | always |
//! | `messaging.system` | `qstash` | always |
//! | `messaging.operation.type` | `process` | always |
//! | `http.request.method` | `GET`, `POST`, `PUT`, `PATCH`, `DELETE`, …, `_OTHER` for any other | always |
//! | `messaging.message.id` | the `Upstash-Message-Id` header as sent (escaped, at most 256 bytes) | when sent |
//! | `messaging.qstash.retried` | the `Upstash-Retried` attempt number | once the token verified |
//! | `messaging.qstash.region` | the `Upstash-Region` header (escaped, at most 256 bytes) | once the token verified |
//! | `messaging.qstash.signing_key` | `current` or `next` (`next`: QStash rolled its keys) | once the body verified |
//! | `messaging.qstash.duplicate` | `true` | a duplicate answered without running the handler |
//! | `http.response.status_code` | the status answered (a refusal's, a duplicate's, or the handler's behind the layer or middleware) | at the answer |
//! | `error.type` | the refusal's code (`invalid_signature`, `payload_too_large`, … see [`Rejection::code`](crate::Rejection::code)) | a refusal |
//! | `otel.status_code` | `ERROR` | a refusal, or a 5xx from the handler |
//!
//! The header values are not signed: they are escaped as the log lines escape them (no control
//! characters, no line breaks) and cut. Neither the token, a key nor the body is ever recorded.
//!
//! The log line that says QStash rolled its keys (a delivery signed with the next key) is
//! written at `info`, once per key pair: see [`Verifier`](crate::Verifier).
//!
//! # Metrics
//!
//! With the feature `metrics`, the crate counts through the [`metrics`](https://docs.rs/metrics)
//! facade (0.24): install any recorder (a Prometheus exporter, StatsD, …) and these counters
//! appear. Without a recorder they cost nothing.
//!
//! | counter | labels | counts |
//! |---|---|---|
//! | `qstash_deliveries_verified_total` | `key`: `current` or `next` | deliveries whose token and body verified (`key="next"`: time to rotate the configured keys) |
//! | `qstash_deliveries_refused_total` | `code`: the [`Rejection::code`](crate::Rejection::code) | every refusal answered by the receiver, whatever its code (`payload_too_large`, `in_progress`, `store_unavailable` included) |
//! | `qstash_deliveries_duplicate_total` | | completed messages answered as duplicates, without running the handler |
//! | `qstash_deliveries_in_progress_total` | | messages answered 409 because another request holds them (also counted as refused, `code="in_progress"`) |
//! | `qstash_dedup_store_errors_total` | `operation`: `claim`, `complete`, `release` | failures of the deduplication store (`claim` ones are answered 503 unless the store fails open) |
//! | `qstash_handler_responses_total` | `class`: `1xx`, `2xx`, `3xx`, `4xx`, `5xx` | answers of the handler behind the tower layer or the actix-web middleware to verified deliveries |
//!
//! Routing misses of the actix-web guard are not refusals and are not counted. Extractors that
//! verify by themselves count verifications and refusals; they cannot see the handler's answer.
//!
//! ```
//! # #[cfg(all(feature = "metrics", feature = "test-utils"))] {
//! use qstash_receiver::{Receiver, RequestTarget, SigningKeys, Verifier, test_utils::Signer};
//!
//! // Any `metrics` recorder: here, none installed, the counters are no-ops.
//! let receiver = Receiver::new(Verifier::new(SigningKeys::new("sig_current", "sig_next")?))
//!     .expected_url("https://app.example.com/jobs");
//! let delivery = Signer::new("sig_next").delivery("https://app.example.com/jobs", b"{}");
//! let headers = delivery.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
//! let (token, _) =
//!     receiver.check_request(headers, &RequestTarget::new("/jobs"), std::time::SystemTime::now())?;
//! // Counts `qstash_deliveries_verified_total{key="next"}`.
//! receiver.check_body(token, b"{}")?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use tracing::Span;
use tracing::field::{Empty, display};

use crate::log::{Escaped, MAX_VALUE};
use crate::{Claims, Delivery, MatchedKey, Rejection};

/// The span of one delivery (see the module docs), with the method and the message id as sent.
#[cfg_attr(not(any(feature = "tower", feature = "actix-web")), allow(dead_code))]
pub(crate) fn delivery_span(method: &str, message_id: Option<&[u8]>) -> Span {
    let span = tracing::info_span!(
        "qstash.delivery",
        otel.name = "process qstash",
        otel.kind = "consumer",
        otel.status_code = Empty,
        messaging.system = "qstash",
        "messaging.operation.type" = "process",
        messaging.message.id = Empty,
        messaging.qstash.retried = Empty,
        messaging.qstash.region = Empty,
        messaging.qstash.signing_key = Empty,
        messaging.qstash.duplicate = Empty,
        http.request.method = method_name(method),
        http.response.status_code = Empty,
        "error.type" = Empty,
    );
    if let Some(id) = message_id {
        span.record(
            "messaging.message.id",
            display(Escaped::bytes(id, MAX_VALUE)),
        );
    }
    span
}

/// The method as OpenTelemetry names it: a known method, else `_OTHER`.
fn method_name(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .find(|known| **known == method)
        .copied()
        .unwrap_or("_OTHER")
}

/// The delivery headers are known (the token verified): records them on the current span.
pub(crate) fn delivery(delivery: &Delivery) {
    let span = Span::current();
    span.record("messaging.qstash.retried", delivery.retried());
    if let Some(region) = delivery.region() {
        span.record(
            "messaging.qstash.region",
            display(Escaped::bytes(region.as_bytes(), MAX_VALUE)),
        );
    }
}

/// The body verified: records the key on the current span, counts it.
pub(crate) fn verified(claims: &Claims) {
    let key = match claims.matched_key() {
        MatchedKey::Current => "current",
        MatchedKey::Next => "next",
    };
    Span::current().record("messaging.qstash.signing_key", key);
    #[cfg(feature = "metrics")]
    metrics::counter!("qstash_deliveries_verified_total", "key" => key).increment(1);
}

/// A refusal answered by the receiver: records it on the current span, counts it.
pub(crate) fn refused(rejection: &Rejection) {
    let span = Span::current();
    span.record("error.type", rejection.code());
    span.record("http.response.status_code", rejection.status());
    span.record("otel.status_code", "ERROR");
    #[cfg(feature = "metrics")]
    {
        metrics::counter!("qstash_deliveries_refused_total", "code" => rejection.code())
            .increment(1);
        if matches!(rejection, Rejection::InProgress { .. }) {
            metrics::counter!("qstash_deliveries_in_progress_total").increment(1);
        }
    }
}

/// A completed message answered as a duplicate.
pub(crate) fn duplicate() {
    let span = Span::current();
    span.record("messaging.qstash.duplicate", true);
    span.record("http.response.status_code", crate::dedup::DUPLICATE_STATUS);
    #[cfg(feature = "metrics")]
    metrics::counter!("qstash_deliveries_duplicate_total").increment(1);
}

/// The deduplication store failed at `operation` (`claim`, `complete`, `release`).
pub(crate) fn store_error(operation: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("qstash_dedup_store_errors_total", "operation" => operation).increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = operation;
}

/// The handler behind the layer or the middleware answered `status` to a verified delivery.
#[cfg_attr(not(any(feature = "tower", feature = "actix-web")), allow(dead_code))]
pub(crate) fn handled(status: u16) {
    let span = Span::current();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    #[cfg(feature = "metrics")]
    {
        let class = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        metrics::counter!("qstash_handler_responses_total", "class" => class).increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_named_or_other() {
        assert_eq!(method_name("DELETE"), "DELETE");
        assert_eq!(method_name("delete"), "_OTHER");
        assert_eq!(method_name("BREW"), "_OTHER");
    }
}
