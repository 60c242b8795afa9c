//! Signing keys: the current and the next key QStash signs with.
//!
//! ```
//! use qstash_receiver::SigningKeys;
//!
//! let keys = SigningKeys::new("sig_current_key", "sig_next_key")?;
//! // Debug output never shows a key.
//! assert!(!format!("{keys:?}").contains("sig_current_key"));
//! # Ok::<(), qstash_receiver::KeyError>(())
//! ```

use std::fmt;

use hmac::{Hmac, KeyInit};
use sha2::Sha256;

/// The environment variable holding the current signing key, as every official SDK names it.
pub const CURRENT_KEY_ENV: &str = "QSTASH_CURRENT_SIGNING_KEY";
/// The environment variable holding the next signing key, as every official SDK names it.
pub const NEXT_KEY_ENV: &str = "QSTASH_NEXT_SIGNING_KEY";

/// The local development server's public current key (`qstash dev`).
pub(crate) const DEV_CURRENT_KEY: &str = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r";
/// The local development server's public next key (`qstash dev`).
pub(crate) const DEV_NEXT_KEY: &str = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs";

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Which of the two keys a token's MAC matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchedKey {
    /// The current signing key.
    Current,
    /// The next signing key (the token was signed after a key roll this process has not seen,
    /// or during the rotation window).
    Next,
}

/// HMAC-SHA256 keyed with `key`'s bytes, its pads hashed once: clone it for each MAC.
pub(crate) fn hmac(key: &[u8]) -> HmacSha256 {
    // HMAC accepts a key of any length (RFC 2104): `new_from_slice` never fails for it.
    #[allow(clippy::expect_used)]
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// The pair of keys a QStash receiver verifies against: the *current* key, and the *next* key
/// that becomes current when the keys are rolled.
///
/// Holding both keeps a receiver working through one roll. A key is the signing key string's
/// UTF-8 bytes (`sig_` prefix included, not base64-decoded), as QStash uses it.
///
/// `Debug` shows no key material.
#[derive(Clone)]
pub struct SigningKeys {
    current: HmacSha256,
    next: HmacSha256,
    dev: bool,
}

impl SigningKeys {
    /// Builds a key pair. An empty key is refused: it would silently disable a check.
    ///
    /// A key equal to one of the local development server's public keys (see
    /// [`SigningKeys::qstash_dev`]) is accepted, but flagged ([`SigningKeys::is_dev`]) and
    /// reported with a `tracing` warning here, once: anyone can sign deliveries with it.
    ///
    /// ```
    /// # use qstash_receiver::{SigningKeys, KeyError};
    /// assert!(matches!(SigningKeys::new("", "sig_next"), Err(KeyError::Empty { which: "current" })));
    /// // The dev server's keys, pasted in: flagged, wherever they come from.
    /// let pasted = SigningKeys::new("sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r", "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs")?;
    /// assert!(pasted.is_dev());
    /// # Ok::<(), KeyError>(())
    /// ```
    pub fn new(current: impl AsRef<str>, next: impl AsRef<str>) -> Result<Self, KeyError> {
        let (current, next) = (current.as_ref(), next.as_ref());
        if current.is_empty() {
            return Err(KeyError::Empty { which: "current" });
        }
        if next.is_empty() {
            return Err(KeyError::Empty { which: "next" });
        }
        let dev = is_dev_key(current) || is_dev_key(next);
        if dev {
            warn_dev_keys();
        }
        Ok(Self {
            current: hmac(current.as_bytes()),
            next: hmac(next.as_bytes()),
            dev,
        })
    }

    /// Reads `QSTASH_CURRENT_SIGNING_KEY` and `QSTASH_NEXT_SIGNING_KEY`: one key pair, for a
    /// receiver in one QStash region.
    ///
    /// The error names the variable that is missing, empty or not Unicode; values are trimmed.
    /// Missing keys are an error, never a disabled check nor the development keys. For
    /// QStash's multi-region setup, use [`Verifier::from_env`](crate::Verifier::from_env).
    pub fn from_env() -> Result<Self, KeyError> {
        Self::from_env_vars(CURRENT_KEY_ENV.to_owned(), NEXT_KEY_ENV.to_owned())
    }

    /// Reads the key pair of one QStash region: for `"US-EAST-1"`, the variables
    /// `US_EAST_1_QSTASH_CURRENT_SIGNING_KEY` and `US_EAST_1_QSTASH_NEXT_SIGNING_KEY`
    /// (the region upper-cased, `-` turned into `_`), as the official SDKs name them.
    ///
    /// To verify every region's deliveries, use [`Verifier::from_env`](crate::Verifier::from_env).
    pub fn from_env_region(region: &str) -> Result<Self, KeyError> {
        let prefix = region_env_prefix(region);
        Self::from_env_vars(
            format!("{prefix}_{CURRENT_KEY_ENV}"),
            format!("{prefix}_{NEXT_KEY_ENV}"),
        )
    }

    fn from_env_vars(current_var: String, next_var: String) -> Result<Self, KeyError> {
        let current = required(process_env(&current_var)?, current_var)?;
        let next = required(process_env(&next_var)?, next_var)?;
        Self::new(current, next)
    }

    /// The local development server's (`qstash dev`) fixed keys.
    ///
    /// **Development only**: these keys are public, anyone can sign with them. Never use them in
    /// production nor as a fallback for missing keys. Building them logs a warning.
    pub fn qstash_dev() -> Self {
        warn_dev_keys();
        Self {
            current: hmac(DEV_CURRENT_KEY.as_bytes()),
            next: hmac(DEV_NEXT_KEY.as_bytes()),
            dev: true,
        }
    }

    /// Whether either key is one of the local development server's public keys (built by
    /// [`SigningKeys::qstash_dev`], or given to [`SigningKeys::new`] or read from the
    /// environment): then anyone can sign deliveries these keys accept.
    pub fn is_dev(&self) -> bool {
        self.dev
    }

    /// The MAC state of key `which`.
    pub(crate) fn key(&self, which: MatchedKey) -> &HmacSha256 {
        match which {
            MatchedKey::Current => &self.current,
            MatchedKey::Next => &self.next,
        }
    }
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeys")
            .field("current", &"[redacted]")
            .field("next", &"[redacted]")
            .field("dev", &self.dev)
            .finish()
    }
}

