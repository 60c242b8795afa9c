//! The `qstash-receiver` command, run as a user runs it: its output and exit status.
#![cfg(feature = "cli")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

const BIN: &str = env!("CARGO_BIN_EXE_qstash-receiver");
const CURRENT: &str = "sig_cliTestCurrent0123456789ab";
const NEXT: &str = "sig_cliTestNext0123456789abcde";
const DEV_CURRENT: &str = "sig_7kYjw48mhY7kAjqNGcy6cr29RJ6r";
const DEV_NEXT: &str = "sig_5ZB6DVzB1wjE8S6rZ7eenA8Pdnhs";
const URL: &str = "https://example.com/api/jobs";
const BODY: &str = r#"{"task":"mail"}"#;

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs the command with `env` as its only QStash variables. Whatever it prints, no key may
/// appear in it.
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("QSTASH_CURRENT_SIGNING_KEY")
        .env_remove("QSTASH_NEXT_SIGNING_KEY")
        .envs(env.iter().copied())
        .output()
        .expect("the command runs");
    let out = Output {
        code: out.status.code().expect("an exit status"),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    };
    for key in [CURRENT, NEXT, DEV_CURRENT, DEV_NEXT] {
        assert!(
            !out.stdout.contains(key) && !out.stderr.contains(key),
            "a key was printed by {args:?}:\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
    out
}

const PROD: &[(&str, &str)] = &[
    ("QSTASH_CURRENT_SIGNING_KEY", CURRENT),
    ("QSTASH_NEXT_SIGNING_KEY", NEXT),
];

/// `sign` with the production keys from the environment: the token.
fn sign(args: &[&str]) -> String {
    let out = run(&[&["sign"], args].concat(), PROD);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let first = out.stdout.lines().next().unwrap();
    first
        .strip_prefix("Upstash-Signature: ")
        .unwrap_or_else(|| panic!("first line is the signature: {first}"))
        .to_owned()
}

#[test]
fn sign_prints_the_headers_signature_first() {
    let out = run(
        &[
            "sign",
            "--url",
            URL,
            "--body",
            BODY,
            "--message-id",
            "msg_fixed",
            "--retried",
            "2",
        ],
        PROD,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(lines[0].starts_with("Upstash-Signature: eyJ"), "{lines:?}");
    assert!(
        lines.contains(&"Upstash-Message-Id: msg_fixed"),
        "{lines:?}"
    );
    assert!(lines.contains(&"Upstash-Retried: 2"), "{lines:?}");
    assert!(
        lines.iter().all(|l| l.split_once(": ").is_some()),
        "{lines:?}"
    );
}

#[test]
fn sign_then_explain_round_trip() {
    let token = sign(&["--url", URL, "--body", BODY]);
    let out = run(
        &["explain", "--token", &token, "--url", URL, "--body", BODY],
        PROD,
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(r#"header  {"alg":"HS256","typ":"JWT"}"#)
    );
    assert!(out.stdout.contains(r#"iss     "Upstash""#));
    assert!(out.stdout.contains("Go's zero time"));
    assert!(out.stdout.contains("(in 5m)"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("matches the current key (QSTASH_CURRENT_SIGNING_KEY)")
    );
    assert!(
        out.stdout
            .trim_end()
            .ends_with("valid: signed with the current key"),
        "{}",
        out.stdout
    );
}

#[test]
fn next_key_and_key_flags() {
    let out = run(&["sign", "--url", URL, "--body", "", "--key", NEXT], &[]);
    assert_eq!(out.code, 0);
    let token = out.stdout.lines().next().unwrap()["Upstash-Signature: ".len()..].to_owned();
    let out = run(
        &[
            "explain",
            "--token",
            &token,
            "--current-key",
            CURRENT,
            "--next-key",
            NEXT,
            "--body",
            "",
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("matches the next key (--next-key)"));
    assert!(
        out.stdout
            .contains("valid: signed with the next key (URL not checked")
    );
}

#[test]
fn wrong_url_is_a_url_mismatch_with_both_urls_and_the_proxy_hints() {
    let token = sign(&["--url", URL, "--body", BODY]);
    // Behind a proxy that terminates TLS and strips `/api`.
    let out = run(
        &[
            "explain",
            "--token",
            &token,
            "--url",
            "http://example.com/jobs",
            "--body",
            BODY,
        ],
        PROD,
    );
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains(&format!("signed    {URL}")));
    assert!(out.stdout.contains("expected  http://example.com/jobs"));
    assert!(
        out.stdout
            .contains("the scheme differs (https signed, http expected)")
    );
    assert!(
        out.stdout
            .contains("prefix the receiver does not see (/api)")
    );
    assert!(
        out.stdout.contains("invalid: url_mismatch ("),
        "{}",
        out.stdout
    );
}

#[test]
fn modified_body_is_a_body_mismatch() {
    let token = sign(&["--url", URL, "--body", BODY]);
    let dir = std::env::temp_dir().join(format!("qstash-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("body.json");
    // The body as an editor saves it: with a final newline.
    std::fs::write(&file, format!("{BODY}\n")).unwrap();
    let out = run(
        &[
            "explain",
            "--token",
            &token,
            "--url",
            URL,
            "--body-file",
            file.to_str().unwrap(),
        ],
        PROD,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("  differ\n"), "{}", out.stdout);
    assert!(out.stdout.contains("without its final newline"));
    assert!(out.stdout.contains("invalid: body_mismatch ("));

    let out = run(
        &[
            "explain",
            "--token",
            &token,
            "--url",
            URL,
            "--body",
            r#"{ "task": "mail" }"#,
        ],
        PROD,
    );
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("parsed and re-serialized"));
    assert!(out.stdout.contains("invalid: body_mismatch ("));
}

/// A case of the public vectors: (signature, current key, next key, body, url, now).
fn vector(id: &str) -> (String, String, String, String, String, i64) {
    let text = include_str!("data/signature-cases.jsonl");
    let case: serde_json::Value = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|c| c["id"] == id)
        .unwrap();
    let s = |k: &str| case[k].as_str().unwrap().to_owned();
    let body = String::from_utf8(STANDARD.decode(s("body_b64")).unwrap()).unwrap();
    (
        s("signature"),
        s("current_key"),
        s("next_key"),
        body,
        s("url"),
        case["now"].as_i64().unwrap(),
    )
}

#[test]
fn expired_tokens_say_so_and_when() {
    let (token, current, next, body, url, now) = vector("time_expired");
    let now = now.to_string();
    let args = [
        "explain", "--token", &token, "--url", &url, "--body", &body, "--now", &now,
    ];
    let env = [
        ("QSTASH_CURRENT_SIGNING_KEY", current.as_str()),
        ("QSTASH_NEXT_SIGNING_KEY", next.as_str()),
    ];
    let out = run(&args, &env);
    assert!(!out.stdout.contains(&current) && !out.stdout.contains(&next));
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stdout.contains("(10s ago)"), "{}", out.stdout);
    assert!(out.stdout.contains("invalid: token_expired ("));

    // A token that verifies when it arrived is expired five minutes later.
    let (token, current, next, body, url, now) = vector("key_current");
    let env = [
        ("QSTASH_CURRENT_SIGNING_KEY", current.as_str()),
        ("QSTASH_NEXT_SIGNING_KEY", next.as_str()),
    ];
    let at = |t: i64| {
        let t = t.to_string();
        run(
            &[
                "explain", "--token", &token, "--url", &url, "--body", &body, "--now", &t,
            ],
            &env,
        )
    };
    assert_eq!(at(now).code, 0);
    let late = at(now + 300);
    assert_eq!(late.code, 1);
    assert!(late.stdout.contains("invalid: token_expired ("));
    assert!(
        late.stdout.contains("2026-01-01T00:05:00Z"),
        "{}",
        late.stdout
    );
}

#[test]
fn dev_token_checked_with_production_keys_names_the_mix_up() {
    let (token, _, _, body, url, now) = vector("key_dev_server");
    let now = now.to_string();
    let args = [
        "explain", "--token", &token, "--url", &url, "--body", &body, "--now", &now,
    ];
    let out = run(&args, PROD);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(
        out.stdout
            .contains("matches neither the current nor the next key")
    );
    assert!(out.stdout.contains("development server's keys match"));
    assert!(out.stdout.contains("invalid: invalid_signature ("));

    // With --dev it verifies; a production token checked with --dev says where it is from.
    let out = run(&[&args[..], &["--dev"]].concat(), PROD);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.contains("the development server's current key"));
    let prod = sign(&["--url", URL, "--body", BODY]);
    let out = run(
        &["explain", "--token", &prod, "--body", BODY, "--dev"],
        PROD,
    );
    assert_eq!(out.code, 1);
    assert!(out.stdout.contains("keys in the environment match"));
}

#[test]
fn garbage_tokens_are_explained_not_panicked_on() {
    for token in [
        "",
        "a.b",
        "!!.??.##",
        "eyJhbGciOiJub25lIn0.e30.",
        "\u{1b}[31m.x.y",
    ] {
        let out = run(&["explain", "--token", token, "--body", ""], PROD);
        assert_eq!(out.code, 1, "{token:?}: {}{}", out.stdout, out.stderr);
        assert!(out.stdout.contains("invalid: "), "{}", out.stdout);
        assert!(
            !out.stdout.contains('\u{1b}'),
            "escape sequences are escaped"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["sign", "--body", BODY][..],
        &["sign", "--url", URL, "--body", BODY, "--body-file", "x"],
        &["sign", "--url", URL, "--body", BODY, "--retried", "many"],
        &[
            "sign", "--url", URL, "--body", BODY, "--key", CURRENT, "--dev",
        ],
        &["explain"],
        &["explain", "--token", "x", "--dev", "--current-key", CURRENT],
        &["frobnicate"],
        &[],
        // A key where a flag was expected: clap quotes it, and it must not be shown.
        &["sign", CURRENT],
        &["explain", "--token", "x", NEXT],
    ] {
        let out = run(args, PROD);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(!out.stderr.is_empty() && out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn missing_keys_are_a_usage_error_that_names_the_variables() {
    let out = run(&["sign", "--url", URL, "--body", BODY], &[]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("QSTASH_CURRENT_SIGNING_KEY"),
        "{}",
        out.stderr
    );
    let out = run(&["explain", "--token", "a.b.c"], &[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no signing keys"), "{}", out.stderr);
    assert!(run(&["--help"], &[]).code == 0);
}

/// The printed curl command, run by a shell against a real server that verifies with the
/// crate: the delivery is accepted.
#[cfg(feature = "axum")]
#[test]
fn curl_command_delivers_to_a_real_server() {
    use axum::Router;
    use axum::routing::post;
    use qstash_receiver::axum::Verified;
    use qstash_receiver::{Receiver, SigningKeys, Verifier};

    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}/jobs?it's=1", listener.local_addr().unwrap());
    let receiver = Receiver::new(Verifier::new(SigningKeys::new(CURRENT, NEXT).unwrap()))
        .expected_url(url.clone());
    async fn job(Verified(body): Verified<String>) -> String {
        format!("got {body}")
    }
    let app = Router::new().route("/jobs", post(job)).with_state(receiver);
    rt.spawn(async move { axum::serve(listener, app).await });

    let body = "it's $HOME and `x`";
    let out = run(&["sign", "--url", &url, "--body", body, "--curl"], PROD);
    assert_eq!(out.code, 0);
    assert!(out.stdout.starts_with("curl -X POST "), "{}", out.stdout);
    let command = format!("{} -s --max-time 10", out.stdout.trim_end());
    let curl = Command::new("sh").arg("-c").arg(&command).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&curl.stdout),
        format!("got {body}"),
        "{command}\n{}",
        String::from_utf8_lossy(&curl.stderr)
    );
}
