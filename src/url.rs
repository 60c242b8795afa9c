//! Which URL a delivery must have been signed for (the token's `sub`), per receiver.

use std::fmt;
use std::sync::Arc;

use crate::Rejection;

/// The parts of a request that a [`UrlPolicy`] may use. Built by the adapters from their
/// framework's request; framework-free.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct RequestTarget<'a> {
    /// The request's path and query as received (`/jobs?x=1`). Adapters give the original
    /// URI's, before any router stripped a prefix.
    pub path_and_query: &'a str,
    /// The scheme the server saw, when known (`http` or `https`).
    pub scheme: Option<&'a str>,
    /// The `Host` header (or the URI's authority).
    pub host: Option<&'a str>,
    /// The first `X-Forwarded-Proto` value.
    pub forwarded_proto: Option<&'a str>,
    /// The first `X-Forwarded-Host` value.
    pub forwarded_host: Option<&'a str>,
}

impl<'a> RequestTarget<'a> {
    /// A target with only a path and query.
    pub fn new(path_and_query: &'a str) -> Self {
        Self {
            path_and_query,
            ..Self::default()
        }
    }

    /// Adds the scheme the server saw.
    #[must_use]
    pub fn with_scheme(mut self, scheme: Option<&'a str>) -> Self {
        self.scheme = scheme;
        self
    }

    /// Adds the `Host` header.
    #[must_use]
    pub fn with_host(mut self, host: Option<&'a str>) -> Self {
        self.host = host;
        self
    }

    /// Adds the first `X-Forwarded-Proto` and `X-Forwarded-Host` values.
    #[must_use]
    pub fn with_forwarded(mut self, proto: Option<&'a str>, host: Option<&'a str>) -> Self {
        self.forwarded_proto = proto;
        self.forwarded_host = host;
        self
    }
}

/// The parts of a request a [`UrlPolicy`] reads ([`UrlPolicy::reads`]).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(any(feature = "tower", feature = "actix-web")), allow(dead_code))]
pub(crate) struct TargetParts {
    /// The path and query.
    pub(crate) path: bool,
    /// `Host` and the `X-Forwarded-*` headers.
    pub(crate) headers: bool,
}

