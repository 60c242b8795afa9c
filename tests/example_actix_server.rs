//! examples/actix_server.rs through its own code: its settings read from a given environment,
//! its server on a free loopback port (on an actix system of its own), driven over real HTTP
//! (hyper-util's legacy client).
#![cfg(all(feature = "actix-web", feature = "test-utils"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "../examples/actix_server.rs"]
#[allow(dead_code)]
mod actix_server;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use qstash_receiver::test_utils::CallbackBuilder;
use qstash_receiver::test_utils::Signer;
use qstash_receiver::{DEFAULT_MAX_BODY_BYTES, KeyError, SigningKeys, Verifier};
use serde_json::{Value, json};

const CURRENT: &str = "sig_exampleCurrent0123456789ab";
const NEXT: &str = "sig_exampleNext0123456789abcde";

/// The running example; stopped when dropped.
struct Server {
    base: String,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// The example on a free loopback port (its `BIND`), with `PUBLIC_URL` when given (else its
/// default, `http://` + `BIND`).
fn start(public_url: Option<&str>) -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = listener.local_addr().unwrap().to_string();
    let env = [
        ("BIND", Some(bind.clone())),
        ("PUBLIC_URL", public_url.map(str::to_owned)),
    ];
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let keys = SigningKeys::new(CURRENT, NEXT).map(Verifier::new);
            let lookup = |name: &str| env.iter().find(|(n, _)| *n == name)?.1.clone();
            let settings = actix_server::settings(keys, lookup).await.unwrap();
            let server = actix_server::server(listener, settings).unwrap();
            tx.send(server.handle()).unwrap();
            server.await
        })
    });
    Server {
        base: format!("http://{bind}"),
        handle: rx.recv().unwrap(),
    }
}

async fn call(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Value) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", server.base));
    for (name, value) in headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let res = client
        .request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, json)
}

async fn deliver(server: &Server, path: &str, body: &[u8]) -> (u16, Value) {
    let url = format!("{}{path}", server.base);
    let headers = Signer::new(CURRENT).delivery(&url, body).headers;
    call(server, "POST", path, &headers, body).await
}

#[actix_web::test]
async fn missing_keys_are_a_clear_error() {
    for var in ["QSTASH_CURRENT_SIGNING_KEY", "QSTASH_NEXT_SIGNING_KEY"] {
        let missing = KeyError::MissingEnv { var: var.into() };
        let Err(e) = actix_server::settings(Err(missing), |_| None).await else {
            panic!("no keys: no server");
        };
        assert!(e.contains(var), "{e}");
    }
    let keys = SigningKeys::new(CURRENT, NEXT).map(Verifier::new);
    let Err(e) = actix_server::settings(keys, |n| (n == "PUBLIC_URL").then(|| "nope".into())).await
    else {
        panic!("a bad public url: no server");
    };
    assert!(!e.is_empty());
}

#[tokio::test]
async fn jobs_retries_callbacks_failures_and_stats() {
    let server = start(None);

    // A job that succeeds at once.
    let body = br#"{"task":"mail"}"#;
    let url = format!("{}/jobs", server.base);
    let d = Signer::new(CURRENT).delivery_with_id(&url, body, "msg_mail", 0);
    let (status, json) = call(&server, "POST", "/jobs", &d.headers, body).await;
    assert_eq!(status, 200);
    assert_eq!(
        json,
        json!({"task": "mail", "message_id": "msg_mail", "retried": 0})
    );

    // A job that fails twice, then succeeds on the second retry (next key, same message id).
    let body = br#"{"task":"flaky","fail_times":2,"sleep_ms":5}"#;
    for retried in 0..3u32 {
        let d = Signer::new(NEXT).delivery_with_id(&url, body, "msg_flaky", retried);
        let (status, json) = call(&server, "POST", "/jobs", &d.headers, body).await;
        if retried < 2 {
            assert_eq!(status, 500, "attempt {retried}");
        } else {
            assert_eq!(status, 200);
            assert_eq!(
                json,
                json!({"task": "flaky", "message_id": "msg_flaky", "retried": 2})
            );
        }
    }

    // Refusals: unsigned, tampered, token for another route, not JSON, too large.
    let (status, json) = call(&server, "POST", "/jobs", &[], br#"{"task":"x"}"#).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("missing_signature"))
    );
    let d = Signer::new(CURRENT).delivery(&url, br#"{"task":"x"}"#);
    let (status, json) = call(&server, "POST", "/jobs", &d.headers, br#"{"task":"y"}"#).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("body_mismatch"))
    );
    let other = format!("{}/failures", server.base);
    let d = Signer::new(CURRENT).delivery(&other, br#"{"task":"x"}"#);
    let (status, json) = call(&server, "POST", "/jobs", &d.headers, br#"{"task":"x"}"#).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("url_mismatch"))
    );
    let (status, json) = deliver(&server, "/jobs", b"not json").await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_payload"))
    );
    let (status, json) = deliver(&server, "/jobs", br#"{"fail_times":1}"#).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_payload"))
    );
    let big = vec![b' '; DEFAULT_MAX_BODY_BYTES + 1];
    let (status, json) = deliver(&server, "/jobs", &big).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (413, Some("payload_too_large"))
    );

    // Callback and failure callback.
    let event = br#"{"status":500,"header":{"Content-Type":["text/plain"]},"body":"Ym9vbQ==",
        "retried":3,"maxRetries":3,"sourceMessageId":"msg_flaky","url":"https://x/jobs",
        "method":"POST","sourceBody":"e30=","dlqId":"dlq_42","createdAt":"1767225500000"}"#;
    let (status, json) = deliver(&server, "/callbacks", event).await;
    assert_eq!(status, 200);
    assert_eq!(
        json,
        json!({"source_message_id": "msg_flaky", "status": 500, "body": "boom"})
    );
    let (status, json) = deliver(&server, "/failures", event).await;
    assert_eq!(status, 200);
    assert_eq!(
        json,
        json!({"source_message_id": "msg_flaky", "dlq_id": "dlq_42"})
    );
    let (status, json) = deliver(&server, "/callbacks", br#"{"status":"x"}"#).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (400, Some("invalid_payload"))
    );
    let (status, json) = call(&server, "POST", "/failures", &[], event).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("missing_signature"))
    );

    // Stats: not verified; refused deliveries did not run.
    let (status, json) = call(&server, "GET", "/stats", &[], b"").await;
    assert_eq!(status, 200);
    assert_eq!(json, json!({"runs": {"mail": 1, "flaky": 3}}));
}

