//! The crate's main job, with nothing external: an axum receiver started in-process on a free
//! loopback port, and deliveries signed as QStash signs them, sent to it over real HTTP:
//! signed, tampered, expired, for another URL, unsigned, and the same message twice (the second
//! time answered as a duplicate by the deduplication, without running the handler). Prints what
//! happened to each (status and body) and how many times the handler ran.
//!
//! Run: `cargo run --example demo --features axum,test-utils`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use bytes::Bytes as RawBytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use qstash_receiver::dedup::{DUPLICATE_HEADER, Dedup, MemoryStore};
use qstash_receiver::test_utils::Signer;
use qstash_receiver::tower::QStashLayer;
use qstash_receiver::{Delivery, Receiver, SigningKeys, UrlPolicy, Verifier};

/// Header name/value pairs of one delivery.
type Headers = Vec<(String, String)>;

async fn jobs(State(runs): State<Arc<AtomicUsize>>, delivery: Delivery, body: Bytes) -> String {
    runs.fetch_add(1, Ordering::SeqCst);
    format!(
        "handled {} bytes of message {} (attempt {})",
        body.len(),
        delivery.message_id().unwrap_or("-"),
        delivery.retried()
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    demo(&mut std::io::stdout()).await?;
    Ok(())
}

/// Runs the demo, writing its report to `out`; returns how many times the handler ran.
pub(crate) async fn demo(
    out: &mut impl std::io::Write,
) -> Result<usize, Box<dyn std::error::Error>> {
    let (current, next) = (
        "sig_demoCurrentKey0123456789ab",
        "sig_demoNextKey0123456789abcde",
    );
    let public = "https://example.com/api";
    let receiver = Receiver::new(Verifier::new(SigningKeys::new(current, next)?))
        .url_policy(UrlPolicy::public_base(public)?)
        .max_body_bytes(64 * 1024)
        // Each message runs to success once (in memory here; `RedisStore` across instances).
        .dedup(Dedup::new(Arc::new(MemoryStore::new())));
    let runs = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/jobs", post(jobs))
        .route_layer(QStashLayer::new(receiver))
        .with_state(Arc::clone(&runs));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    writeln!(
        out,
        "receiver listening on http://{addr}, expecting URLs under {public}\n"
    )?;

    let url = format!("{public}/jobs");
    let body: &[u8] = br#"{"task":"send-welcome-mail"}"#;
    let now = SystemTime::now();
    let signed = Signer::new(current).delivery(&url, body);
    let rolled = Signer::new(next).delivery(&url, body);
    let expired = Signer::new(current)
        .issued_at(now - Duration::from_secs(600))
        .delivery(&url, body);
    let other_url = Signer::new(current).delivery(&format!("{public}/admin"), body);
    let foreign = Signer::new("sig_someoneElsesKey").delivery(&url, body);
    let retry = Signer::new(current).delivery_with_id(&url, body, &signed.message_id, 1);
    let big = vec![b'a'; 100 * 1024];
    let too_big = Signer::new(current).delivery(&url, &big);

    let cases: Vec<(&str, Headers, Vec<u8>)> = vec![
        (
            "signed with the current key",
            signed.headers.clone(),
            body.to_vec(),
        ),
        (
            "signed with the next key (after a roll)",
            rolled.headers,
            body.to_vec(),
        ),
        (
            "body changed after signing",
            signed.headers.clone(),
            br#"{"task":"drop-tables"}"#.to_vec(),
        ),
        (
            "expired token (10 minutes old)",
            expired.headers,
            body.to_vec(),
        ),
        (
            "token signed for another URL (/admin)",
            other_url.headers,
            body.to_vec(),
        ),
        ("signed with an unknown key", foreign.headers, body.to_vec()),
        ("no signature at all", Vec::new(), body.to_vec()),
        ("100 KiB body, over the 64 KiB limit", too_big.headers, big),
        (
            "the same message again (QStash delivers at least once)",
            retry.headers,
            body.to_vec(),
        ),
    ];

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<RawBytes>>();
    for (what, headers, body) in cases {
        let mut request = http::Request::post(format!("http://{addr}/jobs"));
        for (name, value) in &headers {
            request = request.header(name, value);
        }
        let response = client
            .request(request.body(Full::new(RawBytes::from(body)))?)
            .await?;
        let status = response.status();
        let duplicate = response.headers().contains_key(DUPLICATE_HEADER);
        let answer = response.into_body().collect().await?.to_bytes();
        let verdict = if duplicate {
            "DUPLICATE"
        } else if status.is_success() {
            "ACCEPTED"
        } else {
            "REFUSED "
        };
        writeln!(
            out,
            "{verdict} {what}\n         {} {}",
            status.as_u16(),
            String::from_utf8_lossy(&answer)
        )?;
    }
    let runs = runs.load(Ordering::SeqCst);
    writeln!(
        out,
        "\nThe handler ran {runs} times: the two accepted deliveries; the duplicate was answered \
         200 with `{DUPLICATE_HEADER}: true` without running it (deduplication by message id)."
    )?;
    Ok(runs)
}