type UrlFn = dyn Fn(&RequestTarget<'_>) -> Option<String> + Send + Sync;

#[derive(Clone, Default)]
enum Kind {
    #[default]
    Unconfigured,
    Exact(Arc<str>),
    PublicBase(Arc<str>),
    Fn(Arc<UrlFn>),
    TrustForwarded {
        default_scheme: Arc<str>,
    },
    Skip,
}

/// How a receiver decides the URL a delivery must be signed for. Cheap to clone.
///
/// **Default: unconfigured**, which refuses every delivery signed with the receiver's keys with
/// 500 `misconfigured` (QStash retries it, nothing is lost; logged as an error) and never skips
/// the check silently. Receivers consult the policy only once the token's MAC and time window
/// passed: other requests get their 401 and no error is logged for them. Choose one of:
///
/// - [`UrlPolicy::exact`]: one URL, for a receiver mounted at one route;
/// - [`UrlPolicy::public_base`]: the app's public base URL joined with the request's path and
///   query, for apps behind proxies, tunnels and preview deployments;
/// - [`UrlPolicy::from_fn`]: a closure;
/// - [`UrlPolicy::trust_forwarded_headers`]: rebuilt from `X-Forwarded-Proto`/`X-Forwarded-Host`
///   or `Host`. Opt-in only: these headers are set by whoever calls you unless a proxy you
///   control overwrites them;
/// - [`UrlPolicy::skip`]: explicitly no URL check (the MAC and body are still checked, but a
///   token for any of your QStash endpoints is accepted at every other one).
///
/// QStash signs the URL it delivers to. A receiver compares it **exactly** with the URL it
/// expects, so that a token captured for one endpoint cannot be replayed against another.
/// Behind a proxy, a tunnel or a preview deployment, the URL the app sees is not the public one:
/// say what the public URL is.
///
/// ```
/// use qstash_receiver::{RequestTarget, UrlPolicy};
///
/// let target = RequestTarget::new("/jobs?x=1");
///
/// // The public base of this app, joined with each request's path and query:
/// let policy = UrlPolicy::public_base("https://app.example.com/")?;
/// assert_eq!(policy.expected_url(&target)?.as_deref(), Some("https://app.example.com/jobs?x=1"));
///
/// // One exact URL, a closure, or an explicit "don't check":
/// assert_eq!(
///     UrlPolicy::exact("https://app.example.com/jobs").expected_url(&target)?.as_deref(),
///     Some("https://app.example.com/jobs")
/// );
/// assert_eq!(UrlPolicy::skip().expected_url(&target)?, None);
///
/// // The default checks nothing silently: it refuses every request as misconfigured (500,
/// // which QStash retries) until a policy is chosen.
/// assert!(UrlPolicy::default().expected_url(&target).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default)]
pub struct UrlPolicy(Kind);

impl UrlPolicy {
    /// The token's `sub` must be exactly `url`.
    pub fn exact(url: impl Into<String>) -> Self {
        Self(Kind::Exact(url.into().into()))
    }

    /// The token's `sub` must be `base` (without a trailing `/`) followed by the request's path
    /// and query. `base` must be an absolute `http://` or `https://` URL without a query.
    pub fn public_base(base: impl Into<String>) -> Result<Self, UrlPolicyError> {
        let base = base.into();
        let trimmed = base.trim_end_matches('/');
        let valid_scheme = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"))
            .is_some_and(|rest| !rest.is_empty());
        if !valid_scheme || trimmed.contains(['?', '#']) {
            return Err(UrlPolicyError { base });
        }
        Ok(Self(Kind::PublicBase(trimmed.into())))
    }

    /// The expected URL is computed per request, once the token's MAC and time window passed.
    /// Returning `None` refuses the request as misconfigured (500, logged as an error); to skip
    /// the check, use [`UrlPolicy::skip`].
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(&RequestTarget<'_>) -> Option<String> + Send + Sync + 'static,
    {
        Self(Kind::Fn(Arc::new(f)))
    }

    /// Rebuilds the URL from `X-Forwarded-Proto` (else the scheme the server knows for sure:
    /// `https` when it terminated TLS itself, an absolute request URI's; else `default_scheme`)
    /// and `X-Forwarded-Host` (else `Host`), plus the path and query.
    ///
    /// Only behind a proxy that overwrites these headers: otherwise the caller chooses them.
    pub fn trust_forwarded_headers(default_scheme: impl Into<String>) -> Self {
        Self(Kind::TrustForwarded {
            default_scheme: default_scheme.into().into(),
        })
    }

    /// Explicitly no URL check.
    pub fn skip() -> Self {
        Self(Kind::Skip)
    }

    /// Whether a policy was chosen (the default is unconfigured).
    pub fn is_configured(&self) -> bool {
        !matches!(self.0, Kind::Unconfigured)
    }

    /// Which parts of a request this policy reads, so that adapters look up only those: the
    /// path and query (every policy that joins or computes a URL), and the headers (`Host`,
    /// `X-Forwarded-*`; only [`UrlPolicy::from_fn`] and [`UrlPolicy::trust_forwarded_headers`]).
    #[cfg_attr(not(any(feature = "tower", feature = "actix-web")), allow(dead_code))]
    pub(crate) fn reads(&self) -> TargetParts {
        match self.0 {
            Kind::Unconfigured | Kind::Exact(_) | Kind::Skip => TargetParts {
                path: false,
                headers: false,
            },
            Kind::PublicBase(_) => TargetParts {
                path: true,
                headers: false,
            },
            Kind::Fn(_) | Kind::TrustForwarded { .. } => TargetParts {
                path: true,
                headers: true,
            },
        }
    }

    /// The URL the token must carry for this request; `Ok(None)` when the check is skipped.
    pub fn expected_url(&self, target: &RequestTarget<'_>) -> Result<Option<String>, Rejection> {
        self.expected_url_cow(target)
            .map(|url| url.map(std::borrow::Cow::into_owned))
    }

    /// [`UrlPolicy::expected_url`] without copying a fixed URL: the per-request path of the
    /// receivers ([`UrlPolicy::exact`] borrows its URL, the others build one).
    pub(crate) fn expected_url_cow(
        &self,
        target: &RequestTarget<'_>,
    ) -> Result<Option<std::borrow::Cow<'_, str>>, Rejection> {
        use std::borrow::Cow;
        Ok(Some(match &self.0 {
            Kind::Unconfigured => {
                return Err(Rejection::Misconfigured(
                    "no expected-url policy: choose UrlPolicy::exact, public_base, from_fn, \
                     trust_forwarded_headers or skip"
                        .to_owned(),
                ));
            }
            Kind::Exact(url) => Cow::Borrowed(&**url),
            Kind::PublicBase(base) => Cow::Owned(join(base, target.path_and_query)),
            Kind::Fn(f) => Cow::Owned(f(target).ok_or_else(|| {
                Rejection::Misconfigured("the expected-url function returned no url".to_owned())
            })?),
            Kind::TrustForwarded { default_scheme } => {
                let scheme = target
                    .forwarded_proto
                    .or(target.scheme)
                    .unwrap_or(default_scheme);
                // The request's fault, not the server's (HTTP/1.1 requires `Host`, QStash sends
                // it): a 400, not a 500 `misconfigured` logged as an error for anyone's request.
                let host = target
                    .forwarded_host
                    .or(target.host)
                    .ok_or(Rejection::Delivery(crate::DeliveryError::Invalid {
                        header: "host",
                        reason: "missing: the expected url is rebuilt from it",
                    }))?;
                let path = target.path_and_query;
                let slash = if path.starts_with('/') { "" } else { "/" };
                Cow::Owned(format!("{scheme}://{host}{slash}{path}"))
            }
            Kind::Skip => return Ok(None),
        }))
    }
}

fn join(base: &str, path_and_query: &str) -> String {
    let mut url = String::with_capacity(base.len() + path_and_query.len() + 1);
    url.push_str(base);
    if !path_and_query.starts_with('/') {
        url.push('/');
    }
    url.push_str(path_and_query);
    url
}

impl fmt::Debug for UrlPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Kind::Unconfigured => f.write_str("UrlPolicy::Unconfigured"),
            Kind::Exact(u) => f.debug_tuple("UrlPolicy::Exact").field(u).finish(),
            Kind::PublicBase(b) => f.debug_tuple("UrlPolicy::PublicBase").field(b).finish(),
            Kind::Fn(_) => f.write_str("UrlPolicy::Fn(..)"),
            Kind::TrustForwarded { default_scheme } => f
                .debug_struct("UrlPolicy::TrustForwarded")
                .field("default_scheme", default_scheme)
                .finish(),
            Kind::Skip => f.write_str("UrlPolicy::Skip"),
        }
    }
}

