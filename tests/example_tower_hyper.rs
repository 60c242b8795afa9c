//! examples/tower_hyper.rs through its own code: its hyper server with the layer on a loopback
//! port, one signed and one bad delivery sent over real HTTP.
#![cfg(all(feature = "tower", feature = "test-utils"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../examples/tower_hyper.rs"]
#[allow(dead_code)]
mod tower_hyper;

use qstash_receiver::test_utils::Signer;
use qstash_receiver::{Receiver, SigningKeys, UrlPolicy, Verifier};

#[tokio::test]
async fn signed_delivery_reaches_the_handler_and_a_bad_one_is_refused() {
    let (current, next) = (
        "sig_exampleCurrent0123456789",
        "sig_exampleNext0123456789ab",
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let public = format!("http://{addr}");
    let receiver = Receiver::new(Verifier::new(SigningKeys::new(current, next).unwrap()))
        .url_policy(UrlPolicy::public_base(&public).unwrap());
    let server = tokio::spawn(tower_hyper::serve(listener, receiver));

    let body: &'static [u8] = br#"{"task":"self-test"}"#;
    let good = Signer::new(current).delivery(&format!("{public}/jobs"), body);
    let (status, answer) = tower_hyper::send(addr, &good.headers, body).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({ "message_id": good.message_id, "key": "Current", "bytes": 20 })
    );

    let bad = Signer::new("sig_notOurKey").delivery(&format!("{public}/jobs"), body);
    let (status, answer) = tower_hyper::send(addr, &bad.headers, body).await.unwrap();
    assert_eq!(status, 401);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["error"], "invalid_signature");
    server.abort();
}
