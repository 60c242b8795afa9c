//! What a URL or body mismatch most likely comes from.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE;
use sha2::{Digest, Sha256};

/// A URL cut into the parts a proxy changes.
#[derive(Debug, PartialEq, Eq)]
struct Parts<'a> {
    scheme: &'a str,
    host: &'a str,
    path: &'a str,
    query: &'a str,
}

fn parts(url: &str) -> Parts<'_> {
    let url = url.split('#').next().unwrap_or_default();
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (host, rest) = rest.split_at(host_end);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    Parts {
        scheme,
        host,
        path,
        query,
    }
}

/// Why `signed` (the token's `sub`) and `expected` (what the receiver computed) differ: one
/// hint per differing part (scheme, host, path, query) that looks like a known cause, then the
/// fix when the signed URL's own parts give it.
pub(crate) fn url_hints(signed: &str, expected: &str) -> Vec<String> {
    let mut hints = Vec::new();
    if signed == expected {
        return hints;
    }
    let (s, e) = (parts(signed), parts(expected));
    let scheme = !s.scheme.eq_ignore_ascii_case(e.scheme);
    let host = !s.host.eq_ignore_ascii_case(e.host);
    if scheme && !host {
        hints.push(format!(
            "the scheme differs ({} signed, {} expected): a proxy, load balancer or platform \
             terminates TLS and forwards plain http",
            s.scheme, e.scheme
        ));
    } else if host {
        hints.push(format!(
            "the {} differs: a tunnel, proxy or preview deployment is in between, or the \
             message was published to another address",
            if scheme { "scheme and host" } else { "host" }
        ));
    }
    // The part of the signed path a proxy strips, when that explains the path difference.
    let mut stripped = Some("");
    if s.path != e.path {
        let (hint, prefix) = path_hint(s.path, e.path);
        hints.extend(hint);
        stripped = prefix;
    }
    if s.query != e.query {
        hints.push(
            "the query differs: URLs are compared exactly, parameter order and encoding included"
                .to_owned(),
        );
    }
    let base_explains = s.query == e.query && !s.scheme.is_empty() && !s.host.is_empty();
    match stripped {
        Some(prefix) if base_explains && (scheme || host || !prefix.is_empty()) => {
            let forwarded = if prefix.is_empty() {
                ", or UrlPolicy::trust_forwarded_headers behind a proxy that sets \
                 X-Forwarded-Proto and X-Forwarded-Host"
            } else {
                ""
            };
            hints.push(format!(
                "fix: expect the public URL QStash calls: \
                 UrlPolicy::public_base(\"{}://{}{prefix}\"){forwarded}",
                s.scheme, s.host
            ));
        }
        _ => {}
    }
    hints
}

/// A hint on the paths, and the prefix of the signed path a proxy strips when that is the
/// difference.
fn path_hint<'a>(signed: &'a str, expected: &str) -> (Option<String>, Option<&'a str>) {
    let (s, e) = (signed.trim_end_matches('/'), expected.trim_end_matches('/'));
    if s == e {
        let hint = "a trailing slash differs: URLs are compared exactly; publish to the URL your \
                    route has, or expect the URL QStash signs";
        return (Some(hint.to_owned()), None);
    }
    if let Some(prefix) = s.strip_suffix(e).filter(|p| is_segment(p, e)) {
        let hint = format!(
            "the signed path has a prefix the receiver does not see ({prefix}): a proxy, \
             gateway or mount point strips it before your app"
        );
        return (Some(hint), Some(prefix));
    }
    if let Some(prefix) = e.strip_suffix(s).filter(|p| is_segment(p, s)) {
        let hint = format!(
            "the expected path has a prefix the signed one lacks ({prefix}): the message was \
             published to a URL without it (a proxy adds it), or the receiver's base URL \
             should not include it"
        );
        return (Some(hint), None);
    }
    (None, None)
}

/// Whether `prefix` ends where a path segment starts in `prefix + rest`.
fn is_segment(prefix: &str, rest: &str) -> bool {
    prefix.len() > 1 && prefix.starts_with('/') && (rest.is_empty() || rest.starts_with('/'))
}

/// base64url(SHA-256(body)), padded, as in the token's `body` claim.
pub(crate) fn body_hash(body: &[u8]) -> String {
    URL_SAFE.encode(Sha256::digest(body))
}

