//! Every method QStash delivers with (`Upstash-Method`: GET, POST, PUT, PATCH, DELETE), with and
//! without a body, with and without `Content-Length`, through every adapter behind a real server
//! on 127.0.0.1: the tower layer (axum's `route_layer`), axum's standalone `Verified<T>` and
//! `Callback`, actix-web's middleware, standalone `Verified<T>` and `Callback`. Requests are
//! written by hand on a TCP socket, so that a GET goes out exactly as a minimal client sends it
//! (no `Content-Length`, no body).
#![cfg(all(feature = "axum", feature = "actix-web", feature = "test-utils"))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::net::SocketAddr;

use common::{CURRENT_KEY, PUBLIC_BASE};
use qstash_receiver::test_utils::{CallbackBuilder, Signer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// How a request carries its body.
#[derive(Debug, Clone, Copy)]
enum Framing {
    /// No body, no `Content-Length` (a GET as curl sends it).
    Nothing,
    /// `Content-Length: 0`.
    EmptyWithLength,
    /// A body with its `Content-Length`.
    Body,
    /// A body sent chunked, without `Content-Length`.
    Chunked,
}

const FRAMINGS: [Framing; 4] = [
    Framing::Nothing,
    Framing::EmptyWithLength,
    Framing::Body,
    Framing::Chunked,
];

fn body_for(framing: Framing) -> Vec<u8> {
    match framing {
        Framing::Nothing | Framing::EmptyWithLength => Vec::new(),
        Framing::Body | Framing::Chunked => br#"{"task":"mail"}"#.to_vec(),
    }
}

/// Sends `method path` with `headers` and `body` framed as `framing` on a new connection
/// (`Connection: close`), and reads the whole answer: its status and body.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
    framing: Framing,
) -> (u16, Vec<u8>) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    match framing {
        Framing::Nothing => {}
        Framing::EmptyWithLength | Framing::Body => {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        Framing::Chunked => req.push_str("transfer-encoding: chunked\r\n"),
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    match framing {
        Framing::Chunked => {
            for chunk in body.chunks(5) {
                bytes.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                bytes.extend_from_slice(chunk);
                bytes.extend_from_slice(b"\r\n");
            }
            bytes.extend_from_slice(b"0\r\n\r\n");
        }
        _ => bytes.extend_from_slice(body),
    }
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(&bytes).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    parse_response(&answer)
}

/// The status and the (de-chunked) body of an HTTP/1.1 answer.
fn parse_response(answer: &[u8]) -> (u16, Vec<u8>) {
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head");
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = &answer[end + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return (status, body.to_vec());
    }
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap().trim(), 16)
                .unwrap();
        body = &body[line_end + 2..];
        if size == 0 {
            return (status, out);
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

/// The delivery headers of a message to `path` with `body`, delivered with `method`.
fn delivery(path: &str, method: &str, body: &[u8]) -> Vec<(String, String)> {
    Signer::new(CURRENT_KEY)
        .delivery(&format!("{PUBLIC_BASE}{path}"), body)
        .with_method(method)
        .headers
}

/// What the echo handlers answer: the method, a space, the body.
fn echoed(method: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} ").into_bytes();
    out.extend_from_slice(body);
    out
}

/// A callback about a message of `body`, and the answer of the callback handlers.
fn callback(path: &str) -> (Vec<u8>, Vec<(String, String)>, String) {
    let source = Signer::new(CURRENT_KEY).delivery("https://receiver.test/jobs", b"{}");
    let json = CallbackBuilder::callback(&source).status(201).to_json();
    let headers = Signer::new(CURRENT_KEY)
        .delivery(&format!("{PUBLIC_BASE}{path}"), &json)
        .headers;
    (json, headers, format!("{} 201", source.message_id))
}

/// Drives every method, framing and route of a server at `addr` (`/layer`, `/verified`,
/// `/callback`: see the servers below) and asserts each answer.
async fn drive(addr: SocketAddr, adapter: &str) {
    for method in METHODS {
        for framing in FRAMINGS {
            let body = body_for(framing);
            for path in ["/layer", "/verified"] {
                let headers = delivery(path, method, &body);
                let (status, answer) = send(addr, method, path, &headers, &body, framing).await;
                assert_eq!(
                    (status, String::from_utf8_lossy(&answer)),
                    (200, String::from_utf8_lossy(&echoed(method, &body))),
                    "{adapter} {path} {method} {framing:?}"
                );
                // The token binds the body: another body is refused, whatever the method.
                if !body.is_empty() {
                    let (status, answer) = send(
                        addr,
                        method,
                        path,
                        &headers,
                        b"{\"task\":\"drop\"}",
                        framing,
                    )
                    .await;
                    assert_eq!(status, 401, "{adapter} {path} {method} {framing:?}");
                    let json: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                    assert_eq!(json["error"], "body_mismatch");
                }
            }
            // An empty body signed for `{}` is refused as a body mismatch, not read as `{}`.
            let headers = delivery("/verified", method, b"{}");
            let (status, answer) = send(addr, method, "/verified", &headers, b"", framing).await;
            if body.is_empty() {
                assert_eq!(status, 401, "{adapter} {method} {framing:?}");
                let json: serde_json::Value = serde_json::from_slice(&answer).unwrap();
                assert_eq!(json["error"], "body_mismatch");
            }
        }
        for framing in [Framing::Body, Framing::Chunked] {
            let (json, headers, want) = callback("/callback");
            let (status, answer) = send(addr, method, "/callback", &headers, &json, framing).await;
            assert_eq!(
                (status, String::from_utf8_lossy(&answer).into_owned()),
                (200, want),
                "{adapter} callback {method} {framing:?}"
            );
        }
    }
}

mod axum_server {
    use super::*;
    use axum::Router;
    use axum::body::Bytes;
    use axum::http::Method;
    use axum::routing::any;
    use qstash_receiver::axum::{Callback, Verified};
    use qstash_receiver::tower::QStashLayer;

    async fn echo(method: Method, body: Bytes) -> Vec<u8> {
        echoed(method.as_str(), &body)
    }

    async fn echo_verified(method: Method, Verified(body): Verified<Bytes>) -> Vec<u8> {
        echoed(method.as_str(), &body)
    }

    async fn callback(Callback(event): Callback) -> String {
        format!("{} {}", event.source_message_id, event.status)
    }

    pub(super) async fn start() -> SocketAddr {
        // The standalone extractors take the receiver from the router's state.
        let standalone: Router = Router::new()
            .route("/verified", any(echo_verified))
            .route("/callback", any(callback))
            .with_state(common::receiver());
        let app = Router::new()
            .route("/layer", any(echo))
            .route_layer(QStashLayer::new(common::receiver()))
            .merge(standalone);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }
}

#[tokio::test]
async fn every_method_with_and_without_a_body_verifies_in_axum_and_tower() {
    let addr = axum_server::start().await;
    drive(addr, "axum").await;
}

mod actix_server {
    use super::*;
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    use qstash_receiver::actix::{Callback, QStashMiddleware, Verified};

    async fn echo(req: HttpRequest, body: web::Bytes) -> HttpResponse {
        HttpResponse::Ok().body(echoed(req.method().as_str(), &body))
    }

    async fn echo_verified(req: HttpRequest, Verified(body): Verified<web::Bytes>) -> HttpResponse {
        HttpResponse::Ok().body(echoed(req.method().as_str(), &body))
    }

    async fn callback(Callback(event): Callback) -> HttpResponse {
        HttpResponse::Ok().body(format!("{} {}", event.source_message_id, event.status))
    }

    pub(super) fn start() -> SocketAddr {
        let server = HttpServer::new(|| {
            App::new()
                .app_data(web::Data::new(common::receiver()))
                .service(
                    web::resource("/layer")
                        .wrap(QStashMiddleware::new(common::receiver()))
                        .route(web::route().to(echo)),
                )
                .route("/verified", web::route().to(echo_verified))
                .route("/callback", web::route().to(callback))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let addr = server.addrs()[0];
        actix_web::rt::spawn(server.run());
        addr
    }
}

#[actix_web::test]
async fn every_method_with_and_without_a_body_verifies_in_actix_web() {
    let addr = actix_server::start();
    drive(addr, "actix-web").await;
}

/// The testing kit's requests (`SignedDelivery::with_method`, `to_http_request`,
/// `to_actix_request`) carry each method to each adapter in-process.
#[actix_web::test]
async fn the_testing_kit_carries_every_method_in_process() {
    use actix_web::{App, HttpRequest, HttpResponse, test, web};
    use axum::Router;
    use axum::routing::any;
    use http_body_util::BodyExt as _;
    use qstash_receiver::tower::QStashLayer;
    use tower::ServiceExt as _;

    async fn axum_echo(method: axum::http::Method, body: axum::body::Bytes) -> Vec<u8> {
        echoed(method.as_str(), &body)
    }
    async fn actix_echo(
        req: HttpRequest,
        qstash_receiver::actix::Verified(body): qstash_receiver::actix::Verified<web::Bytes>,
    ) -> HttpResponse {
        HttpResponse::Ok().body(echoed(req.method().as_str(), &body))
    }

    let axum_app = Router::new()
        .route("/jobs", any(axum_echo))
        .route_layer(QStashLayer::new(common::receiver()));
    let actix_app = test::init_service(
        App::new()
            .app_data(web::Data::new(common::receiver()))
            .route("/jobs", web::route().to(actix_echo)),
    )
    .await;
    for method in METHODS {
        for body in [&b""[..], &b"{\"id\":7}"[..]] {
            let delivery = Signer::new(CURRENT_KEY)
                .delivery(&format!("{PUBLIC_BASE}/jobs"), body)
                .with_method(method);
            let req = delivery.to_http_request().unwrap();
            let res = axum_app.clone().oneshot(req).await.unwrap();
            assert_eq!(res.status(), 200, "axum {method}");
            let bytes = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(bytes, echoed(method, body), "axum {method}");

            let req = delivery.to_actix_request().unwrap().to_request();
            let res = test::call_service(&actix_app, req).await;
            assert_eq!(res.status(), 200, "actix {method}");
            assert_eq!(
                test::read_body(res).await,
                echoed(method, body),
                "actix {method}"
            );
        }
    }
}

/// Behind the layer, axum's own body extractors take the whole verified body up to the
/// receiver's limit: axum's `DefaultBodyLimit` (2 MB by default) no longer refuses a verified
/// 3 MiB delivery with 413.
#[tokio::test]
async fn behind_the_layer_axum_extractors_take_bodies_up_to_the_receivers_limit() {
    use axum::Router;
    use axum::body::Bytes;
    use axum::routing::any;
    use http_body_util::BodyExt as _;
    use qstash_receiver::tower::QStashLayer;
    use tower::ServiceExt as _;

    async fn length(body: Bytes) -> String {
        body.len().to_string()
    }
    let app = Router::new()
        .route("/jobs", any(length))
        .route_layer(QStashLayer::new(common::receiver().max_body_bytes(8 << 20)));
    let body = vec![b'a'; 3 << 20];
    for method in ["POST", "PUT"] {
        let delivery = Signer::new(CURRENT_KEY)
            .delivery(&format!("{PUBLIC_BASE}/jobs"), &body)
            .with_method(method);
        let res = app
            .clone()
            .oneshot(delivery.to_http_request().unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{method}");
        let answer = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(answer, (3usize << 20).to_string(), "{method}");
    }
}
