//! `sign`: a delivery signed as QStash signs it, as headers or as a curl command.

use std::fmt::Write as _;
use std::process::ExitCode;

use qstash_receiver::test_utils::{DEV_CURRENT_KEY, SignedDelivery, Signer};

use qstash_receiver::CURRENT_KEY_ENV;

use crate::{SignArgs, env_key};

pub(crate) fn run(args: &SignArgs) -> Result<ExitCode, String> {
    let key = match (&args.key, args.dev) {
        (Some(key), _) if key.trim().is_empty() => return Err("--key is empty".to_owned()),
        (Some(key), _) => key.clone(),
        (None, true) => DEV_CURRENT_KEY.to_owned(),
        (None, false) => env_key(CURRENT_KEY_ENV).ok_or_else(|| {
            format!(
                "no signing key: set {}, give --key, or --dev for the local development server's key",
                CURRENT_KEY_ENV
            )
        })?,
    };
    let body = args
        .body
        .read()?
        .ok_or("give the body with --body TEXT or --body-file PATH (empty: --body '')")?;
    let signer = Signer::new(key);
    let message_id = args
        .message_id
        .clone()
        .unwrap_or_else(|| signer.delivery(&args.url, b"").message_id);
    let mut delivery = signer.delivery_with_id(&args.url, &body, &message_id, args.retried);
    if let Some(content_type) = &args.content_type {
        delivery = delivery.with_header("content-type", content_type.as_str());
    }
    let out = if args.curl {
        curl(args, &delivery)
    } else {
        headers(&delivery)
    };
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// `Name: value` lines, the signature first.
fn headers(delivery: &SignedDelivery) -> String {
    let mut out = String::new();
    for (name, value) in &delivery.headers {
        let _ = writeln!(out, "{}: {value}", display_name(name));
    }
    out
}

/// A curl command that sends the delivery.
fn curl(args: &SignArgs, delivery: &SignedDelivery) -> String {
    let mut out = format!(
        "curl -X {} {}",
        quote(&args.method.to_ascii_uppercase()),
        quote(&args.url)
    );
    for (name, value) in &delivery.headers {
        let _ = write!(
            out,
            " \\\n  -H {}",
            quote(&format!("{}: {value}", display_name(name)))
        );
    }
    match (&args.body.body, &args.body.body_file) {
        (None, Some(path)) => {
            let _ = write!(
                out,
                " \\\n  --data-binary @{}",
                quote(&path.to_string_lossy())
            );
        }
        (Some(text), _) => {
            let _ = write!(out, " \\\n  --data-binary {}", quote(text));
        }
        (None, None) => {}
    }
    out.push('\n');
    out
}

/// `upstash-message-id` → `Upstash-Message-Id`.
fn display_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Quoted for a POSIX shell: as is when only safe characters, else in single quotes, each `'`
/// written `'\''`.
fn quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:@%+=,".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_specials() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
        assert_eq!(quote("$(rm -rf /) `x` \"y\""), "'$(rm -rf /) `x` \"y\"'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("POST"), "POST");
        assert_eq!(quote("https://e.x/a?b=1&c"), "'https://e.x/a?b=1&c'");
    }

    #[test]
    fn names_are_capitalized() {
        assert_eq!(display_name("upstash-signature"), "Upstash-Signature");
        assert_eq!(display_name("user-agent"), "User-Agent");
    }
}