/// A public base URL that is not an absolute `http(s)://` URL without query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid public base url {base:?}: expected http:// or https:// and a host, no query")]
pub struct UrlPolicyError {
    base: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_base_joins_path_and_query() {
        let p = UrlPolicy::public_base("https://a.example/base/").unwrap();
        assert_eq!(
            p.expected_url(&RequestTarget::new("/jobs?b=2&a=1"))
                .unwrap(),
            Some("https://a.example/base/jobs?b=2&a=1".to_owned())
        );
        assert_eq!(
            p.expected_url(&RequestTarget::new("")).unwrap(),
            Some("https://a.example/base/".to_owned())
        );
    }

    #[test]
    fn public_base_must_be_absolute() {
        for bad in [
            "a.example",
            "ftp://a",
            "https://",
            "https://a/?x=1",
            "/jobs",
        ] {
            assert!(UrlPolicy::public_base(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_headers_only_when_trusted() {
        let t = RequestTarget::new("/jobs")
            .with_host(Some("internal:3000"))
            .with_forwarded(Some("https"), Some("app.example"));
        assert_eq!(
            UrlPolicy::trust_forwarded_headers("http")
                .expected_url(&t)
                .unwrap(),
            Some("https://app.example/jobs".to_owned())
        );
        let plain = RequestTarget::new("/jobs").with_host(Some("localhost:3000"));
        assert_eq!(
            UrlPolicy::trust_forwarded_headers("http")
                .expected_url(&plain)
                .unwrap(),
            Some("http://localhost:3000/jobs".to_owned())
        );
        // No host at all: the request's fault (400), not the server's.
        let err = UrlPolicy::trust_forwarded_headers("http")
            .expected_url(&RequestTarget::new("/jobs"))
            .unwrap_err();
        assert_eq!((err.status(), err.code()), (400, "invalid_delivery_header"));
        assert_eq!(
            err.to_string(),
            "invalid host header: missing: the expected url is rebuilt from it"
        );
    }

    #[test]
    fn closure_and_unconfigured() {
        let p = UrlPolicy::from_fn(|t| {
            (t.path_and_query != "/none").then(|| format!("https://x{}", t.path_and_query))
        });
        assert_eq!(
            p.expected_url(&RequestTarget::new("/a")).unwrap(),
            Some("https://x/a".to_owned())
        );
        assert_eq!(
            p.expected_url(&RequestTarget::new("/none"))
                .unwrap_err()
                .status(),
            500
        );
        let err = UrlPolicy::default()
            .expected_url(&RequestTarget::new("/a"))
            .unwrap_err();
        assert_eq!(err.status(), 500);
        assert!(!UrlPolicy::default().is_configured());
        assert!(UrlPolicy::skip().is_configured());
    }
}
