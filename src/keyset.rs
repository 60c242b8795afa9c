//! Which keys verify a delivery: the default pair, or the pair of the QStash region its
//! `Upstash-Region` header names; and the log lines a choice calls for, each at most once per
//! key set (a key set is replaced whole when keys are set or added).
//!
//! The header is not signed: it only chooses among the user's own key sets, and a token must
//! still match a key of the set chosen. A token signed with region A's keys and sent with
//! `Upstash-Region: B` is tried with B's keys only (or the default keys when B has none), so
//! it is refused.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::keys::{MatchedKey, SigningKeys};

/// The regions QStash runs today, as environment-variable prefixes.
pub(crate) const KNOWN_REGIONS: [&str; 2] = ["EU_CENTRAL_1", "US_EAST_1"];

/// One key pair, and whether a token matched its next key yet (logged once).
pub(crate) struct Pair {
    keys: SigningKeys,
    next_seen: AtomicBool,
}

impl Pair {
    pub(crate) fn new(keys: SigningKeys) -> Self {
        Self {
            keys,
            next_seen: AtomicBool::new(false),
        }
    }

    pub(crate) fn keys(&self) -> &SigningKeys {
        &self.keys
    }
}

impl Clone for Pair {
    fn clone(&self) -> Self {
        Self {
            keys: self.keys.clone(),
            next_seen: AtomicBool::new(self.next_seen.load(Ordering::Relaxed)),
        }
    }
}

/// Why a delivery is verified with the default keys although the key set has region keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    /// No `Upstash-Region` header (or an empty one).
    NoHeader,
    /// A region QStash runs (index into [`KNOWN_REGIONS`]) without keys in this set.
    Known(usize),
    /// A value naming no region of this set and none QStash runs.
    Unknown,
}

impl Fallback {
    /// The flag in [`KeySet::fallbacks`] that says this fallback was logged.
    fn slot(self) -> usize {
        match self {
            Self::NoHeader => 0,
            Self::Unknown => 1,
            Self::Known(i) => 2 + i,
        }
    }
}

/// The keys a verifier uses: the default pair (absent only when built from the environment in
/// multi-region mode), and pairs per region, stored under their environment prefix
/// (`US_EAST_1`).
pub(crate) struct KeySet {
    default: Option<Pair>,
    regions: Vec<(String, Pair)>,
    /// Which fallbacks were logged (see [`Fallback::slot`]).
    fallbacks: [AtomicBool; 2 + KNOWN_REGIONS.len()],
}

impl KeySet {
    /// A set of region pairs (names as environment prefixes) and, optionally, a default pair.
    pub(crate) fn new(default: Option<Pair>, regions: Vec<(String, Pair)>) -> Self {
        Self {
            default,
            regions,
            fallbacks: Default::default(),
        }
    }

    pub(crate) fn default_pair(&self) -> Option<&Pair> {
        self.default.as_ref()
    }

    pub(crate) fn regions(&self) -> &[(String, Pair)] {
        &self.regions
    }

    /// The pair that verifies a delivery whose first `Upstash-Region` value is `header`, and the
    /// region it belongs to (`None`: the default pair). `None` when there is no pair for it: the
    /// delivery is refused.
    ///
    /// Without region pairs, every delivery uses the default pair and the header is ignored.
    /// With region pairs, as QStash's TypeScript SDK does: the pair of the region the header
    /// names (`-` read as `_`, case ignored), else the default pair, a fallback logged once per
    /// kind (no header, an unknown value, each region without keys) per key set.
    pub(crate) fn select(&self, header: Option<&str>) -> Option<(Option<&str>, &Pair)> {
        if self.regions.is_empty() {
            return self.default.as_ref().map(|pair| (None, pair));
        }
        let header = header.map(str::trim).filter(|h| !h.is_empty());
        let fallback = match header {
            None => Fallback::NoHeader,
            Some(header) => {
                if let Some((name, pair)) = self
                    .regions
                    .iter()
                    .find(|(name, _)| region_matches(name, header))
                {
                    return Some((Some(name.as_str()), pair));
                }
                KNOWN_REGIONS
                    .iter()
                    .position(|known| region_matches(known, header))
                    .map_or(Fallback::Unknown, Fallback::Known)
            }
        };
        self.log_fallback(fallback);
        self.default.as_ref().map(|pair| (None, pair))
    }

    /// Logs a fallback to the default keys (or a refusal, without them), once per kind.
    fn log_fallback(&self, fallback: Fallback) {
        let Some(flag) = self.fallbacks.get(fallback.slot()) else {
            return;
        };
        if flag.swap(true, Ordering::Relaxed) {
            return;
        }
        let region;
        let which = match fallback {
            Fallback::NoHeader => "deliveries without an Upstash-Region header",
            Fallback::Unknown => "deliveries whose Upstash-Region names no configured region",
            Fallback::Known(i) => {
                let name = KNOWN_REGIONS.get(i).copied().unwrap_or_default();
                region = format!("deliveries from region {name}, which has no signing keys,");
                region.as_str()
            }
        };
        if self.default.is_some() {
            tracing::warn!("qstash: {which} are verified with the default signing keys");
        } else {
            tracing::warn!(
                "qstash: {which} are refused (invalid_signature): there are no default signing \
                 keys to fall back to"
            );
        }
    }
}

/// Logs, once per pair and key set, that a token matched the pair's next key: QStash rolled
/// its keys, and the configuration should follow. Names no key.
pub(crate) fn note_match(region: Option<&str>, pair: &Pair, matched: MatchedKey) {
    if matched == MatchedKey::Next && !pair.next_seen.swap(true, Ordering::Relaxed) {
        tracing::info!(
            keys = region.unwrap_or("default"),
            "qstash: a delivery was signed with the next signing key: QStash's keys were rolled; \
             make the next key the current one and set the new next key"
        );
    }
}

/// Whether an `Upstash-Region` value (`us-east-1`) names the region stored as `US_EAST_1`.
pub(crate) fn region_matches(stored: &str, header: &str) -> bool {
    let header = header.trim();
    stored.len() == header.len()
        && stored.bytes().zip(header.bytes()).all(|(s, h)| {
            let h = if h == b'-' {
                b'_'
            } else {
                h.to_ascii_uppercase()
            };
            s == h
        })
}
