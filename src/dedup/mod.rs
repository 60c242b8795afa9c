//! Deduplication by message id, with leases: each QStash message is processed to success once,
//! even though QStash delivers at least once and several instances receive in parallel.
//!
//! QStash retries a message (same `Upstash-Message-Id`, new token) after any non-2xx answer or
//! a timeout, and may deliver it again even after a 2xx (a lost response, a crash). [`Dedup`]
//! claims the message id in a [`DedupStore`] before the handler runs and settles the claim from
//! the handler's answer:
//!
//! The claim is keyed on the message id **and** the token's signed `body` claim
//! (`msg:<message id>:<body hash>`): the message id is not signed, so binding it to what QStash
//! signed means a captured token sent under another message's id claims a key of its own and can
//! neither complete nor block that message. QStash's retries (same id, same body) share the key.
//!
//! | the delivery… | [`Dedup::begin`] says | the adapter answers |
//! |---|---|---|
//! | has no `Upstash-Message-Id` | [`Begin::Refuse`] with [`Rejection::MissingMessageId`] | `400` `missing_message_id`; QStash always sends one, so this is not QStash |
//! | carries a token (`jti`) already accepted, and the replay guard is on (the default) | [`Begin::Refuse`] with [`Rejection::Replayed`] | `401` `token_replayed`; QStash signs every attempt anew, so this is a replay |
//! | is new (or released, or its lease expired) | [`Begin::Run`] with a [`Lease`] | the handler's response; a 2xx **completes** the id (kept for the retention), even if the request is dropped while the completion is written; anything else, an error, a panic or a request dropped while the handler runs **releases** it so QStash's retry runs |
//! | is completed | [`Begin::Duplicate`] | `200`, header [`DUPLICATE_HEADER`]` = true`, [`duplicate_json_body`]; the handler does not run |
//! | is held by another request or instance | [`Begin::Refuse`] with [`Rejection::InProgress`] | `409` + `Retry-After`; QStash comes back once the first attempt finished or failed |
//! | meets a store down or failing | [`Begin::Refuse`] with [`Rejection::StoreUnavailable`] (fail closed, the default) or [`Begin::RunUnguarded`] (fail open) | `503` + `Retry-After`: nothing is lost, QStash retries |
//!
//! Dedup needs the handler's response (2xx or not), so it runs in the tower layer and the
//! actix-web middleware, around the handler; the standalone extractors cannot see the response
//! and do not deduplicate. Adapters call [`Dedup::begin`] after the body is verified, run the
//! handler on [`Begin::Run`], then [`Lease::finish`] with the response status.
//!
//! # Defaults and why
//!
//! - Lease TTL [`DEFAULT_LEASE_TTL`] = 2 h 1 min: above QStash's longest response timeout on
//!   its free (15 min) and pay-as-you-go (2 h) plans, so a handler still running when QStash gives
//!   up and retries is never run twice. A crashed instance blocks its messages until the lease
//!   expires; the `409`'s `Retry-After` is the lease's remaining time, so QStash's retry comes
//!   back just then. Lower it to your handlers' real worst case (or your `Upstash-Timeout`).
//! - Retention [`DEFAULT_RETENTION`] = 7 days: QStash's backoff is `min(1 day, e^(2.5·n))` s,
//!   so its default schedules (3 to 5 retries) span at most about 31 hours plus the attempts'
//!   timeouts, and a message re-sent after a 2xx arrives within that window: 7 days covers them
//!   with a wide margin, and up to about 10 retries.
//! - Store failures fail closed: `503` with `Retry-After` [`DEFAULT_STORE_RETRY_AFTER`]. Every
//!   `Retry-After` is whole seconds, at least 1 and at most [`MAX_RETRY_AFTER`] (1 day, the
//!   longest QStash honours), whatever duration is configured.
//! - The replay guard is **on**: a message id is not signed, a token's `jti` is. Each accepted
//!   `jti` is remembered (in Redis by the same script as the claim, shared by every instance;
//!   see [`DedupStore::claim_guarded`]) until its token can no longer verify: its `exp` plus
//!   the verifier's leeway (which [`Receiver::dedup`] passes on; see
//!   [`Dedup::verifier_leeway`]) plus a second. A second request with the same
//!   token is refused, under any message id, so whoever holds a captured delivery (request logs
//!   that keep headers, a proxy you do not control) cannot run the handler again. QStash signs
//!   every attempt with a new token, so it is never refused. [`MemoryStore`] never evicts a
//!   live guard entry or lease: full of them, it fails closed (`503`). A token without `jti`
//!   (only the holder of your signing key can make one; QStash's always have one) runs under
//!   its message id's lease, without the guard. Turn the guard off with
//!   [`Dedup::replay_guard`]`(false)` only if your handlers are idempotent on the body itself.
//! - A delivery without `Upstash-Message-Id` is refused (`400`), never run unguarded.
//!
//! # Migrating from earlier versions
//!
//! - `Dedup::replay_guard(true)` is now the default: the call can go. To keep the old
//!   behaviour, call `replay_guard(false)` (not recommended).
//! - [`REPLAY_GUARD_MARGIN`] is deprecated: the guard remembers a token until `exp` + the
//!   verifier's leeway. If you call [`Dedup::begin`] yourself (not through [`Receiver::dedup`]),
//!   give it your verifier's leeway with [`Dedup::verifier_leeway`].
//! - [`UnguardedReason::NoMessageId`] is no longer produced: such a delivery is refused with
//!   [`Rejection::MissingMessageId`].
//! - Store keys changed from `msg:<id>` to `msg:<id>:<body hash>`: ids completed before the
//!   upgrade are not seen as completed by the new version (a message re-sent across the upgrade
//!   may run once more).
//! - With a slow store, a lease whose handler answered 2xx now completes even when the request
//!   is dropped meanwhile (a timeout above the layer, a client gone), instead of being released.
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
//! let first = Signer::new("sig_current").delivery_with_id(url, b"{}", "msg_1", 0);
//! let retry = Signer::new("sig_current").delivery_with_id(url, b"{}", "msg_1", 1);
//!
//! for (attempt, delivery) in [first, retry].into_iter().enumerate() {
//!     let claims = verifier.verify(&delivery.signature, b"{}", Some(url))?;
//!     let meta = Delivery::from_headers(delivery.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())))?;
//!     match dedup.begin(&meta, &claims).await {
//!         Begin::Run(lease) => {
//!             assert_eq!(attempt, 0);
//!             let status = 200; // run the handler here
//!             let _ = lease.finish(status).await; // 2xx: completed
//!         }
//!         Begin::Duplicate { message_id } => {
//!             assert_eq!((attempt, message_id.as_str()), (1, "msg_1")); // answer 200 + qstash-duplicate
//!         }
//!         Begin::Refuse(rejection) => unreachable!("{rejection}"),
//!         Begin::RunUnguarded { .. } => unreachable!(),
//!         _ => unreachable!(),
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
mod order;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
mod redis;
mod store;
#[cfg(all(test, feature = "test-utils"))]
mod tests;

