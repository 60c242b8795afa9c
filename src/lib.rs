//! Receive [Upstash QStash](https://upstash.com/docs/qstash) deliveries in Rust web servers.
//!
//! QStash POSTs (or GETs, PUTs…) messages, schedules and callbacks to public URLs and signs each
//! delivery with a JWT in the `Upstash-Signature` header. Anyone can call a public URL, so a
//! receiver that does not verify is an open door. This crate verifies strictly and fast, over the
//! raw body bytes, against the current and the next signing key, and tells precisely what failed.
//!
//! # Quick start
//!
//! ```
//! # #[cfg(feature = "test-utils")] {
//! use qstash_receiver::Verifier;
//! # use qstash_receiver::test_utils::Signer;
//! # unsafe { std::env::set_var("QSTASH_CURRENT_SIGNING_KEY", "sig_current");
//! #          std::env::set_var("QSTASH_NEXT_SIGNING_KEY", "sig_next"); }
//!
//! // Keys from QSTASH_CURRENT_SIGNING_KEY / QSTASH_NEXT_SIGNING_KEY (or QStash's multi-region
//! // variables); missing keys are an error, never a disabled check.
//! let verifier = Verifier::from_env()?;
//!
//! # let body = br#"{"task":"mail"}"#;
//! # let signature = Signer::new("sig_current").sign("https://example.com/api/jobs", body);
//! // `signature`: the Upstash-Signature header; `body`: the raw body bytes, unparsed.
//! let claims = verifier.verify(&signature, body, Some("https://example.com/api/jobs"))?;
//! println!("delivered to {} (key: {:?})", claims.url(), claims.matched_key());
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Features
//!
//! | feature | what it adds |
//! |---|---|
//! | *(none)* | the core: [`SigningKeys`], [`Verifier`], [`Claims`], [`VerifyError`], [`Delivery`], [`CallbackEvent`], [`Receiver`], [`Rejection`], [`UrlPolicy`]; no framework, no async runtime |
//! | `tower` | [`tower::QStashLayer`]: verification as a tower `Layer`, for any tower/hyper stack |
//! | `axum` | `tower` + axum 0.8 extractors: [`axum::Verified`], [`axum::Callback`], [`axum::FailureCallback`], `Claims`/`Delivery` from the layer, response helpers |
//! | `actix-web` | [`actix::QStashMiddleware`], extractors, [`actix::QStashGuard`] (actix-web 4) |
//! | `redis` | `dedup::RedisStore`: deduplication shared by several instances through Redis |
//! | `test-utils` | [`test_utils`]: tokens, deliveries, retries and callback events signed exactly as QStash makes them, turned into axum/tower or actix-web test requests in one call |
//! | `metrics` | counters of deliveries (verified, refused by code, duplicates, store errors, handler answers) through the `metrics` facade: see [`observe`] |
//! | `cli` | the `qstash-receiver` command: `sign` a delivery, `explain` why a token is refused (`cargo install qstash-receiver --features cli`) |
//!
//! # Verification policy
//!
//! - The token is a compact JWS of three strict base64url segments; `alg` must be `HS256`
//!   (`none`, `HS512`, `RS256`… are refused, as is a `crit` header).
//! - The MAC (HMAC-SHA256, keyed with the key string's UTF-8 bytes) is checked with the current
//!   key, then, only on a MAC mismatch, with the next key, in constant time. Once a key matches,
//!   every later failure is reported as itself (expired, URL mismatch, body mismatch…).
//! - `iss` must be `Upstash`; `exp` is required (expired when `exp <= now - leeway`); `nbf` may be
//!   negative (QStash sends Go's zero time); `aud: ""` passes; claim types are strict.
//! - `sub` must equal the expected URL exactly, when one is given.
//! - base64url(SHA-256(raw body)) must equal the `body` claim, padding ignored, in constant time.
//!
//! # Logging
//!
//! The adapters log each refusal with `tracing`, alike in every framework: its code, status and
//! `Upstash-Message-Id` (escaped, at most 256 bytes), never the token, a key or the body.
//!
//! - `debug`: refused before the token verified: anyone can send those.
//! - `warn`: a verified token refused (URL, body, delivery header, payload, replay); `info`: the
//!   body could not be read, or the message is being processed elsewhere.
//! - `error`: a misconfigured receiver (shown only to tokens signed with your keys), the dedup
//!   store down, or a verified body over the limit (the line says how to raise it).
//!
//! Each delivery runs in a `qstash.delivery` span with OpenTelemetry field names (message id,
//! attempt, region, matched key, status, refusal code); see [`observe`].
//!
//! # Why not `jsonwebtoken`
//!
//! The core implements the narrow HS256 path on `hmac`, `sha2`, `base64` and `subtle` instead of
//! a general JWT library. `jsonwebtoken` 12, configured as well as it allows (HS256 pinned,
//! audience check off, our own `nbf`/`exp` checks), still refuses a token whose header repeats
//! `alg` (JSON's last-member-wins, which QStash's own SDKs accept), cannot say which key failed
//! how, and costs more per call than hashing the body: the `verify` benchmark measures it beside
//! this crate (see the README's Performance section).
#![cfg_attr(docsrs, feature(doc_cfg))]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

