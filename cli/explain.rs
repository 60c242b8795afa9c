//! `explain`: a token decoded, checked part by part, and the library's verdict.
//!
//! The verdict is [`Verifier::verify_at`]'s (or [`Verifier::verify_token_at`]'s when no body is
//! given), exactly as a receiver decides; the decoding, the key matching and the hints are for
//! display only and never change it.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use qstash_receiver::test_utils::{DEV_CURRENT_KEY, DEV_NEXT_KEY, GO_ZERO_TIME, Signer};
use qstash_receiver::{CURRENT_KEY_ENV, MatchedKey, NEXT_KEY_ENV, SigningKeys, Verifier};
use serde_json::{Map, Value};

use crate::hints::{body_hash, body_hint, hashes_to, url_hints};
use crate::time::{relative, rfc3339};
use crate::{ExplainArgs, env_key};

/// A key to check the token with, and where it came from (never the key itself).
struct Key {
    value: String,
    source: String,
}

impl Key {
    fn new(value: &str, source: &str) -> Self {
        let (value, source) = (value.to_owned(), source.to_owned());
        Self { value, source }
    }
}

/// The current and next keys the receiver holds.
struct Keys {
    current: Key,
    next: Option<Key>,
}

impl Keys {
    fn resolve(args: &ExplainArgs) -> Result<Self, String> {
        if args.dev {
            let current = Key::new(DEV_CURRENT_KEY, "the development server's current key");
            let next = Key::new(DEV_NEXT_KEY, "the development server's next key");
            return Ok(Self {
                current,
                next: Some(next),
            });
        }
        let pick = |flag: &Option<String>, name: &str, var: &str| match flag {
            Some(value) if value.trim().is_empty() => Err(format!("{name} is empty")),
            Some(value) => Ok(Some(Key::new(value.trim(), name))),
            None => Ok(env_key(var).map(|value| Key::new(&value, var))),
        };
        let current =
            pick(&args.current_key, "--current-key", CURRENT_KEY_ENV)?.ok_or_else(|| {
                format!(
                    "no signing keys: set {} and {}, give --current-key and --next-key, or --dev \
                 for the local development server's keys",
                    CURRENT_KEY_ENV, NEXT_KEY_ENV
                )
            })?;
        let next = pick(&args.next_key, "--next-key", NEXT_KEY_ENV)?;
        Ok(Self { current, next })
    }

    fn verifier(&self, leeway: u64) -> Result<Verifier, String> {
        let next = self.next.as_ref().unwrap_or(&self.current);
        let keys = SigningKeys::new(&self.current.value, &next.value).map_err(|e| e.to_string())?;
        Ok(Verifier::new(keys).with_leeway(Duration::from_secs(leeway)))
    }
}

/// The token's three segments, when it has exactly three.
fn segments(token: &str) -> Option<(&str, &str, &str)> {
    match token.split('.').collect::<Vec<_>>()[..] {
        [header, payload, mac] => Some((header, payload, mac)),
        _ => None,
    }
}

/// Whether `key` produced the token's MAC.
fn signed_with(token: &str, key: &str) -> bool {
    segments(token).is_some_and(|(h, p, _)| Signer::new(key).sign_raw(h, p) == token)
}

/// A segment decoded as a JSON object, for display (padding tolerated).
fn decode_json(segment: &str) -> Result<Map<String, Value>, &'static str> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment.trim_end_matches('='))
        .map_err(|_| "not base64url")?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("not a JSON object"),
        Err(_) => Err("not JSON"),
    }
}

/// Control characters escaped, so a token cannot drive the terminal.
fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c.is_control() {
            true => out.extend(c.escape_default()),
            false => out.push(c),
        }
    }
    out
}

pub(crate) fn run(args: &ExplainArgs) -> Result<ExitCode, String> {
    let keys = Keys::resolve(args)?;
    let verifier = keys.verifier(args.leeway)?;
    let body = args.body.read()?;
    let now = args.now.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    });
    let offset = Duration::from_secs(now.unsigned_abs());
    let now_time = if now >= 0 {
        UNIX_EPOCH + offset
    } else {
        UNIX_EPOCH - offset
    };
    let token = args.token.as_str();
    let mut out = String::new();
    let claims = token_section(&mut out, token, now);
    key_section(&mut out, token, &keys, args.dev);
    let signed_url = claims
        .as_ref()
        .and_then(|c| c.get("sub"))
        .and_then(Value::as_str);
    url_section(&mut out, signed_url, args.url.as_deref());
    let signed_body = claims
        .as_ref()
        .and_then(|c| c.get("body"))
        .and_then(Value::as_str);
    body_section(&mut out, signed_body, body.as_deref());

    // The verdict: the library's, on the same input.
    let verdict = match &body {
        Some(body) => verifier.verify_at(token, body, args.url.as_deref(), now_time),
        None => verifier
            .verify_token_at(token, args.url.as_deref(), now_time)
            .map(|t| t.claims().clone()),
    };
    out.push_str("\nVerdict\n");
    let code = match verdict {
        Ok(claims) => {
            let key = match claims.matched_key() {
                MatchedKey::Current => "current",
                _ => "next",
            };
            let checked = match (&args.url, &body) {
                (Some(_), Some(_)) => "",
                (None, Some(_)) => " (URL not checked: give --url)",
                (Some(_), None) => " (body not checked: give --body or --body-file)",
                (None, None) => " (URL and body not checked: give --url and --body)",
            };
            let _ = writeln!(out, "  valid: signed with the {key} key{checked}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(out, "  invalid: {} ({})", e.code(), clean(&e.to_string()));
            ExitCode::from(1)
        }
    };
    print!("{out}");
    Ok(code)
}