use std::time::Duration;

#[cfg(doc)]
use crate::{Receiver, Rejection};

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

/// Default lease TTL: 2 h 1 min, above QStash's longest response timeout on the free (15 min)
/// and pay-as-you-go (2 h) plans. See the [module docs](self).
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2 * 3600 + 60);
/// Default retention of a completed message id: 7 days, beyond QStash's retry schedule.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default `Retry-After` of a `503` when the store fails: 10 seconds.
pub const DEFAULT_STORE_RETRY_AFTER: Duration = Duration::from_secs(10);
/// The longest `Retry-After` QStash honours (1 day); longer values fall back to its backoff.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long past its `exp` the replay guard used to remember a token's `jti`. No longer used:
/// the guard now remembers a `jti` until the token can no longer verify (`exp` plus the
/// verifier's leeway, see [`Dedup::replay_guard_ttl`]).
#[deprecated(
    note = "the replay guard remembers a jti until exp + the verifier's leeway; see Dedup::replay_guard_ttl"
)]
pub const REPLAY_GUARD_MARGIN: Duration = Duration::from_secs(300);

/// TTLs are capped at 10 years: keeps `Instant` arithmetic and Redis' `PX` in range.
pub(crate) const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The JSON body of an answer to an already completed message:
/// `{"duplicate":true,"messageId":"<id>"}`.
pub fn duplicate_json_body(message_id: &str) -> String {
    serde_json::json!({ "duplicate": true, "messageId": message_id }).to_string()
}