/// The environment-variable prefix of a region: `"us-east-1"` → `"US_EAST_1"`.
pub(crate) fn region_env_prefix(region: &str) -> String {
    region
        .trim()
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

/// Whether `key` is one of the development server's public keys.
fn is_dev_key(key: &str) -> bool {
    key == DEV_CURRENT_KEY || key == DEV_NEXT_KEY
}

/// The warning logged whenever keys holding a development key are built.
fn warn_dev_keys() {
    tracing::warn!(
        "qstash: these signing keys are the public keys of the local QStash development server \
         (`qstash dev`): anyone can sign deliveries they accept; never use them in production"
    );
}

/// One environment variable: `Ok(None)` when it is not set.
pub(crate) fn process_env(var: &str) -> Result<Option<String>, KeyError> {
    match std::env::var(var) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(KeyError::NotUnicodeEnv {
            var: var.to_owned(),
        }),
    }
}

/// A variable's value, trimmed: `Ok(None)` when it is not set, an error when it is empty (or
/// only whitespace).
pub(crate) fn trimmed(value: Option<String>, var: &str) -> Result<Option<String>, KeyError> {
    match value {
        None => Ok(None),
        Some(value) => match value.trim() {
            "" => Err(KeyError::EmptyEnv {
                var: var.to_owned(),
            }),
            trimmed => Ok(Some(trimmed.to_owned())),
        },
    }
}

/// A variable's value, trimmed; missing or empty is an error naming the variable.
pub(crate) fn required(value: Option<String>, var: String) -> Result<String, KeyError> {
    trimmed(value, &var)?.ok_or(KeyError::MissingEnv { var })
}

/// Why a [`SigningKeys`] could not be built. Never contains a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A key given to [`SigningKeys::new`] is empty.
    #[error("the {which} signing key is empty")]
    Empty {
        /// `"current"` or `"next"`.
        which: &'static str,
    },
    /// An environment variable is not set.
    #[error("environment variable {var} is not set")]
    MissingEnv {
        /// The variable's name.
        var: String,
    },
    /// An environment variable is set but empty (or only whitespace).
    #[error("environment variable {var} is empty")]
    EmptyEnv {
        /// The variable's name.
        var: String,
    },
    /// An environment variable is not valid Unicode.
    #[error("environment variable {var} is not valid unicode")]
    NotUnicodeEnv {
        /// The variable's name.
        var: String,
    },
    /// `QSTASH_REGION` names no QStash region ([`Verifier::from_env`](crate::Verifier::from_env)).
    #[error("environment variable QSTASH_REGION is {value:?}: expected EU_CENTRAL_1 or US_EAST_1")]
    UnknownRegion {
        /// The variable's value (at most 64 characters of it).
        value: String,
    },
    /// One key of a pair is set, the other is not ([`Verifier::from_env`](crate::Verifier::from_env)
    /// with `QSTASH_REGION` set): a half-configured region is a mistake, never skipped.
    #[error(
        "environment variable {missing} is not set, but {present} is: set both keys of the pair"
    )]
    IncompletePair {
        /// The variable that is set.
        present: String,
        /// The variable that is missing.
        missing: String,
    },
    /// `QSTASH_REGION` is set, but no key pair is: neither a region's
    /// (`EU_CENTRAL_1_QSTASH_CURRENT_SIGNING_KEY`…) nor the default one
    /// ([`Verifier::from_env`](crate::Verifier::from_env)).
    #[error(
        "QSTASH_REGION is set but no signing keys are: set EU_CENTRAL_1_QSTASH_CURRENT_SIGNING_KEY \
         and EU_CENTRAL_1_QSTASH_NEXT_SIGNING_KEY, the US_EAST_1_ pair, or the unprefixed pair"
    )]
    NoKeys,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_keys_are_refused() {
        assert_eq!(
            SigningKeys::new("", "b").err(),
            Some(KeyError::Empty { which: "current" })
        );
        assert_eq!(
            SigningKeys::new("a", "").err(),
            Some(KeyError::Empty { which: "next" })
        );
        assert!(SigningKeys::new("a", "b").is_ok());
    }

    #[test]
    fn debug_redacts_keys() {
        let keys = SigningKeys::new("sig_secretcurrent", "sig_secretnext").unwrap();
        let debug = format!("{keys:?}");
        assert!(!debug.contains("secret"), "{debug}");
        assert!(debug.contains("[redacted]"));
    }

    #[test]
    fn dev_keys_are_flagged() {
        assert!(SigningKeys::qstash_dev().is_dev());
        assert!(!SigningKeys::new("a", "b").unwrap().is_dev());
    }

    #[test]
    fn region_prefix() {
        assert_eq!(region_env_prefix("us-east-1"), "US_EAST_1");
        assert_eq!(region_env_prefix("EU-CENTRAL-1"), "EU_CENTRAL_1");
    }
}