/// The header and the claims, times as dates. Returns the claims when they decode.
fn token_section(out: &mut String, token: &str, now: i64) -> Option<Map<String, Value>> {
    let _ = writeln!(out, "Token (now: {})", date(now, now));
    let Some((header, payload, _)) = segments(token) else {
        let _ = writeln!(
            out,
            "  cannot decode: a token has three segments separated by dots"
        );
        return None;
    };
    match decode_json(header) {
        Ok(map) => {
            let _ = writeln!(out, "  header  {}", Value::Object(map));
        }
        Err(why) => {
            let _ = writeln!(out, "  header  cannot decode: {why}");
        }
    }
    let claims = match decode_json(payload) {
        Ok(claims) => claims,
        Err(why) => {
            let _ = writeln!(out, "  claims  cannot decode: {why}");
            return None;
        }
    };
    for (name, value) in &claims {
        let _ = write!(out, "  {name:<6}  {value}");
        match (name.as_str(), value.as_i64()) {
            ("nbf", Some(GO_ZERO_TIME)) => {
                let _ = write!(
                    out,
                    "  {}: Go's zero time, no lower bound (as QStash sends)",
                    rfc3339(GO_ZERO_TIME).unwrap_or_default()
                );
            }
            ("exp" | "iat" | "nbf", Some(secs)) => {
                let _ = write!(out, "  {}", date(secs, now));
            }
            _ => {}
        }
        out.push('\n');
    }
    Some(claims)
}

/// `2026-01-01T00:05:00Z (in 5m)`.
fn date(secs: i64, now: i64) -> String {
    match rfc3339(secs) {
        Some(date) if secs == now => date,
        Some(date) => format!("{date} ({})", relative(secs, now)),
        None => "(out of the range of dates)".to_owned(),
    }
}

/// Which key produced the MAC, and what a mismatch usually means.
fn key_section(out: &mut String, token: &str, keys: &Keys, dev: bool) {
    out.push_str("\nKey\n");
    if signed_with(token, &keys.current.value) {
        let _ = writeln!(out, "  matches the current key ({})", keys.current.source);
        return;
    }
    match &keys.next {
        Some(next) if signed_with(token, &next.value) => {
            let _ = writeln!(
                out,
                "  matches the next key ({}): QStash rolled its keys; make it the current key",
                next.source
            );
            return;
        }
        Some(_) => out.push_str("  matches neither the current nor the next key\n"),
        None => {
            let _ = writeln!(
                out,
                "  does not match the current key (no next key: set {} or give --next-key)",
                NEXT_KEY_ENV
            );
        }
    }
    let dev_match = [DEV_CURRENT_KEY, DEV_NEXT_KEY]
        .iter()
        .any(|key| signed_with(token, key));
    let env_match = [CURRENT_KEY_ENV, NEXT_KEY_ENV]
        .iter()
        .filter_map(|var| env_key(var))
        .any(|key| signed_with(token, &key));
    let text = if !dev && dev_match {
        "the local development server's keys match: this token comes from `qstash dev` (or was \
         signed with its public keys) and is checked with production keys. Production and \
         development keys are mixed up: use the dev keys only in development (explain --dev)"
    } else if dev && env_match {
        "the keys in the environment match: this token comes from QStash (production), not \
         from the development server; check it without --dev"
    } else {
        "signed with other keys: the keys rolled twice since, another QStash project or region \
         (each region has its own keys), or a key copied incompletely"
    };
    labeled(out, "hint:", text);
}

/// The signed URL beside the expected one.
fn url_section(out: &mut String, signed: Option<&str>, expected: Option<&str>) {
    out.push_str("\nURL\n");
    let _ = writeln!(out, "  signed    {}", signed.map_or("(none)".into(), clean));
    let Some(expected) = expected else {
        out.push_str("  expected  (not checked: give --url)\n");
        return;
    };
    let _ = writeln!(out, "  expected  {}", clean(expected));
    match signed {
        Some(signed) if signed == expected => out.push_str("  match\n"),
        Some(signed) => {
            out.push_str("  differ (compared exactly)\n");
            for text in url_hints(signed, expected) {
                match text.strip_prefix("fix: ") {
                    Some(fix) => labeled(out, "fix:", &clean(fix)),
                    None => labeled(out, "hint:", &clean(&text)),
                }
            }
        }
        None => {}
    }
}

/// The signed body hash beside the computed one.
fn body_section(out: &mut String, signed: Option<&str>, body: Option<&[u8]>) {
    out.push_str("\nBody\n");
    let _ = writeln!(out, "  signed    {}", signed.map_or("(none)".into(), clean));
    let Some(body) = body else {
        out.push_str("  computed  (not checked: give --body or --body-file)\n");
        return;
    };
    let computed = body_hash(body);
    let _ = writeln!(out, "  computed  {computed}  ({} bytes)", body.len());
    match signed {
        Some(signed) if hashes_to(body, signed) => out.push_str("  match\n"),
        Some(signed) => {
            out.push_str("  differ\n");
            labeled(out, "hint:", &body_hint(body, signed));
        }
        None => {}
    }
}

/// `  label text`, wrapped at 100 columns under the text's start.
fn labeled(out: &mut String, label: &str, text: &str) {
    const WIDTH: usize = 100;
    let indent = label.len() + 2;
    let mut line = format!("  {label}");
    for word in text.split(' ') {
        if line.len() + 1 + word.len() > WIDTH && line.len() > indent {
            out.push_str(&line);
            out.push('\n');
            line = " ".repeat(indent);
        }
        line.push(' ');
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}
