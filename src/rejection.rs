//! Why a receiver refused a request, and how to answer it: shared by every adapter, so axum,
//! tower and actix-web answer the same delivery with the same status and the same JSON body.

use crate::{DeliveryError, VerifyError};

/// The status QStash reads as "do not retry": the message goes to the dead-letter queue, when
/// sent with [`NON_RETRYABLE_HEADER`]` = true`.
pub const NON_RETRYABLE_STATUS: u16 = 489;
/// The header that, with status 489, stops QStash's retries.
pub const NON_RETRYABLE_HEADER: &str = "upstash-nonretryable-error";

/// Why a request was refused. Every adapter turns it into the same response: [`Rejection::status`],
/// the headers of [`Rejection::headers`], and the JSON body of [`Rejection::json_body`]:
/// `{"error": "<code>", "message": "<message>"}`.
///
/// | variant | status | retried by QStash |
/// |---|---|---|
/// | [`Verify`](Rejection::Verify) | 401 | yes (useful in a key-rotation race) |
/// | [`Delivery`](Rejection::Delivery) | 400 | yes |
/// | [`PayloadTooLarge`](Rejection::PayloadTooLarge) | 413 | yes |
/// | [`BodyRead`](Rejection::BodyRead) | 400 | yes |
/// | [`InvalidPayload`](Rejection::InvalidPayload) | 400, or 489 when non-retryable | 489: no, to the DLQ |
/// | [`InProgress`](Rejection::InProgress) | 409 + `Retry-After` | yes, after the delay |
/// | [`StoreUnavailable`](Rejection::StoreUnavailable) | 503 + `Retry-After` | yes, after the delay |
/// | [`Replayed`](Rejection::Replayed) | 401 | QStash never repeats a token: a replay is not QStash |
/// | [`MissingMessageId`](Rejection::MissingMessageId) | 400 | QStash always sends one: not QStash |
/// | [`Misconfigured`](Rejection::Misconfigured) | 500 | yes |
///
/// Messages never contain a key, a token or a body.
///
/// # Example
///
/// ```
/// use qstash_receiver::{Rejection, VerifyError};
///
/// let rejection = Rejection::from(VerifyError::BodyMismatch);
/// assert_eq!(rejection.status(), 401);
/// assert_eq!(rejection.code(), "body_mismatch");
/// assert_eq!(
///     rejection.json_body(),
///     r#"{"error":"body_mismatch","message":"body hash mismatch: the body is not the one that was signed"}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The signature is missing or does not verify.
    #[error("{0}")]
    Verify(#[from] VerifyError),
    /// A QStash delivery header is malformed.
    #[error("{0}")]
    Delivery(#[from] DeliveryError),
    /// The body is larger than the limit.
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body could not be read (the client went away, a transport error).
    #[error("failed to read the request body: {0}")]
    BodyRead(String),
    /// The verified body cannot be parsed into what the handler wants. Retrying cannot fix it:
    /// with `non_retryable` it is answered 489 so QStash sends it to the dead-letter queue.
    #[error("invalid payload: {message}")]
    InvalidPayload {
        /// What the parser said (no body content).
        message: String,
        /// Answer 489 with `Upstash-NonRetryable-Error: true` instead of 400.
        non_retryable: bool,
    },
    /// Another request (or instance) is processing the same message id right now.
    #[error("this message is being processed by another request: retry later")]
    InProgress {
        /// Seconds QStash should wait before retrying.
        retry_after_secs: u32,
    },
    /// The deduplication store failed; the handler did not run, QStash should retry.
    #[error("deduplication store unavailable: retry later")]
    StoreUnavailable {
        /// Seconds QStash should wait before retrying.
        retry_after_secs: u32,
    },
    /// The very same token (its `jti`) was already accepted while it is still valid: a replay of
    /// a captured request (dedup's replay guard). QStash signs every attempt with a new token.
    #[error("this signed token was already used")]
    Replayed,
    /// Deduplication is on and the delivery has no `Upstash-Message-Id` header (QStash always
    /// sends one): it is refused rather than run without deduplication.
    #[error("the upstash-message-id header is required for deduplication")]
    MissingMessageId,
    /// The receiver is not configured correctly (no URL policy, no verifier in state…).
    #[error("receiver misconfigured: {0}")]
    Misconfigured(String),
}

impl Rejection {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Verify(_) | Self::Replayed => 401,
            Self::Delivery(_) | Self::BodyRead(_) | Self::MissingMessageId => 400,
            Self::PayloadTooLarge { .. } => 413,
            Self::InvalidPayload {
                non_retryable: true,
                ..
            } => NON_RETRYABLE_STATUS,
            Self::InvalidPayload { .. } => 400,
            Self::InProgress { .. } => 409,
            Self::StoreUnavailable { .. } => 503,
            Self::Misconfigured(_) => 500,
        }
    }

    /// A stable, machine-readable name of the cause (the JSON body's `error`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Verify(e) => e.code(),
            Self::Delivery(_) => "invalid_delivery_header",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::BodyRead(_) => "body_read_failed",
            Self::InvalidPayload { .. } => "invalid_payload",
            Self::InProgress { .. } => "in_progress",
            Self::StoreUnavailable { .. } => "store_unavailable",
            Self::Replayed => "token_replayed",
            Self::MissingMessageId => "missing_message_id",
            Self::Misconfigured(_) => "misconfigured",
        }
    }

    /// Extra response headers: `Retry-After` (whole seconds, at least 1), or
    /// `Upstash-NonRetryable-Error: true`.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::InProgress { retry_after_secs } | Self::StoreUnavailable { retry_after_secs } => {
                vec![("retry-after", (*retry_after_secs).max(1).to_string())]
            }
            Self::InvalidPayload {
                non_retryable: true,
                ..
            } => vec![(NON_RETRYABLE_HEADER, "true".to_owned())],
            _ => Vec::new(),
        }
    }

    /// The response body: `{"error":"<code>","message":"<message>"}`.
    pub fn json_body(&self) -> String {
        serde_json::json!({ "error": self.code(), "message": self.to_string() }).to_string()
    }

    /// Whether this rejection says the message must be retried later (every one but a
    /// non-retryable invalid payload).
    pub fn is_retryable(&self) -> bool {
        self.status() != NON_RETRYABLE_STATUS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_headers_and_bodies() {
        let cases = [
            (
                Rejection::Verify(VerifyError::InvalidSignature),
                401,
                "invalid_signature",
            ),
            (
                Rejection::Delivery(DeliveryError::Repeated {
                    header: "upstash-retried",
                }),
                400,
                "invalid_delivery_header",
            ),
            (
                Rejection::PayloadTooLarge { limit: 10 },
                413,
                "payload_too_large",
            ),
            (
                Rejection::InvalidPayload {
                    message: "x".into(),
                    non_retryable: true,
                },
                489,
                "invalid_payload",
            ),
            (
                Rejection::InProgress {
                    retry_after_secs: 30,
                },
                409,
                "in_progress",
            ),
            (
                Rejection::StoreUnavailable {
                    retry_after_secs: 5,
                },
                503,
                "store_unavailable",
            ),
            (Rejection::Replayed, 401, "token_replayed"),
            (Rejection::MissingMessageId, 400, "missing_message_id"),
            (
                Rejection::Misconfigured("no url policy".into()),
                500,
                "misconfigured",
            ),
        ];
        for (rejection, status, code) in cases {
            assert_eq!(rejection.status(), status);
            assert_eq!(rejection.code(), code);
            let body: serde_json::Value = serde_json::from_str(&rejection.json_body()).unwrap();
            assert_eq!(body["error"], code);
            assert_eq!(body["message"], rejection.to_string());
        }
        assert_eq!(
            Rejection::InProgress {
                retry_after_secs: 30
            }
            .headers(),
            vec![("retry-after", "30".to_owned())]
        );
        assert_eq!(
            Rejection::StoreUnavailable {
                retry_after_secs: 0
            }
            .headers(),
            vec![("retry-after", "1".to_owned())]
        );
        assert_eq!(
            Rejection::StoreUnavailable {
                retry_after_secs: u32::MAX
            }
            .headers(),
            vec![("retry-after", u32::MAX.to_string())]
        );
        let dlq = Rejection::InvalidPayload {
            message: "x".into(),
            non_retryable: true,
        };
        assert_eq!(
            dlq.headers(),
            vec![(NON_RETRYABLE_HEADER, "true".to_owned())]
        );
        assert!(!dlq.is_retryable());
        assert!(Rejection::PayloadTooLarge { limit: 1 }.is_retryable());
    }

    #[test]
    fn source_is_the_inner_error() {
        use std::error::Error;
        let r = Rejection::from(VerifyError::BodyMismatch);
        assert_eq!(
            r.source().unwrap().to_string(),
            VerifyError::BodyMismatch.to_string()
        );
    }
}
