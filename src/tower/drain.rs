//! [`ReadBody`]: reads a request body under the limit, or drains (reads and drops) the rest of a
//! refused one before its 413 goes out, so that a client still sending gets its answer (why and
//! when: [`QStashLayer::drain_limit`](super::QStashLayer::drain_limit); nginx's
//! `lingering_close` and actix-http do the same).
//!
//! Before the answer, not in the response body: hyper 1 drops a response body once its announced
//! `content-length` is written, and a body without a length would go out chunked and end only
//! once the upload is read, which a client that stops sending on an early error (curl does)
//! would wait for forever.

use std::pin::pin;

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Version};
use http_body::Body;
use http_body_util::{BodyExt as _, LengthLimitError};

use super::BoxError;
use crate::buffer::BodyBuffer;
use crate::{Claims, Receiver, Rejection, VerifiedToken};

/// What reading a body gave.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// The whole body, at most the limit.
    Read(Bytes),
    /// Over the limit (the rest was drained, within the budget, before this was returned).
    TooLarge,
    /// The body failed (a client gone, a malformed chunk).
    Failed,
}

/// Collects `body` into one buffer ([`BodyBuffer`]: at most `limit` bytes whatever the
/// framing, sized by an exact size hint); past the limit, drains at most `budget` more bytes
/// (0: none) before answering [`ReadOutcome::TooLarge`]. Trailers are ignored.
pub(crate) async fn collect<B>(body: B, limit: usize, budget: u64) -> ReadOutcome
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let mut body = pin!(body);
    let mut buffer = BodyBuffer::new(limit, body.size_hint().exact());
    loop {
        let data = match body.frame().await {
            None => return ReadOutcome::Read(buffer.finish()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => continue,
            },
            // Another layer's limit (axum's `DefaultBodyLimit`) is a 413 too.
            Some(Err(error)) => {
                return match is_length_limit(&*error.into()) {
                    true => ReadOutcome::TooLarge,
                    false => ReadOutcome::Failed,
                };
            }
        };
        let n = data.remaining() as u64;
        if buffer.push(data).is_err() {
            // Over the limit: free what was collected, drain the rest.
            drop(buffer);
            drain(body, budget.saturating_sub(n)).await;
            return ReadOutcome::TooLarge;
        }
    }
}

/// Reads and drops the frames of `body` until it ends, fails (a client gone: quietly) or
/// `budget` bytes were read. Never starts on a body announced longer than the budget.
pub(crate) async fn drain<B: Body>(body: B, budget: u64) {
    let mut body = pin!(body);
    let mut left = budget;
    while worth_draining(&*body, left) {
        let Some(Ok(frame)) = body.frame().await else {
            return;
        };
        left = left.saturating_sub(frame.data_ref().map_or(0, Buf::remaining) as u64);
    }
}

/// Whether draining `body` is worth going on with `budget` bytes (it could end within them).
fn worth_draining<B: Body>(body: &B, budget: u64) -> bool {
    budget > 0 && !body.is_end_stream() && body.size_hint().lower() <= budget
}

/// The drain budget of a request: `limit` over HTTP/1, 0 (none) over HTTP/2 and later (a
/// refused stream is reset alone). `unread`: refused by its head, its body not polled yet; then
/// none either for `Expect: 100-continue` (its client waits for the go-ahead, which hyper sends
/// only once the body is polled) or a `Content-Length` over `limit` (it could not end within it).
pub(crate) fn budget_for(version: Version, headers: &HeaderMap, limit: u64, unread: bool) -> u64 {
    let http1 = matches!(version, Version::HTTP_10 | Version::HTTP_11);
    let header = |name| headers.get(name).map(HeaderValue::as_bytes);
    let unsent = unread
        && (header(http::header::EXPECT).is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
            || crate::head::content_length(header(http::header::CONTENT_LENGTH)) > Some(limit));
    if http1 && !unsent { limit } else { 0 }
}

/// The body as read, checked against the token: the verified bytes and the claims, or the
/// rejection (413 past the limit, 400 when the read failed, 401 on a wrong hash). Shared by the
/// layer and axum's standalone extractors.
pub(crate) fn check_read(
    receiver: &Receiver,
    token: VerifiedToken,
    read: ReadOutcome,
) -> Result<(Bytes, Claims), Rejection> {
    match read {
        ReadOutcome::Read(bytes) => receiver
            .check_body(token, &bytes)
            .map(|claims| (bytes, claims)),
        ReadOutcome::TooLarge => Err(receiver.too_large()),
        ReadOutcome::Failed => Err(Rejection::BodyRead(
            "the connection failed while the body was read".to_owned(),
        )),
    }
}

