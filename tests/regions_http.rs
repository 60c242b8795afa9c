//! QStash's multi-region mode end to end: a receiver whose keys come from an environment map
//! (`Verifier::from_vars`, the rules of `Verifier::from_env`), behind the axum layer and the
//! actix-web middleware, on real servers on 127.0.0.1, driven by a real HTTP client.
#![cfg(all(feature = "test-utils", any(feature = "axum", feature = "actix-web")))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::HashMap;

use common::regions::{
    DEFAULT_CURRENT, DEFAULT_NEXT, EU_CURRENT, EU_NEXT, US_CURRENT, US_NEXT, env,
};
use qstash_receiver::test_utils::Signer;
use qstash_receiver::{Receiver, UrlPolicy, Verifier};

const PUBLIC_BASE: &str = "https://receiver.test";

fn receiver(env: &HashMap<&'static str, &'static str>) -> Receiver {
    let verifier = Verifier::from_vars(|name| env.get(name).map(|v| (*v).to_owned())).unwrap();
    Receiver::new(verifier).url_policy(UrlPolicy::public_base(PUBLIC_BASE).unwrap())
}

/// One delivery to `POST /jobs` and the answer expected: `None`, the handler echoed the body;
/// `Some(code)`, a 401 with this code.
struct Case {
    name: &'static str,
    key: &'static str,
    region: Option<&'static str>,
    refused: Option<&'static str>,
}

/// The deliveries and answers for the environment with (`default`) or without default keys.
fn cases(default: bool) -> Vec<Case> {
    let case = |name, key, region, refused| Case {
        name,
        key,
        region,
        refused,
    };
    let mut cases = vec![
        case(
            "EU-signed from eu-central-1",
            EU_CURRENT,
            Some("eu-central-1"),
            None,
        ),
        case("EU next key", EU_NEXT, Some("EU-CENTRAL-1"), None),
        case(
            "US-signed from US-EAST-1",
            US_CURRENT,
            Some("US-EAST-1"),
            None,
        ),
        case("US next key", US_NEXT, Some("US-EAST-1"), None),
        case(
            "EU-signed, sent as US-EAST-1",
            EU_CURRENT,
            Some("US-EAST-1"),
            Some("invalid_signature"),
        ),
        case(
            "US-signed, sent as EU-CENTRAL-1",
            US_NEXT,
            Some("EU-CENTRAL-1"),
            Some("invalid_signature"),
        ),
        case(
            "EU-signed, no region",
            EU_CURRENT,
            None,
            Some("invalid_signature"),
        ),
    ];
    if default {
        cases.extend([
            case("default keys, no region", DEFAULT_CURRENT, None, None),
            case(
                "default next key, unknown region",
                DEFAULT_NEXT,
                Some("AP-SOUTHEAST-1"),
                None,
            ),
            case(
                "default keys, for a region with keys",
                DEFAULT_CURRENT,
                Some("EU-CENTRAL-1"),
                Some("invalid_signature"),
            ),
        ]);
    } else {
        cases.push(case(
            "no region and no default keys",
            DEFAULT_CURRENT,
            None,
            Some("invalid_signature"),
        ));
    }
    cases
}

/// The headers of a delivery of `body` to `/jobs` signed with `key`, with `region` as its only
/// `Upstash-Region` (none when `None`).
fn headers(case: &Case, body: &[u8]) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = Signer::new(case.key)
        .delivery(&format!("{PUBLIC_BASE}/jobs"), body)
        .headers
        .into_iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("upstash-region"))
        .collect();
    if let Some(region) = case.region {
        headers.push(("upstash-region".to_owned(), region.to_owned()));
    }
    headers
}

fn assert_answer(case: &Case, how: &str, status: u16, body: &[u8], sent: &[u8]) {
    match case.refused {
        None => {
            assert_eq!(status, 200, "{how}: {}", case.name);
            assert_eq!(body, sent, "{how}: {}", case.name);
        }
        Some(code) => {
            assert_eq!(status, 401, "{how}: {}", case.name);
            let json: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(json["error"], code, "{how}: {}", case.name);
        }
    }
}

mod client {
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    /// POSTs `body` with `headers` to `url` over a real connection: the status and the body.
    pub(crate) async fn post(url: &str, headers: &[(String, String)], body: &[u8]) -> (u16, Bytes) {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let mut request = hyper::Request::post(url).header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let response = client
            .request(
                request
                    .body(Full::new(Bytes::copy_from_slice(body)))
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }
}

#[cfg(feature = "axum")]
mod axum_server {
    use axum::Router;
    use axum::body::Bytes;
    use axum::routing::post;
    use qstash_receiver::tower::QStashLayer;

    use super::*;

    #[tokio::test]
    async fn deliveries_are_verified_with_the_keys_their_region_names() {
        for default in [true, false] {
            let app = Router::new()
                .route("/jobs", post(|body: Bytes| async move { body }))
                .route_layer(QStashLayer::new(receiver(&env(default))));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move { axum::serve(listener, app).await });
            for case in cases(default) {
                let body = format!(r#"{{"case":"{}"}}"#, case.name).into_bytes();
                let (status, answer) = client::post(
                    &format!("http://{addr}/jobs"),
                    &headers(&case, &body),
                    &body,
                )
                .await;
                assert_answer(&case, "axum", status, &answer, &body);
            }
            server.abort();
        }
    }
}

#[cfg(feature = "actix-web")]
mod actix_server {
    use actix_web::{App, HttpResponse, HttpServer, web};
    use qstash_receiver::actix::QStashMiddleware;

    use super::*;

    #[actix_web::test]
    async fn deliveries_are_verified_with_the_keys_their_region_names() {
        for default in [true, false] {
            let receiver = receiver(&env(default));
            let server =
                HttpServer::new(move || {
                    App::new().service(
                        web::resource("/jobs")
                            .wrap(QStashMiddleware::new(receiver.clone()))
                            .route(web::post().to(|body: web::Bytes| async move {
                                HttpResponse::Ok().body(body)
                            })),
                    )
                })
                .workers(1)
                .disable_signals()
                .bind(("127.0.0.1", 0))
                .unwrap();
            let addr = server.addrs()[0];
            let server = server.run();
            let handle = server.handle();
            actix_web::rt::spawn(server);
            for case in cases(default) {
                let body = format!(r#"{{"case":"{}"}}"#, case.name).into_bytes();
                let (status, answer) = client::post(
                    &format!("http://{addr}/jobs"),
                    &headers(&case, &body),
                    &body,
                )
                .await;
                assert_answer(&case, "actix-web", status, &answer, &body);
            }
            handle.stop(true).await;
        }
    }
}
