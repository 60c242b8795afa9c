//! examples/axum_server.rs through its own code: its settings read from a given environment,
//! its app served on a free loopback port, driven over real HTTP. Checks every route and status
//! of its contract.
#![cfg(all(feature = "axum", feature = "test-utils"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
mod tower_support;

#[path = "../examples/axum_server.rs"]
#[allow(dead_code)]
mod axum_server;

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::Request;
use qstash_receiver::test_utils::Signer;
use qstash_receiver::{KeyError, SigningKeys, Verifier};

use common::{CURRENT_KEY, NEXT_KEY};
use tower_support::{client, full, read_response};

const PUBLIC_URL: &str = "https://receiver.example";

/// The running example (on a thread of its own, with its own runtime, until the tests end).
struct Server {
    base: String,
}

fn start() -> Server {
    start_with(&[])
}

/// The example with more environment variables.
fn start_with(env: &[(&str, &str)]) -> Server {
    let mut env: HashMap<String, String> = env
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect();
    env.insert("PUBLIC_URL".into(), PUBLIC_URL.into());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let keys = SigningKeys::new(CURRENT_KEY, NEXT_KEY).map(Verifier::new);
            let settings = axum_server::settings(keys, |name| env.get(name).cloned())
                .await
                .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum_server::serve(listener, settings).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    Server {
        base: format!("http://{addr}"),
    }
}

async fn post(
    server: &Server,
    signer: &Signer,
    path: &str,
    signed_path: &str,
    body: &str,
    message_id: &str,
    retried: u32,
) -> (u16, serde_json::Value) {
    let delivery = signer.delivery_with_id(
        &format!("{PUBLIC_URL}{signed_path}"),
        body.as_bytes(),
        message_id,
        retried,
    );
    let mut builder = Request::post(format!("{}{path}", server.base));
    for (name, value) in &delivery.headers {
        builder = builder.header(name, value);
    }
    let response = client()
        .request(builder.body(full(body.to_owned())).unwrap())
        .await
        .unwrap();
    let (status, _, body) = read_response(response).await;
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

async fn stats(server: &Server) -> serde_json::Value {
    let response = client()
        .request(
            Request::get(format!("{}/stats", server.base))
                .body(full(""))
                .unwrap(),
        )
        .await
        .unwrap();
    let (status, _, body) = read_response(response).await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn missing_keys_and_bad_settings_are_clear_errors() {
    let missing = KeyError::MissingEnv {
        var: "QSTASH_CURRENT_SIGNING_KEY".into(),
    };
    let Err(e) = axum_server::settings(Err(missing), |_| None).await else {
        panic!("no keys: no server");
    };
    assert!(e.contains("QSTASH_CURRENT_SIGNING_KEY"), "{e}");
    assert!(e.contains("QSTASH_NEXT_SIGNING_KEY"), "{e}");
    let keys = || SigningKeys::new(CURRENT_KEY, NEXT_KEY).map(Verifier::new);
    let Err(e) =
        axum_server::settings(keys(), |n| (n == "PUBLIC_URL").then(|| "ftp://x".into())).await
    else {
        panic!("a bad public url: no server");
    };
    assert!(e.starts_with("PUBLIC_URL: "), "{e}");
    let Err(e) = axum_server::settings(keys(), |n| {
        (n == "REQUEST_TIMEOUT_SECS").then(|| "0".into())
    })
    .await
    else {
        panic!("a zero timeout: no server");
    };
    assert!(e.contains("REQUEST_TIMEOUT_SECS"), "{e}");
    // Defaults: listens on 127.0.0.1:3000.
    let settings = axum_server::settings(keys(), |_| None).await.unwrap();
    assert_eq!(settings.bind, "127.0.0.1:3000");
}

#[tokio::test]
async fn jobs_fail_then_succeed_and_stats_count_runs() {
    let server = start();
    let signer = Signer::new(CURRENT_KEY);
    assert_eq!(stats(&server).await, serde_json::json!({"runs": {}}));

    let body = r#"{"task":"flaky","fail_times":2,"sleep_ms":5}"#;
    for retried in 0..2 {
        let (status, json) = post(
            &server,
            &signer,
            "/jobs",
            "/jobs",
            body,
            "msg_flaky",
            retried,
        )
        .await;
        assert_eq!(status, 500, "attempt {retried}");
        assert_eq!(json["task"], "flaky");
    }
    let (status, json) = post(&server, &signer, "/jobs", "/jobs", body, "msg_flaky", 2).await;
    assert_eq!(status, 200);
    assert_eq!(
        json,
        serde_json::json!({"task": "flaky", "message_id": "msg_flaky", "retried": 2})
    );

    // Next key, default fail_times.
    let (status, json) = post(
        &server,
        &Signer::new(NEXT_KEY),
        "/jobs",
        "/jobs",
        r#"{"task":"once"}"#,
        "msg_once",
        0,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json["message_id"], "msg_once");
    assert_eq!(json["retried"], 0);

    assert_eq!(
        stats(&server).await,
        serde_json::json!({"runs": {"flaky": 3, "once": 1}})
    );
}

#[tokio::test]
async fn refusals_are_not_counted() {
    let server = start();
    let signer = Signer::new(CURRENT_KEY);
    let body = r#"{"task":"t"}"#;

    // Unknown key, token for another route, unsigned, not JSON.
    let (status, json) = post(
        &server,
        &Signer::new("sig_evil"),
        "/jobs",
        "/jobs",
        body,
        "msg_1",
        0,
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("invalid_signature"))
    );
    let (status, json) = post(&server, &signer, "/jobs", "/callbacks", body, "msg_2", 0).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("url_mismatch"))
    );
    let response = client()
        .request(
            Request::post(format!("{}/jobs", server.base))
                .body(full(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let (status, _, answer) = read_response(response).await;
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&answer).contains("missing_signature"));
    let (status, json) = post(&server, &signer, "/jobs", "/jobs", "not json", "msg_3", 0).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_payload"))
    );

    assert_eq!(stats(&server).await, serde_json::json!({"runs": {}}));
}

