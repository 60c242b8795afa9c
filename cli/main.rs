//! `qstash-receiver`: sign QStash deliveries and explain why a delivery's signature is refused.
//!
//! ```text
//! cargo install qstash-receiver --features cli
//! qstash-receiver sign --url https://example.com/api/jobs --body '{"task":"mail"}' --dev --curl
//! qstash-receiver explain --token "$TOKEN" --url https://example.com/api/jobs --body-file body.json
//! ```
//!
//! Exit status: 0 when the token verifies (`explain`) or the delivery was signed (`sign`), 1 when
//! the token does not verify, 2 on a usage error. Keys are never printed.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use qstash_receiver::{CURRENT_KEY_ENV, NEXT_KEY_ENV};

mod explain;
mod hints;
mod sign;
mod time;

/// Sign QStash deliveries, and explain why one is refused.
#[derive(Debug, Parser)]
#[command(name = "qstash-receiver", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sign a delivery as QStash does: prints its headers (or a curl command that sends it).
    Sign(SignArgs),
    /// Decode an Upstash-Signature token and say whether and why it verifies.
    Explain(ExplainArgs),
}

/// The body, from the command line or a file.
#[derive(Debug, Args)]
struct BodyArgs {
    /// The body, as text.
    #[arg(long, value_name = "TEXT", conflicts_with = "body_file")]
    body: Option<String>,
    /// The body, read from a file byte for byte (no newline is added or removed).
    #[arg(long, value_name = "PATH")]
    body_file: Option<PathBuf>,
}

impl BodyArgs {
    /// The body bytes, `None` when neither option was given.
    fn read(&self) -> Result<Option<Vec<u8>>, String> {
        match (&self.body, &self.body_file) {
            (Some(text), _) => Ok(Some(text.clone().into_bytes())),
            (None, Some(path)) => std::fs::read(path)
                .map(Some)
                .map_err(|e| format!("cannot read --body-file {}: {e}", path.display())),
            (None, None) => Ok(None),
        }
    }
}

#[derive(Debug, Args)]
struct SignArgs {
    /// The URL the delivery is for (the token's `sub`).
    #[arg(long)]
    url: String,
    #[command(flatten)]
    body: BodyArgs,
    /// The signing key (default: $QSTASH_CURRENT_SIGNING_KEY). Prefer the environment: a key
    /// on the command line ends up in your shell history.
    #[arg(long, conflicts_with = "dev")]
    key: Option<String>,
    /// Sign with the local development server's public key.
    #[arg(long)]
    dev: bool,
    /// The message id (default: a fresh `msg_…`).
    #[arg(long, value_name = "ID")]
    message_id: Option<String>,
    /// The attempt number (`Upstash-Retried`).
    #[arg(long, value_name = "N", default_value_t = 0)]
    retried: u32,
    /// The HTTP method the curl command uses.
    #[arg(long, default_value = "POST")]
    method: String,
    /// A `Content-Type` header to send with the delivery.
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
    /// Print a curl command that sends the delivery instead of the headers.
    #[arg(long)]
    curl: bool,
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// The `Upstash-Signature` header's value.
    #[arg(long)]
    token: String,
    /// The URL the receiver expects (compared exactly with the token's `sub`); without it the
    /// URL is not checked.
    #[arg(long)]
    url: Option<String>,
    #[command(flatten)]
    body: BodyArgs,
    /// The current signing key (default: $QSTASH_CURRENT_SIGNING_KEY).
    #[arg(long, conflicts_with = "dev")]
    current_key: Option<String>,
    /// The next signing key (default: $QSTASH_NEXT_SIGNING_KEY).
    #[arg(long, conflicts_with = "dev")]
    next_key: Option<String>,
    /// Check with the local development server's public keys.
    #[arg(long)]
    dev: bool,
    /// Verify as of this time, in Unix seconds (default: now), e.g. when the delivery arrived.
    #[arg(long, value_name = "UNIX_SECONDS", allow_negative_numbers = true)]
    now: Option<i64>,
    /// Tolerated clock skew, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    leeway: u64,
}

/// Exit status of a usage error (clap's).
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e, &args),
    };
    let result = match cli.command {
        Command::Sign(args) => sign::run(&args),
        Command::Explain(args) => explain::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(USAGE)
        }
    }
}

/// Prints clap's message (help and version as they are; errors with any key removed: clap
/// may quote a misplaced argument) and returns its exit status.
fn usage_error(e: &clap::Error, args: &[OsString]) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        // Printing to a closed pipe is not worth reporting.
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    let secrets = secrets_in(args);
    eprint!("{}", redact(&e.render().to_string(), &secrets));
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(USAGE))
}

/// The key values that could appear in a message: those given on the command line and in the
/// environment.
fn secrets_in(args: &[OsString]) -> Vec<String> {
    let mut secrets: Vec<String> = [CURRENT_KEY_ENV, NEXT_KEY_ENV]
        .iter()
        .filter_map(|var| std::env::var(var).ok())
        .collect();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    for (i, arg) in args.iter().enumerate() {
        for flag in ["--key", "--current-key", "--next-key"] {
            if arg == flag {
                secrets.extend(args.get(i + 1).cloned());
            } else if let Some(value) = arg.strip_prefix(flag).and_then(|v| v.strip_prefix('=')) {
                secrets.push(value.to_owned());
            }
        }
    }
    secrets.retain(|s| !s.trim().is_empty());
    secrets
}

/// `text` with every secret, and everything shaped like a signing key (`sig_…`), replaced.
fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_owned();
    for secret in secrets {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("sig_") {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let key_len = from
            .char_indices()
            .skip(4)
            .find(|(_, c)| !c.is_ascii_alphanumeric())
            .map_or(from.len(), |(i, _)| i);
        out.push_str("[redacted]");
        rest = from.get(key_len..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// An environment variable's value, when set and not blank.
fn env_key(var: &str) -> Option<String> {
    let value = std::env::var(var).ok()?;
    Some(value.trim().to_owned()).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_keys_and_key_shapes() {
        let secrets = vec!["topsecret".to_owned()];
        assert_eq!(
            redact("a topsecret b sig_ABC123 c sig_", &secrets),
            "a [redacted] b [redacted] c [redacted]"
        );
        assert_eq!(redact("sig_x.y", &[]), "[redacted].y");
    }

    #[test]
    fn secrets_are_found_in_both_flag_forms() {
        let args: Vec<OsString> = ["x", "--key", "k1", "--next-key=k2", "--url", "u"]
            .iter()
            .map(OsString::from)
            .collect();
        let secrets = secrets_in(&args);
        assert!(secrets.contains(&"k1".to_owned()));
        assert!(secrets.contains(&"k2".to_owned()));
        assert!(!secrets.contains(&"u".to_owned()));
    }
}
