//! Helpers shared by the tower and axum integration tests: requests built from the shared
//! cases, bodies that count their polls or stream without a length, a loopback HTTP client.
#![allow(dead_code, unreachable_pub)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::common::Case;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// A request for `case` at `uri` (a path for oneshot, an absolute URL for a real server).
pub fn case_request(case: &Case, uri: &str) -> Request<TestBody> {
    let mut builder = Request::post(uri).header("content-type", "application/json");
    for (name, value) in &case.headers {
        builder = builder.header(name, value);
    }
    builder.body(full(case.body.clone())).unwrap()
}

/// Asserts that `status` and `body` are the answer `case` expects: the echoed body, or the JSON
/// rejection with the expected code.
pub fn assert_case(case: &Case, status: u16, content_type: Option<&str>, body: &[u8]) {
    assert_eq!(
        status,
        case.status,
        "{}: {}",
        case.name,
        String::from_utf8_lossy(body)
    );
    match case.code {
        None => assert_eq!(body, &case.body[..], "{}: echoed body", case.name),
        Some(code) => {
            assert_eq!(content_type, Some("application/json"), "{}", case.name);
            let json: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(json["error"], code, "{}", case.name);
            assert!(
                json["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{}",
                case.name
            );
        }
    }
}

pub async fn read_response<B>(response: Response<B>) -> (u16, Option<String>, Bytes)
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, body)
}

/// A loopback HTTP/1 client.
pub fn client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A body that counts how often it is polled, and yields `bytes` once.
#[derive(Debug)]
pub struct CountingBody {
    pub polls: Arc<AtomicUsize>,
    bytes: Option<Bytes>,
}

impl CountingBody {
    pub fn new(bytes: impl Into<Bytes>) -> (Self, Arc<AtomicUsize>) {
        let polls = Arc::new(AtomicUsize::new(0));
        (
            Self {
                polls: Arc::clone(&polls),
                bytes: Some(bytes.into()),
            },
            polls,
        )
    }
}

impl Body for CountingBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        Poll::Ready(self.bytes.take().map(|b| Ok(Frame::data(b))))
    }
}

/// A body of `total` bytes (`b'a'`) in 64 KiB chunks, with no announced length (chunked).
#[derive(Debug)]
pub struct ChunkedBody {
    remaining: usize,
}

impl ChunkedBody {
    pub fn new(total: usize) -> Self {
        Self { remaining: total }
    }
}

impl Body for ChunkedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(64 * 1024);
        self.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'a'; n])))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