#[tokio::test]
async fn public_url_decides_the_expected_url() {
    let server = start(Some("https://public.example/"));
    let body = br#"{"task":"p"}"#;
    let d = Signer::new(CURRENT).delivery("https://public.example/jobs", body);
    let (status, json) = call(&server, "POST", "/jobs", &d.headers, body).await;
    assert_eq!(status, 200);
    assert_eq!(json["task"], "p");
    // Signed for the local address: refused behind a public URL.
    let (status, json) = deliver(&server, "/jobs", body).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("url_mismatch"))
    );
}

#[tokio::test]
async fn bodies_up_to_the_receivers_limit_are_accepted_and_not_quoted_back() {
    let server = start(None);
    // 3 MiB: over actix-web's default `PayloadConfig` (256 KiB) and `JsonConfig` (2 MiB), under
    // the receiver's default limit (10 MiB).
    let big = format!(
        r#"{{"task":"big","pad":"{}"}}"#,
        "x".repeat(3 * 1024 * 1024)
    );
    let (status, json) = deliver(&server, "/jobs", big.as_bytes()).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["task"], "big");
    // Over the default limit: the receiver's 413.
    let huge = format!(
        r#"{{"task":"huge","pad":"{}"}}"#,
        "x".repeat(DEFAULT_MAX_BODY_BYTES)
    );
    let (status, json) = deliver(&server, "/jobs", huge.as_bytes()).await;
    assert_eq!(status, 413);
    assert_eq!(json["error"], "payload_too_large");
    // A job that does not parse: the position, not the body.
    let (status, json) = deliver(&server, "/jobs", br#"{"task":"SECRET-4111"#).await;
    assert_eq!(status, 400);
    assert_eq!(json["error"], "invalid_payload");
    let message = json["message"].as_str().unwrap();
    assert!(
        message.starts_with("invalid payload: not a job: line 1 column"),
        "{message}"
    );
    assert!(!message.contains("SECRET"), "{message}");
}

/// The callback of a message of nearly the default body limit (its body and its answer, each
/// about 10 MiB, in base64: about 27 MiB) is accepted by `/callbacks` and `/failures`: their
/// middleware takes the receiver's callback limit.
#[tokio::test]
async fn callbacks_of_a_message_at_the_limit_are_accepted() {
    let server = start(None);
    let message = vec![b'm'; DEFAULT_MAX_BODY_BYTES - 1024];
    let source = Signer::new(CURRENT).delivery(&format!("{}/jobs", server.base), &message);
    let answer = vec![b'a'; DEFAULT_MAX_BODY_BYTES - 1024];
    let callback = CallbackBuilder::callback(&source)
        .status(200)
        .response_body(answer)
        .to_json();
    assert!(
        callback.len() > 2 * DEFAULT_MAX_BODY_BYTES,
        "{}",
        callback.len()
    );
    let (status, json) = deliver(&server, "/callbacks", &callback).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["source_message_id"], source.message_id.as_str());
    let failure = CallbackBuilder::failure_callback(&source)
        .response_body(vec![b'a'; DEFAULT_MAX_BODY_BYTES - 1024])
        .to_json();
    let (status, json) = deliver(&server, "/failures", &failure).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["source_message_id"], source.message_id.as_str());
    // The job route keeps the body limit.
    let (status, json) = deliver(&server, "/jobs", &callback).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (413, Some("payload_too_large"))
    );
}
