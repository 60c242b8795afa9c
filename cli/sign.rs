//! `sign`: a delivery signed as QStash signs it, as headers or as a curl command.

use std::process::ExitCode;

use qstash_receiver::CURRENT_KEY_ENV;
use qstash_receiver::test_utils::{DEV_CURRENT_KEY, SignedDelivery, Signer};

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
    if args.curl {
        println!("{}", curl(args, &delivery));
    } else {
        header_lines(&delivery).for_each(|line| println!("{line}"));
    }
    Ok(ExitCode::SUCCESS)
}

/// `Name: value` for each header, the signature first.
fn header_lines(delivery: &SignedDelivery) -> impl Iterator<Item = String> + '_ {
    let headers = delivery.headers.iter();
    headers.map(|(name, value)| format!("{}: {value}", display_name(name)))
}

/// A curl command that sends the delivery, one option a line.
fn curl(args: &SignArgs, delivery: &SignedDelivery) -> String {
    let method = quote(&args.method.to_ascii_uppercase());
    let mut lines = vec![format!("curl -X {method} {}", quote(&args.url))];
    lines.extend(header_lines(delivery).map(|line| format!("-H {}", quote(&line))));
    match (&args.body.body, &args.body.body_file) {
        (Some(text), _) => lines.push(format!("--data-binary {}", quote(text))),
        (None, Some(path)) => {
            lines.push(format!("--data-binary @{}", quote(&path.to_string_lossy())));
        }
        (None, None) => {}
    }
    lines.join(" \\\n  ")
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