#[tokio::test]
async fn callbacks_and_failures() {
    let server = start();
    let signer = Signer::new(CURRENT_KEY);
    let event = serde_json::json!({
        "status": 200,
        "header": {"Content-Type": ["application/json"]},
        "body": STANDARD.encode(r#"{"ok":true}"#),
        "retried": 0,
        "maxRetries": 3,
        "sourceMessageId": "msg_src",
        "url": format!("{PUBLIC_URL}/jobs"),
        "method": "POST",
        "sourceBody": STANDARD.encode("{}"),
        "createdAt": 1_700_000_000_000_i64,
    });
    let (status, json) = post(
        &server,
        &signer,
        "/callbacks",
        "/callbacks",
        &event.to_string(),
        "msg_cb",
        0,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        json,
        serde_json::json!({"source_message_id": "msg_src", "status": 200, "body": r#"{"ok":true}"#})
    );

    let mut failure = event.clone();
    failure["status"] = 500.into();
    failure["dlqId"] = "dlq_1".into();
    let (status, json) = post(
        &server,
        &signer,
        "/failures",
        "/failures",
        &failure.to_string(),
        "msg_f",
        0,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        json,
        serde_json::json!({"source_message_id": "msg_src", "dlq_id": "dlq_1"})
    );

    // A verified body that is not an event: 400.
    let (status, json) = post(
        &server,
        &signer,
        "/callbacks",
        "/callbacks",
        "{}",
        "msg_x",
        0,
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_payload"))
    );
    // Signed for /failures, sent to /callbacks.
    let (status, json) = post(
        &server,
        &signer,
        "/callbacks",
        "/failures",
        &failure.to_string(),
        "msg_y",
        0,
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("url_mismatch"))
    );
}

#[tokio::test]
async fn a_request_over_the_timeout_is_answered_503_and_its_message_runs_again() {
    let server = start_with(&[("REQUEST_TIMEOUT_SECS", "1")]);
    let signer = Signer::new(CURRENT_KEY);
    let body = r#"{"task":"slow","sleep_ms":2500}"#;
    for retried in 0..2 {
        let (status, json) = post(
            &server, &signer, "/jobs", "/jobs", body, "msg_slow", retried,
        )
        .await;
        // Not 409 "in progress" on the retry: the timed-out request released its lease.
        assert_eq!(status, 503, "attempt {retried}");
        assert_eq!(json["error"], "timeout");
    }
    assert_eq!(
        stats(&server).await,
        serde_json::json!({"runs": {"slow": 2}})
    );
    // A quick message is served as usual.
    let (status, json) = post(
        &server,
        &signer,
        "/jobs",
        "/jobs",
        r#"{"task":"quick"}"#,
        "msg_quick",
        0,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json["task"], "quick");
}

/// The callback of a message of nearly the default body limit (its body and its answer, each
/// about 10 MiB, in base64: about 27 MiB) is accepted by `/callbacks` and `/failures`: their
/// layer takes the receiver's callback limit; `/jobs` keeps the body limit.
#[tokio::test]
async fn callbacks_of_a_message_at_the_limit_are_accepted() {
    use qstash_receiver::DEFAULT_MAX_BODY_BYTES;
    use qstash_receiver::test_utils::CallbackBuilder;

    let server = start();
    let signer = Signer::new(CURRENT_KEY);
    let source = signer.delivery(
        &format!("{PUBLIC_URL}/jobs"),
        &vec![b'm'; DEFAULT_MAX_BODY_BYTES - 1024],
    );
    let answer = vec![b'a'; DEFAULT_MAX_BODY_BYTES - 1024];
    let callback = CallbackBuilder::callback(&source)
        .response_body(answer.clone())
        .to_json();
    assert!(
        callback.len() > 2 * DEFAULT_MAX_BODY_BYTES,
        "{}",
        callback.len()
    );
    let callback = String::from_utf8(callback).unwrap();
    let (status, json) = post(
        &server,
        &signer,
        "/callbacks",
        "/callbacks",
        &callback,
        "msg_big",
        0,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json["source_message_id"], source.message_id.as_str());
    assert_eq!(json["body"].as_str().map(str::len), Some(answer.len()));
    let failure = CallbackBuilder::failure_callback(&source)
        .response_body(answer)
        .to_json();
    let failure = String::from_utf8(failure).unwrap();
    let (status, json) = post(
        &server,
        &signer,
        "/failures",
        "/failures",
        &failure,
        "msg_big_f",
        0,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(json["source_message_id"], source.message_id.as_str());
    let (status, json) = post(
        &server,
        &signer,
        "/jobs",
        "/jobs",
        &callback,
        "msg_big_j",
        0,
    )
    .await;
    assert_eq!(
        (status, json["error"].as_str()),
        (413, Some("payload_too_large"))
    );
}
