//! The actix-web adapter behind a real `HttpServer` on 127.0.0.1 (ephemeral port), driven by a
//! real HTTP client (hyper-util's legacy client): the shared cases, 20 MiB bodies with and
//! without `Content-Length`, and the server's health afterwards.
#![cfg(all(feature = "actix-web", feature = "test-utils"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpResponse, HttpServer, web};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use qstash_receiver::actix::{QStashMiddleware, Verified};
use qstash_receiver::test_utils::Signer;

type Body = BoxBody<Bytes, Infallible>;

const TWENTY_MIB: usize = 20 * 1024 * 1024;

async fn echo(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().body(body)
}

async fn echo_verified(Verified(body): Verified<web::Bytes>) -> HttpResponse {
    HttpResponse::Ok().body(body)
}

/// Serves `POST /jobs` (the middleware and `web::Bytes`, or the standalone `Verified<web::Bytes>`)
/// on an ephemeral loopback port.
fn start(standalone: bool) -> (SocketAddr, ServerHandle) {
    let server = HttpServer::new(move || {
        let app = App::new();
        if standalone {
            App::new()
                .app_data(web::Data::new(common::receiver()))
                // Let the receiver's limit be the one that applies.
                .app_data(web::PayloadConfig::new(TWENTY_MIB * 2))
                .route("/jobs", web::post().to(echo_verified))
        } else {
            app.service(
                web::resource("/jobs")
                    .wrap(QStashMiddleware::new(common::receiver()))
                    .route(web::post().to(echo)),
            )
        }
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", 0))
    .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (addr, handle)
}

fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn full(body: Vec<u8>) -> Body {
    Full::new(Bytes::from(body)).boxed()
}

/// A body without a known length: sent chunked, no `Content-Length`.
fn chunked(body: Vec<u8>) -> Body {
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = body
        .chunks(64 * 1024)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    StreamBody::new(futures_util::stream::iter(chunks)).boxed()
}

async fn send(
    client: &Client<HttpConnector, Body>,
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    body: Body,
) -> (u16, Bytes) {
    let mut req = hyper::Request::post(format!("http://{addr}{path}"));
    for (name, value) in headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let res = client.request(req.body(body).unwrap()).await.unwrap();
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

fn assert_answer(case: &common::Case, how: &str, status: u16, body: &[u8]) {
    assert_eq!(status, case.status, "{how}: {}", case.name);
    match case.code {
        None => assert_eq!(body, case.body.as_slice(), "{how}: {}", case.name),
        Some(code) => {
            let json: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(json["error"], code, "{how}: {}", case.name);
            assert!(json["message"].is_string(), "{how}: {}", case.name);
        }
    }
}

#[actix_web::test]
async fn every_case_over_real_http_with_and_without_content_length() {
    let client = client();
    for (standalone, how) in [(false, "middleware"), (true, "extractor")] {
        let (addr, handle) = start(standalone);
        for case in common::cases() {
            let (status, body) = send(
                &client,
                addr,
                case.path,
                &case.headers,
                full(case.body.clone()),
            )
            .await;
            assert_answer(&case, how, status, &body);
            let (status, body) = send(
                &client,
                addr,
                case.path,
                &case.headers,
                chunked(case.body.clone()),
            )
            .await;
            assert_answer(&case, &format!("{how}, chunked"), status, &body);
        }
        handle.stop(true).await;
    }
}

#[actix_web::test]
async fn twenty_mib_bodies_are_refused_and_the_server_stays_healthy() {
    let url = format!("{}/jobs", common::PUBLIC_BASE);
    let big = vec![b'z'; TWENTY_MIB];
    let headers = Signer::new(common::CURRENT_KEY)
        .delivery(&url, &big)
        .headers;
    for (standalone, path) in [(false, "middleware"), (true, "extractor")] {
        let (addr, handle) = start(standalone);
        for (how, body) in [
            ("content-length", full(big.clone())),
            ("chunked", chunked(big.clone())),
        ] {
            // A fresh client each time: the server may close a connection it did not drain.
            let (status, body) = send(&client(), addr, "/jobs", &headers, body).await;
            assert_eq!(status, 413, "{path} {how}");
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"], "payload_too_large", "{path} {how}");

            // Still healthy: a good delivery goes through.
            let ok = br#"{"task":"after"}"#.to_vec();
            let good = Signer::new(common::CURRENT_KEY).delivery(&url, &ok).headers;
            let (status, echoed) = send(&client(), addr, "/jobs", &good, full(ok.clone())).await;
            assert_eq!(
                (status, echoed.as_ref()),
                (200, ok.as_slice()),
                "{path} {how}"
            );
        }
        handle.stop(true).await;
    }
}