/// Whether a body error is (or wraps) a length limit being exceeded.
fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |e| e.source()).any(|e| e.is::<LengthLimitError>())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::{FutureExt, StreamExt, stream};
    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    type Item = Result<Frame<Bytes>, std::io::Error>;

    /// A body of `items` (no size hint), and how many of them were polled.
    fn body(
        items: Vec<Item>,
    ) -> (
        impl Body<Data = Bytes, Error = std::io::Error>,
        Arc<AtomicUsize>,
    ) {
        let polled = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&polled);
        let stream = stream::iter(items).map(move |item| {
            counter.fetch_add(1, Ordering::SeqCst);
            item
        });
        (StreamBody::new(stream), polled)
    }

    fn data(n: usize) -> Item {
        Ok(Frame::data(Bytes::from(vec![b'a'; n])))
    }

    fn run<T>(read: impl Future<Output = T>) -> T {
        Box::pin(read).now_or_never().expect("ready bodies")
    }

    #[test]
    fn collects_frames_up_to_the_limit_and_skips_trailers() {
        let (b, _) = body(vec![
            data(3),
            data(0),
            Ok(Frame::trailers(HeaderMap::new())),
            data(2),
        ]);
        match run(collect(b, 5, 0)) {
            ReadOutcome::Read(bytes) => assert_eq!(&bytes[..], b"aaaaa"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_byte_over_the_limit_without_budget_stops_there() {
        let (b, polled) = body(vec![data(3), data(3), data(3)]);
        assert!(matches!(run(collect(b, 5, 0)), ReadOutcome::TooLarge));
        assert_eq!(polled.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn past_the_limit_the_rest_is_drained_within_the_budget() {
        // The frame over the limit counts: 3 + 3 + 3 reach the budget of 9, the 5th frame
        // is never polled.
        let (b, polled) = body(vec![data(3), data(3), data(3), data(3), data(3)]);
        assert!(matches!(run(collect(b, 5, 9)), ReadOutcome::TooLarge));
        assert_eq!(polled.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn errors_fail_a_read_and_end_a_drain_quietly() {
        let (b, _) = body(vec![data(1), Err(std::io::Error::other("gone"))]);
        assert!(matches!(run(collect(b, 5, 9)), ReadOutcome::Failed));

        let (b, polled) = body(vec![data(1), Err(std::io::Error::other("gone")), data(1)]);
        run(drain(b, 100));
        assert_eq!(polled.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn only_http1_is_drained_and_expect_continue_only_once_read() {
        let mut expect = HeaderMap::new();
        expect.insert(http::header::EXPECT, "100-Continue".parse().unwrap());
        let none = HeaderMap::new();
        assert_eq!(budget_for(Version::HTTP_11, &none, 7, true), 7);
        assert_eq!(budget_for(Version::HTTP_10, &none, 7, true), 7);
        assert_eq!(budget_for(Version::HTTP_2, &none, 7, false), 0);
        assert_eq!(budget_for(Version::HTTP_11, &expect, 7, true), 0);
        assert_eq!(budget_for(Version::HTTP_11, &expect, 7, false), 7);
    }

    #[test]
    fn one_chunk_is_kept_without_a_copy() {
        let chunk = Bytes::from_static(b"hello world");
        let read = run(collect(http_body_util::Full::new(chunk.clone()), 64, 0));
        let ReadOutcome::Read(bytes) = read else {
            panic!("{read:?}");
        };
        assert_eq!(bytes, chunk);
        assert_eq!(bytes.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn chunks_are_joined_in_order() {
        let frames = [&b"ab"[..], b"", b"cde", b"f"]
            .iter()
            .map(|p| Ok(Frame::data(Bytes::copy_from_slice(p))))
            .collect();
        let (b, _) = body(frames);
        let read = run(collect(b, 6, 0));
        let ReadOutcome::Read(bytes) = read else {
            panic!("{read:?}");
        };
        assert_eq!(&bytes[..], b"abcdef");
        let (b, _) = body(Vec::new());
        assert!(matches!(run(collect(b, 0, 0)), ReadOutcome::Read(b) if b.is_empty()));
    }

    #[test]
    fn another_layers_limit_is_too_large_and_other_errors_fail() {
        // axum's `DefaultBodyLimit` is a `Limited` inside: its error is a 413 too.
        let (b, _) = body(vec![data(3), data(3)]);
        let limited = http_body_util::Limited::new(b, 4);
        assert!(matches!(
            run(collect(limited, 100, 0)),
            ReadOutcome::TooLarge
        ));
        let (b, _) = body(vec![data(1), Err(std::io::Error::other("gone"))]);
        assert!(matches!(run(collect(b, 100, 0)), ReadOutcome::Failed));
    }
}