/// Whether `body` hashes to `claim` (padding ignored, as the verifier compares).
pub(crate) fn hashes_to(body: &[u8], claim: &str) -> bool {
    body_hash(body).trim_end_matches('=') == claim.trim_end_matches('=')
}

/// What a body that does not hash to `claim` most likely went through.
pub(crate) fn body_hint(body: &[u8], claim: &str) -> String {
    let without_newline = body
        .strip_suffix(b"\n")
        .map(|b| b.strip_suffix(b"\r").unwrap_or(b));
    if without_newline.is_some_and(|b| hashes_to(b, claim)) {
        return "the signed body is this one without its final newline (a file saved by an \
                editor or written by echo adds one): give the exact bytes"
            .to_owned();
    }
    if hashes_to(body.trim_ascii(), claim) {
        return "the signed body is this one without its surrounding whitespace: give the exact \
                bytes"
            .to_owned();
    }
    let compact = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| serde_json::to_vec(&value).ok());
    if compact.is_some_and(|c| c != body && hashes_to(&c, claim)) {
        return "the signed body is this JSON written compactly: somewhere it was parsed and \
                re-serialized; verify the raw bytes as received"
            .to_owned();
    }
    let gzip = if body.starts_with(&[0x1f, 0x8b]) {
        " This body is gzip data: QStash signs the bytes it sends, compressed or not."
    } else {
        ""
    };
    format!(
        "the body is not the bytes that were signed: verify the raw body as received, never \
         one parsed and re-serialized (key order, spaces, escapes), decompressed, re-encoded \
         or trimmed (a framework's JSON or form extractor, a compression middleware).{gzip}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_cases() {
        let h = |s, e| url_hints(s, e).join(" | ");
        assert!(h("https://a.io/x", "http://a.io/x").starts_with("the scheme differs"));
        assert!(h("https://a.io/x", "http://localhost:3000/x").contains("scheme and host"));
        assert!(h("https://a.io/x/", "https://a.io/x").contains("trailing slash"));
        let prefix = h("https://a.io/api/jobs", "https://a.io/jobs");
        assert!(
            prefix.contains("prefix the receiver does not see (/api)"),
            "{prefix}"
        );
        assert!(h("https://a.io/jobs", "https://a.io/v1/jobs").contains("(/v1)"));
        assert!(h("https://a.io/x?a=1&b=2", "https://a.io/x?b=2&a=1").contains("query"));
        // Behind a TLS-terminating proxy that also strips a prefix: both causes.
        let both = url_hints("https://a.io/api/jobs", "http://a.io/jobs");
        assert_eq!(both.len(), 3, "{both:?}");
        assert!(both[0].starts_with("the scheme differs") && both[1].contains("(/api)"));
        assert_eq!(
            both[2],
            r#"fix: expect the public URL QStash calls: UrlPolicy::public_base("https://a.io/api")"#
        );
        let tunnel = url_hints("https://abc.tunnel.dev/jobs", "http://localhost:3000/jobs");
        assert!(
            tunnel[1].contains(r#"public_base("https://abc.tunnel.dev"), or"#),
            "{tunnel:?}"
        );
        // A trailing slash or a query is not fixed by a base URL.
        assert_eq!(url_hints("https://a.io/x/", "https://a.io/x").len(), 1);
        assert!(url_hints("https://a.io/xjobs", "https://a.io/jobs").is_empty());
        assert!(url_hints("https://a.io/x", "https://a.io/x").is_empty());
    }

    #[test]
    fn body_cases() {
        let signed = body_hash(br#"{"a":1}"#);
        assert!(body_hint(b"{\"a\":1}\n", &signed).contains("final newline"));
        assert!(body_hint(b"{\"a\":1}\r\n", &signed).contains("final newline"));
        assert!(body_hint(b"  {\"a\":1} ", &signed).contains("whitespace"));
        assert!(body_hint(br#"{ "a": 1 }"#, &signed).contains("compactly"));
        assert!(body_hint(br#"{"a":2}"#, &signed).starts_with("the body is not the bytes"));
        assert!(body_hint(&[0x1f, 0x8b, 0], &signed).contains("gzip"));
    }
}