#[cfg(any(feature = "tower", feature = "actix-web"))]
mod buffer;
mod callback;
mod claims;
mod delivery;
mod env;
mod error;
#[cfg_attr(not(any(feature = "tower", feature = "actix-web")), allow(dead_code))]
mod head;
mod keys;
mod keyset;
#[cfg_attr(not(any(feature = "tower", feature = "actix-web")), allow(dead_code))]
mod log;
mod receiver;
mod rejection;
mod url;
mod verify;

#[cfg(feature = "test-utils")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-utils")))]
pub mod test_utils;

pub mod dedup;
pub mod observe;

#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod axum;

#[cfg(feature = "actix-web")]
#[cfg_attr(docsrs, doc(cfg(feature = "actix-web")))]
pub mod actix;

/// The request URI as it reached the outermost router, when a router recorded it before
/// stripping a prefix (axum's `OriginalUri`): the tower layer reads the path from it. Wired
/// here so that the tower adapter knows no framework above it.
#[cfg(feature = "tower")]
pub(crate) fn original_uri(extensions: &http::Extensions) -> Option<&http::Uri> {
    #[cfg(feature = "axum")]
    return extensions
        .get::<::axum::extract::OriginalUri>()
        .map(|o| &o.0);
    #[cfg(not(feature = "axum"))]
    {
        let _ = extensions;
        None
    }
}

/// Lets a framework's own body extractors behind the tower layer read the whole verified body
/// (at most the receiver's `limit`): axum's `DefaultBodyLimit` (2 MB unless configured) would
/// otherwise refuse a verified delivery between it and the receiver's limit with 413.
#[cfg(feature = "tower")]
pub(crate) fn allow_verified_body<B>(req: &mut http::Request<B>, limit: usize) {
    #[cfg(feature = "axum")]
    ::axum::extract::DefaultBodyLimit::max(limit).apply(req);
    #[cfg(not(feature = "axum"))]
    let _ = (req, limit);
}

pub use callback::{CallbackEvent, FailureCallbackEvent};
pub use claims::Claims;
pub use delivery::{
    CALLER_IP_HEADER, Delivery, DeliveryError, MESSAGE_ID_HEADER, REGION_HEADER, RETRIED_HEADER,
    SCHEDULE_ID_HEADER, SIGNATURE_HEADER, TOPIC_NAME_HEADER,
};
pub use env::REGION_ENV;
pub use error::VerifyError;
pub use keys::{CURRENT_KEY_ENV, KeyError, MatchedKey, NEXT_KEY_ENV, SigningKeys};
pub use receiver::{DEFAULT_MAX_BODY_BYTES, Receiver};
pub use rejection::{NON_RETRYABLE_HEADER, NON_RETRYABLE_STATUS, Rejection};
pub use url::{RequestTarget, UrlPolicy, UrlPolicyError};
pub use verify::{VerifiedToken, Verifier};

/// The README's code, compiled as doctests so that it stays true.
#[cfg(all(doctest, feature = "axum", feature = "actix-web"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
