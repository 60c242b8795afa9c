//! The layer in a plain hyper 1 server, without axum: a `service_fn` handler behind
//! `ServiceBuilder::new().layer(QStashLayer…)`.
//!
//! ```sh
//! QSTASH_CURRENT_SIGNING_KEY=sig_… QSTASH_NEXT_SIGNING_KEY=sig_… \
//! PUBLIC_URL=https://my-tunnel.example.com \
//!   cargo run --example tower_hyper --features tower,test-utils
//!
//! # Starts on a free loopback port, sends one signed and one bad delivery, prints, exits 0:
//! cargo run --example tower_hyper --features tower,test-utils -- --self-test
//! ```
//!
//! `BIND` (default `127.0.0.1:3000`) and `PUBLIC_URL` (default `http://` + `BIND`) as in the
//! axum example. (`test-utils` is only used by `--self-test`, to sign its deliveries.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use qstash_receiver::tower::QStashLayer;
use qstash_receiver::{Claims, Delivery, Receiver, SigningKeys, UrlPolicy, Verifier};
use tower::{ServiceBuilder, service_fn};

/// The application: only verified deliveries get here.
pub(crate) async fn handle(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let message_id = req
        .extensions()
        .get::<Delivery>()
        .and_then(|d| d.message_id())
        .unwrap_or("-")
        .to_owned();
    let key = req
        .extensions()
        .get::<Claims>()
        .map(|c| format!("{:?}", c.matched_key()))
        .unwrap_or_default();
    let body = match req.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let answer = serde_json::json!({ "message_id": message_id, "key": key, "bytes": body.len() });
    Ok(Response::new(Full::new(Bytes::from(answer.to_string()))))
}

pub(crate) async fn serve(listener: tokio::net::TcpListener, receiver: Receiver) {
    // In production, also bound each request in time (`tower::timeout` above the layer, or
    // hyper's read timeouts): the layer bounds the body and the drain of an oversized upload in
    // bytes, not in time. `examples/axum_server.rs` shows one.
    let service = ServiceBuilder::new()
        .layer(QStashLayer::new(receiver))
        .service(service_fn(handle));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {e}");
            }
        });
    }
}

pub(crate) async fn send(
    addr: SocketAddr,
    headers: &[(String, String)],
    body: &'static [u8],
) -> Result<(u16, String), Box<dyn std::error::Error>> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut request = Request::post(format!("http://{addr}/jobs"));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from_static(body)))?)
        .await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn self_test() -> Result<(), Box<dyn std::error::Error>> {
    use qstash_receiver::test_utils::Signer;

    let (current, next) = (
        "sig_selfTestCurrent0123456789",
        "sig_selfTestNext0123456789ab",
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let public = format!("http://{addr}");
    let receiver = Receiver::new(Verifier::new(SigningKeys::new(current, next)?))
        .url_policy(UrlPolicy::public_base(&public)?);
    tokio::spawn(serve(listener, receiver));

    let body: &'static [u8] = br#"{"task":"self-test"}"#;
    let good = Signer::new(current).delivery(&format!("{public}/jobs"), body);
    let (status, answer) = send(addr, &good.headers, body).await?;
    println!("signed delivery: {status} {answer}");
    if status != 200 {
        return Err(format!("signed delivery answered {status}").into());
    }
    let bad = Signer::new("sig_notOurKey").delivery(&format!("{public}/jobs"), body);
    let (status, answer) = send(addr, &bad.headers, body).await?;
    println!("bad delivery:    {status} {answer}");
    if status != 401 {
        return Err(format!("bad delivery answered {status}").into());
    }
    println!("self-test passed");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--self-test") {
        return match self_test().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("self-test failed: {e}");
                ExitCode::from(1)
            }
        };
    }
    let keys = match SigningKeys::from_env() {
        Ok(keys) => keys,
        Err(e) => {
            eprintln!("error: {e}\nset QSTASH_CURRENT_SIGNING_KEY and QSTASH_NEXT_SIGNING_KEY");
            return ExitCode::from(1);
        }
    };
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let public_url = std::env::var("PUBLIC_URL").unwrap_or_else(|_| format!("http://{bind}"));
    let policy = match UrlPolicy::public_base(&public_url) {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("error: PUBLIC_URL: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&bind).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("error: cannot listen on {bind}: {e}");
            return ExitCode::from(1);
        }
    };
    if let Ok(addr) = listener.local_addr() {
        println!("listening on http://{addr} (public url {public_url})");
    }
    serve(
        listener,
        Receiver::new(Verifier::new(keys)).url_policy(policy),
    )
    .await;
    ExitCode::SUCCESS
}
