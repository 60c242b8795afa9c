//! Responses that steer QStash's retries.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::{NON_RETRYABLE_HEADER, NON_RETRYABLE_STATUS};

const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

/// Answers 489 with `Upstash-NonRetryable-Error: true`: QStash stops retrying and moves the
/// message to the dead-letter queue. Body: `{"error":"non_retryable","message":…}`.
///
/// ```
/// use qstash_receiver::axum::NonRetryable;
/// async fn handler() -> Result<&'static str, NonRetryable> {
///     Err(NonRetryable("unknown task".into()))
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonRetryable(pub String);

impl IntoResponse for NonRetryable {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(NON_RETRYABLE_STATUS).unwrap_or(StatusCode::BAD_REQUEST);
        let body = serde_json::json!({ "error": "non_retryable", "message": self.0 });
        let header = [(NON_RETRYABLE_HEADER, "true")];
        (status, header, JSON, body.to_string()).into_response()
    }
}

/// Answers 503 with `Retry-After: <seconds>` (rounded up, at least 1): QStash retries after
/// that delay instead of its backoff. Body: `{"error":"retry_later","retry_after":<seconds>}`.
///
/// ```
/// use std::time::Duration;
/// use qstash_receiver::axum::RetryAfter;
/// async fn handler() -> Result<&'static str, RetryAfter> {
///     Err(RetryAfter(Duration::from_secs(30)))
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// A delay of `secs` seconds.
    pub fn seconds(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The `Retry-After` value: whole seconds, rounded up, at least 1.
    pub fn as_secs(&self) -> u64 {
        crate::head::retry_after_secs(self.0)
    }
}

impl IntoResponse for RetryAfter {
    fn into_response(self) -> Response {
        let secs = self.as_secs();
        let body = serde_json::json!({ "error": "retry_later", "retry_after": secs });
        let header = [(http::header::RETRY_AFTER, http::HeaderValue::from(secs))];
        let status = StatusCode::SERVICE_UNAVAILABLE;
        (status, header, JSON, body.to_string()).into_response()
    }
}
