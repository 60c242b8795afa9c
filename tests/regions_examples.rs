//! Both example servers (`examples/axum_server.rs`, `examples/actix_server.rs`), as compiled
//! binaries, started with only the variables of QStash's multi-region guide: `QSTASH_REGION` and
//! the keys of both regions, no unprefixed keys. Each delivery is verified with the keys its
//! `Upstash-Region` names.
#![cfg(all(feature = "test-utils", any(feature = "axum", feature = "actix-web")))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qstash_receiver::test_utils::Signer;
use serde_json::{Value, json};

const PUBLIC_URL: &str = "https://receiver.example";
const EU_CURRENT: &str = "sig_euCurrent0123456789abcdefgh";
const EU_NEXT: &str = "sig_euNext0123456789abcdefghijk";
const US_CURRENT: &str = "sig_usCurrent0123456789abcdefgh";
const US_NEXT: &str = "sig_usNext0123456789abcdefghijk";

/// The running example, killed on drop.
struct Server {
    child: Child,
    base: String,
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(example: &str) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let mut child = Command::new(common::example_binary(example))
        .env_remove("QSTASH_CURRENT_SIGNING_KEY")
        .env_remove("QSTASH_NEXT_SIGNING_KEY")
        .env_remove("REDIS_URL")
        .env("QSTASH_REGION", "EU_CENTRAL_1")
        .env("EU_CENTRAL_1_QSTASH_CURRENT_SIGNING_KEY", EU_CURRENT)
        .env("EU_CENTRAL_1_QSTASH_NEXT_SIGNING_KEY", EU_NEXT)
        .env("US_EAST_1_QSTASH_CURRENT_SIGNING_KEY", US_CURRENT)
        .env("US_EAST_1_QSTASH_NEXT_SIGNING_KEY", US_NEXT)
        .env("BIND", &bind)
        .env("PUBLIC_URL", PUBLIC_URL)
        .env("RUST_LOG", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("listening on http://"),
        "{example}: {line:?}"
    );
    Server {
        child,
        base: format!("http://{bind}"),
        _stdout: stdout,
    }
}

async fn request(request: hyper::http::request::Builder, body: &[u8]) -> (u16, Value) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(
            request
                .body(Full::new(Bytes::copy_from_slice(body)))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// POSTs job `task` to `/jobs`, signed with `key`, sent with `Upstash-Region: region`.
async fn job(server: &Server, key: &str, region: &str, task: &str) -> (u16, Value) {
    let body = json!({ "task": task }).to_string();
    let delivery = Signer::new(key).delivery_with_id(
        &format!("{PUBLIC_URL}/jobs"),
        body.as_bytes(),
        &format!("msg_{task}"),
        0,
    );
    let mut builder = hyper::Request::post(format!("{}/jobs", server.base));
    for (name, value) in &delivery.headers {
        if !name.eq_ignore_ascii_case("upstash-region") {
            builder = builder.header(name, value);
        }
    }
    request(builder.header("upstash-region", region), body.as_bytes()).await
}

async fn run(example: &str) {
    let server = start(example);
    let (status, body) = job(&server, EU_CURRENT, "eu-central-1", "eu").await;
    assert_eq!(
        (status, &body["task"]),
        (200, &json!("eu")),
        "{example}: {body}"
    );
    let (status, body) = job(&server, US_NEXT, "US-EAST-1", "us").await;
    assert_eq!(
        (status, &body["task"]),
        (200, &json!("us")),
        "{example}: {body}"
    );
    // An EU-signed delivery sent as US-EAST-1 is tried with the US keys only.
    let (status, body) = job(&server, EU_CURRENT, "US-EAST-1", "crossed").await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("invalid_signature")),
        "{example}: {body}"
    );
    // No unprefixed keys: without a region, nothing verifies.
    let (status, body) = job(&server, EU_CURRENT, "", "no-region").await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("invalid_signature")),
        "{example}: {body}"
    );
    // Only the two verified deliveries ran.
    let (status, stats) = request(hyper::Request::get(format!("{}/stats", server.base)), b"").await;
    assert_eq!(status, 200);
    assert_eq!(stats, json!({ "runs": { "eu": 1, "us": 1 } }), "{example}");
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_example_works_with_only_the_multi_region_variables() {
    run("axum_server").await;
}

#[cfg(feature = "actix-web")]
#[tokio::test]
async fn actix_example_works_with_only_the_multi_region_variables() {
    run("actix_server").await;
}
