//! Why a delivery's signature was refused.

/// Why [`Verifier::verify`](crate::Verifier::verify) refused a token.
///
/// One variant per cause. Messages never contain a key, the token or the body; a URL mismatch
/// names both URLs, and an unsupported algorithm or a wrong issuer shows (a bounded prefix of)
/// the offending value, which is never secret.
///
/// Every variant maps to HTTP 401 in the adapters; [`VerifyError::code`] is a stable,
/// machine-readable name for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The request carries no `Upstash-Signature` header (produced by the adapters).
    #[error("missing upstash-signature header")]
    MissingSignature,
    /// The token is not a compact JWS of three strict base64url segments holding JSON objects.
    #[error("malformed signature token: {0}")]
    Malformed(&'static str),
    /// The token's header names an algorithm other than `HS256`, or none.
    #[error("unsupported signature algorithm {0:?}: only HS256 is accepted")]
    UnsupportedAlgorithm(String),
    /// The token's header has a `crit` member (RFC 7515 §4.1.11): extensions are not supported.
    #[error("token header has a crit member: extensions are not supported")]
    CriticalHeader,
    /// Neither the current nor the next key produces the token's MAC.
    #[error("invalid signature: neither the current nor the next signing key matches")]
    InvalidSignature,
    /// The token expired (`exp <= now - leeway`).
    #[error("token expired at {exp} (unix seconds)")]
    Expired {
        /// The token's `exp` claim.
        exp: i64,
    },
    /// The token is not valid yet (`nbf > now + leeway`).
    #[error("token not valid before {nbf} (unix seconds)")]
    NotYetValid {
        /// The token's `nbf` claim.
        nbf: i64,
    },
    /// The `iss` claim is not `Upstash`.
    #[error("wrong issuer {found:?}: expected \"Upstash\"")]
    WrongIssuer {
        /// The token's issuer (at most 64 characters of it).
        found: String,
    },
    /// The `sub` claim is not the expected URL (compared exactly).
    #[error("url mismatch: token is for {found:?}, expected {expected:?}")]
    UrlMismatch {
        /// The URL the receiver expected.
        expected: String,
        /// The token's `sub` claim (at most 2048 characters of it).
        found: String,
    },
    /// The SHA-256 of the raw body is not the token's `body` claim.
    #[error("body hash mismatch: the body is not the one that was signed")]
    BodyMismatch,
    /// A required claim is absent.
    #[error("missing claim {0:?}")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type (a string where a number is required, a float `exp`…).
    #[error("claim {0:?} has the wrong type")]
    InvalidClaim(&'static str),
}

impl VerifyError {
    /// A stable, machine-readable name for the cause, used in the adapters' JSON rejections.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingSignature => "missing_signature",
            Self::Malformed(_) => "malformed_token",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::CriticalHeader => "unsupported_header",
            Self::InvalidSignature => "invalid_signature",
            Self::Expired { .. } => "token_expired",
            Self::NotYetValid { .. } => "token_not_yet_valid",
            Self::WrongIssuer { .. } => "wrong_issuer",
            Self::UrlMismatch { .. } => "url_mismatch",
            Self::BodyMismatch => "body_mismatch",
            Self::MissingClaim(_) => "missing_claim",
            Self::InvalidClaim(_) => "invalid_claim",
        }
    }
}

/// At most `max` characters of `s`, for error messages that echo attacker-chosen text.
pub(crate) fn bounded(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or_default()),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        let all = [
            VerifyError::MissingSignature,
            VerifyError::Malformed("x"),
            VerifyError::UnsupportedAlgorithm("none".into()),
            VerifyError::CriticalHeader,
            VerifyError::InvalidSignature,
            VerifyError::Expired { exp: 1 },
            VerifyError::NotYetValid { nbf: 1 },
            VerifyError::WrongIssuer { found: "x".into() },
            VerifyError::UrlMismatch {
                expected: "a".into(),
                found: "b".into(),
            },
            VerifyError::BodyMismatch,
            VerifyError::MissingClaim("exp"),
            VerifyError::InvalidClaim("exp"),
        ];
        let mut codes = std::collections::HashSet::new();
        for e in all {
            let msg = e.to_string();
            assert!(msg.chars().next().unwrap().is_lowercase(), "{msg}");
            assert!(!msg.ends_with('.'), "{msg}");
            assert!(codes.insert(e.code()), "duplicate code {}", e.code());
        }
    }

    #[test]
    fn bounded_cuts_on_char_boundaries() {
        assert_eq!(bounded("abc", 5), "abc");
        assert_eq!(bounded("ééééé", 2), "éé…");
    }
}
