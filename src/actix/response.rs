//! Responses a handler returns to steer QStash's retries.

use std::time::Duration;

use actix_web::HttpResponseBuilder;
use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderName, RETRY_AFTER};

use crate::{NON_RETRYABLE_HEADER, NON_RETRYABLE_STATUS};

/// Status 489 with `Upstash-NonRetryable-Error: true`: QStash stops retrying and moves the message
/// to the dead-letter queue. Add a body and finish it (`.json(…)`, `.body(…)`, `.finish()`).
///
/// ```
/// use qstash_receiver::actix::non_retryable;
///
/// let res = non_retryable().body("unknown task");
/// assert_eq!(res.status().as_u16(), 489);
/// assert_eq!(res.headers().get("upstash-nonretryable-error").unwrap(), "true");
/// ```
pub fn non_retryable() -> HttpResponseBuilder {
    let status =
        StatusCode::from_u16(NON_RETRYABLE_STATUS).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
    let mut builder = HttpResponseBuilder::new(status);
    builder.insert_header((HeaderName::from_static(NON_RETRYABLE_HEADER), "true"));
    builder
}

/// `status` (use a non-2xx one: QStash retries only those) with `Retry-After` set to `delay` in
/// whole seconds, rounded up, at least 1 (as the axum `RetryAfter`): QStash waits that long
/// before the next attempt instead of its backoff.
///
/// ```
/// use std::time::Duration;
/// use actix_web::http::StatusCode;
/// use qstash_receiver::actix::retry_after;
///
/// let res = retry_after(StatusCode::SERVICE_UNAVAILABLE, Duration::from_millis(1500)).finish();
/// assert_eq!(res.status(), 503);
/// assert_eq!(res.headers().get("retry-after").unwrap(), "2");
/// let res = retry_after(StatusCode::SERVICE_UNAVAILABLE, Duration::ZERO).finish();
/// assert_eq!(res.headers().get("retry-after").unwrap(), "1");
/// ```
pub fn retry_after(status: StatusCode, delay: Duration) -> HttpResponseBuilder {
    let secs = crate::head::retry_after_secs(delay);
    let mut builder = HttpResponseBuilder::new(status);
    builder.insert_header((RETRY_AFTER, secs.to_string()));
    builder
}
