//! Deduplication by message id, with leases: each QStash message is processed to success once,
//! although QStash delivers at least once (a retry after any non-2xx or timeout, sometimes a
//! second delivery after a 2xx) and several instances may receive in parallel.
//!
//! [`Dedup`] runs in the tower layer and the actix-web middleware, around the handler (the
//! standalone extractors cannot see the response and do not deduplicate): once the body is
//! verified, [`Dedup::begin`] claims the message id in a [`DedupStore`] ([`MemoryStore`] per
//! process, `RedisStore` shared by instances), the handler runs on [`Begin::Run`], and
//! [`Lease::finish`] settles the claim with the handler's status.
//!
//! The claim is keyed on the message id **and** the token's signed `body` claim
//! (`msg:<message id>:<body hash>`): the message id is not signed, so a captured token sent
//! under another message's id claims a key of its own and can neither complete nor block that
//! message. QStash's retries (same id, same body) share the key.
//!
//! | the delivery… | [`Dedup::begin`] says | the adapter answers |
//! |---|---|---|
//! | has no `Upstash-Message-Id` (QStash always sends one) | [`Begin::Refuse`] with [`Rejection::MissingMessageId`] | `400` `missing_message_id` |
//! | carries a token (`jti`) already accepted, replay guard on (the default) | [`Begin::Refuse`] with [`Rejection::Replayed`] | `401` `token_replayed` |
//! | is new (or released, or its lease expired) | [`Begin::Run`] with a [`Lease`] | the handler's response; a 2xx **completes** the id (kept for the retention), even if the request is dropped meanwhile; anything else, a panic or a request dropped while the handler runs **releases** it, so QStash's retry runs |
//! | is completed | [`Begin::Duplicate`] | `200`, [`DUPLICATE_HEADER`]` = true`, [`duplicate_json_body`]; the handler does not run |
//! | is held by another request or instance | [`Begin::Refuse`] with [`Rejection::InProgress`] | `409` + `Retry-After` |
//! | meets a store down or failing | [`Begin::Refuse`] with [`Rejection::StoreUnavailable`] (fail closed, the default) or [`Begin::RunUnguarded`] ([`OnStoreError::FailOpen`]) | `503` + `Retry-After`: QStash retries |
//!
//! # Defaults and why
//!
//! - Lease TTL [`DEFAULT_LEASE_TTL`] = 2 h 1 min: above QStash's longest response timeout
//!   (15 min free, 2 h pay-as-you-go), so a handler still running when QStash retries is never
//!   run twice. A crashed instance blocks its messages until the lease expires; the `409`'s
//!   `Retry-After` is the lease's remaining time. Lower it to your handlers' real worst case.
//! - Retention [`DEFAULT_RETENTION`] = 7 days: QStash's backoff is `min(1 day, e^(2.5·n))` s,
//!   so its default schedules span at most about 31 hours; 7 days covers up to about 10 retries.
//! - Store failures fail closed: `503` with `Retry-After` [`DEFAULT_STORE_RETRY_AFTER`]. Every
//!   `Retry-After` is whole seconds, from 1 to [`MAX_RETRY_AFTER`].
//! - The replay guard is **on**: a token's `jti` (signed, unlike the message id) is remembered
//!   with the claim until the token can no longer verify ([`Dedup::replay_guard_ttl`]); the same
//!   token again is refused under any message id, so whoever holds a captured delivery (logs
//!   that keep headers, a proxy) cannot run the handler again. QStash signs every attempt anew,
//!   so it is never refused. A token without `jti` (only your signing key can make one) runs
//!   unguarded, under its message id's lease. Turn the guard off ([`Dedup::replay_guard`]) only
//!   if your handlers are idempotent on the body itself.
//!
//! Upgrading from an earlier version (new defaults, new store keys): see `CHANGELOG.md`.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "test-utils")] {
//! use std::sync::Arc;
//! use qstash_receiver::dedup::{Begin, Dedup, MemoryStore};
//! use qstash_receiver::{Delivery, SigningKeys, Verifier, test_utils::Signer};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! let dedup = Dedup::new(Arc::new(MemoryStore::new()));
//! let verifier = Verifier::new(SigningKeys::new("sig_current", "sig_next")?);
//!
//! let url = "https://app.example.com/jobs";
//! for attempt in 0..2 {
//!     // QStash's first attempt at `msg_1`, then a retry (a new token).
//!     let delivery = Signer::new("sig_current").delivery_with_id(url, b"{}", "msg_1", attempt);
//!     let claims = verifier.verify(&delivery.signature, b"{}", Some(url))?;
//!     let meta = Delivery::from_headers(delivery.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))?;
//!     match dedup.begin(&meta, &claims).await {
//!         Begin::Run(lease) => {
//!             assert_eq!(attempt, 0);
//!             lease.finish(200).await?; // run the handler here: its 2xx completes the id
//!         }
//!         // Answer 200 + `qstash-duplicate: true`; the handler does not run.
//!         Begin::Duplicate { message_id } => assert_eq!((attempt, &*message_id), (1, "msg_1")),
//!         other => unreachable!("{other:?}"),
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod lease;
mod memory;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
mod redis;
mod store;
#[cfg(all(test, feature = "test-utils"))]
mod tests;

use std::time::Duration;

#[cfg(doc)]
use crate::Rejection;

pub use config::{Begin, Dedup, InProgressRetryAfter, OnStoreError, UnguardedReason};
pub use lease::{Lease, RELEASE_RETRY_DELAY};
pub use memory::{DEFAULT_MEMORY_CAPACITY, MemoryStore};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{DEFAULT_KEY_PREFIX, RECONNECT_RETRIES, RedisStore};
pub use store::{
    ClaimOutcome, DedupStore, GuardedClaim, LeaseOutcome, LeaseToken, StoreError, StoreFuture,
};

/// The response header that marks an answer to an already completed message: `qstash-duplicate`.
pub const DUPLICATE_HEADER: &str = "qstash-duplicate";
/// The value of [`DUPLICATE_HEADER`]: `true`.
pub const DUPLICATE_HEADER_VALUE: &str = "true";
/// The status of an answer to an already completed message: `200` (QStash stops retrying).
pub const DUPLICATE_STATUS: u16 = 200;

/// Default lease TTL: 2 h 1 min (see the [module docs](self#defaults-and-why)).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2 * 3600 + 60);
/// Default retention of a completed message id: 7 days, beyond QStash's retry schedule.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default `Retry-After` of a `503` when the store fails: 10 seconds.
pub const DEFAULT_STORE_RETRY_AFTER: Duration = Duration::from_secs(10);
/// The longest `Retry-After` QStash honours (1 day); longer values fall back to its backoff.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long past its `exp` the replay guard used to remember a `jti`; no longer used.
#[deprecated(note = "no longer used: see Dedup::replay_guard_ttl")]
pub const REPLAY_GUARD_MARGIN: Duration = Duration::from_secs(300);

/// TTLs are capped at 10 years: keeps `Instant` arithmetic and Redis' `PX` in range.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The JSON body of an answer to an already completed message:
/// `{"duplicate":true,"messageId":"<id>"}`.
pub fn duplicate_json_body(message_id: &str) -> String {
    serde_json::json!({ "duplicate": true, "messageId": message_id }).to_string()
}
