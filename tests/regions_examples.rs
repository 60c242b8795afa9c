//! Both example servers (`examples/axum_server.rs`, `examples/actix_server.rs`), through their
//! own code, started with only the variables of QStash's multi-region guide: `QSTASH_REGION`
//! and the keys of both regions, no unprefixed keys. Each delivery is verified with the keys its
//! `Upstash-Region` names.
#![cfg(all(feature = "test-utils", feature = "axum", feature = "actix-web"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

#[path = "../examples/axum_server.rs"]
#[allow(dead_code)]
mod axum_server;

#[path = "../examples/actix_server.rs"]
#[allow(dead_code)]
mod actix_server;

mod common;

use std::collections::HashMap;

use bytes::Bytes;
use common::regions::{EU_CURRENT, US_NEXT, env};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qstash_receiver::Verifier;
use qstash_receiver::test_utils::Signer;
use serde_json::{Value, json};

const PUBLIC_URL: &str = "https://receiver.example";
/// The environment of QStash's multi-region guide (no unprefixed keys), and where the example
/// listens.
fn environment(bind: &str) -> impl Fn(&str) -> Option<String> + Clone + use<> {
    let mut vars: HashMap<&str, String> = env(false)
        .into_iter()
        .map(|(name, value)| (name, value.to_owned()))
        .collect();
    vars.insert("BIND", bind.to_owned());
    vars.insert("PUBLIC_URL", PUBLIC_URL.to_owned());
    move |name: &str| vars.get(name).cloned()
}

/// The running example: its base URL (it runs on a thread of its own until the tests end).
struct Server {
    base: String,
}

/// The example's own settings and server, as its `main` builds them, from the environment above.
fn start(example: &str) -> Server {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = listener.local_addr().unwrap().to_string();
    let env = environment(&bind);
    let (tx, rx) = std::sync::mpsc::channel();
    if example == "axum_server" {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let settings = axum_server::settings(Verifier::from_vars(&env), &env)
                    .await
                    .unwrap();
                listener.set_nonblocking(true).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tx.send(()).unwrap();
                axum_server::serve(listener, settings).await.unwrap();
            });
        });
    } else {
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let settings = actix_server::settings(Verifier::from_vars(&env), &env)
                    .await
                    .unwrap();
                let server = actix_server::server(listener, settings).unwrap();
                tx.send(()).unwrap();
                server.await
            })
        });
    }
    rx.recv().unwrap();
    Server {
        base: format!("http://{bind}"),
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

#[tokio::test]
async fn axum_example_works_with_only_the_multi_region_variables() {
    run("axum_server").await;
}

#[tokio::test]
async fn actix_example_works_with_only_the_multi_region_variables() {
    run("actix_server").await;
}
