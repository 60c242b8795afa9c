//! [`ReadBody`]: reads a request body under the limit, and drains (reads and discards) the rest
//! of a refused one before the answer goes out.
//!
//! Why drain: when a request is refused before its body was read to the end (413 by
//! `Content-Length` or past the limit), hyper sends the answer and closes the connection with
//! the client's unread upload still in the socket; the kernel then resets the connection and a
//! client still sending can lose the answer it had not read yet. Reading the rest first
//! (nginx's `lingering_close`, actix-http's payload drain) lets every client read its answer.
//! Each frame is dropped as it arrives: memory stays O(1) per connection. Only requests whose
//! token verified are drained (the service decides): an unauthenticated one is answered at once.
//!
//! Why before the answer and not in the response body: hyper 1 drops a response body as soon as
//! the length it announced (`content-length`, from an exact size hint) is written, and a body
//! without a length would be sent chunked and end only once the upload is read, which a client
//! that stops sending on an early error (curl does) would wait for forever.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Version};
use http_body::Body;
use http_body_util::LengthLimitError;
use pin_project_lite::pin_project;

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

#[derive(Debug)]
enum Phase {
    /// Collecting frames into one buffer, at most the limit whatever the framing (see
    /// [`BodyBuffer`]); past it, drain at most `drain` bytes.
    Collecting {
        buffer: BodyBuffer,
        drain: u64,
    },
    /// Reading and discarding frames; at most `left` more bytes.
    Draining {
        left: u64,
    },
    Done,
}

pin_project! {
    /// A future reading a request body: collected under a limit, or only drained. Keeps the body
    /// pinned in place: no boxing and no `Send` or `'static` bound on it.
    #[derive(Debug)]
    pub(crate) struct ReadBody<B> {
        #[pin]
        body: B,
        phase: Phase,
    }
}

impl<B: Body> ReadBody<B> {
    /// Collects `body`, at most `limit` bytes; past the limit, drains at most `drain` more bytes
    /// (0: none) before answering [`ReadOutcome::TooLarge`]. An exact size hint (a
    /// `Content-Length`) within the limit sizes the buffer.
    pub(crate) fn collect(body: B, limit: usize, drain: u64) -> Self {
        let buffer = BodyBuffer::new(limit, body.size_hint().exact());
        Self {
            body,
            phase: Phase::Collecting { buffer, drain },
        }
    }

    /// Only drains `body`: at most `budget` bytes, until it ends or fails. Completes with
    /// [`ReadOutcome::TooLarge`] (to be ignored).
    pub(crate) fn drain(body: B, budget: u64) -> Self {
        Self {
            body,
            phase: Phase::Draining { left: budget },
        }
    }
}

/// Whether draining `body` is worth starting with `budget` bytes.
fn worth_draining<B: Body>(body: &B, budget: u64) -> bool {
    budget > 0 && !body.is_end_stream() && body.size_hint().lower() <= budget
}

/// The drain budget for a request of `version` with `headers`: `budget`, or 0 (no draining) for
/// HTTP/2 and later (a refused stream is reset on its own, the connection is not lost).
/// `before_reading`: the body has not been polled yet; then an `Expect: 100-continue` request is
/// not drained either (its client waits for the go-ahead, which hyper sends only when the body
/// is polled, and sends nothing otherwise).
pub(crate) fn budget_for(
    version: Version,
    headers: &HeaderMap,
    budget: u64,
    before_reading: bool,
) -> u64 {
    let http1 = matches!(version, Version::HTTP_10 | Version::HTTP_11);
    let expects_continue = before_reading
        && headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if http1 && !expects_continue {
        budget
    } else {
        0
    }
}

/// The budget for draining `body` from the start (a refusal before the body was read): `budget`
/// as [`budget_for`] gives it, and 0 when the body is already over, or is announced longer than
/// the budget (by its size hint or `Content-Length`: it could not end within the budget,
/// answering at once is better).
pub(crate) fn budget_before_reading<B: Body>(
    version: Version,
    headers: &HeaderMap,
    body: &B,
    budget: u64,
) -> u64 {
    let budget = budget_for(version, headers, budget, true);
    let announced = super::content_length(headers).unwrap_or(0);
    if announced <= budget && worth_draining(body, budget) {
        budget
    } else {
        0
    }
}

impl<B> Future for ReadBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = ReadOutcome;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.phase {
                Phase::Collecting { buffer, drain } => {
                    match ready!(this.body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            // Trailers are ignored (as `Collected::to_bytes` does).
                            let Ok(data) = frame.into_data() else {
                                continue;
                            };
                            let n = data.remaining();
                            if buffer.push(data).is_err() {
                                // Over the limit: free what was collected, drain the rest.
                                let left = drain.saturating_sub(n as u64);
                                if !worth_draining(&*this.body, left) {
                                    *this.phase = Phase::Done;
                                    return Poll::Ready(ReadOutcome::TooLarge);
                                }
                                *this.phase = Phase::Draining { left };
                            }
                        }
                        Some(Err(error)) => {
                            *this.phase = Phase::Done;
                            // Another layer's limit (axum's `DefaultBodyLimit`) is a 413 too.
                            return Poll::Ready(if is_length_limit(&*error.into()) {
                                ReadOutcome::TooLarge
                            } else {
                                ReadOutcome::Failed
                            });
                        }
                        None => {
                            let Phase::Collecting { buffer, .. } =
                                std::mem::replace(this.phase, Phase::Done)
                            else {
                                return Poll::Ready(ReadOutcome::Failed);
                            };
                            return Poll::Ready(ReadOutcome::Read(buffer.finish()));
                        }
                    }
                }
                Phase::Draining { left } => {
                    if *left == 0 || this.body.is_end_stream() {
                        *this.phase = Phase::Done;
                        return Poll::Ready(ReadOutcome::TooLarge);
                    }
                    match ready!(this.body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            let n = frame.data_ref().map_or(0, Buf::remaining);
                            *left = left.saturating_sub(n as u64);
                        }
                        // A client gone ends the drain quietly.
                        Some(Err(_)) | None => {
                            *this.phase = Phase::Done;
                            return Poll::Ready(ReadOutcome::TooLarge);
                        }
                    }
                }
                // Polled after completion: nothing more to read.
                Phase::Done => return Poll::Ready(ReadOutcome::Failed),
            }
        }
    }
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
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if e.is::<LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
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

    fn run<B>(read: ReadBody<B>) -> ReadOutcome
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
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
        match run(ReadBody::collect(b, 5, 0)) {
            ReadOutcome::Read(bytes) => assert_eq!(&bytes[..], b"aaaaa"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_byte_over_the_limit_without_budget_stops_there() {
        let (b, polled) = body(vec![data(3), data(3), data(3)]);
        assert!(matches!(
            run(ReadBody::collect(b, 5, 0)),
            ReadOutcome::TooLarge
        ));
        assert_eq!(polled.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn past_the_limit_the_rest_is_drained_within_the_budget() {
        // The frame over the limit counts: 3 + 3 + 3 reach the budget of 9, the 5th frame
        // is never polled.
        let (b, polled) = body(vec![data(3), data(3), data(3), data(3), data(3)]);
        assert!(matches!(
            run(ReadBody::collect(b, 5, 9)),
            ReadOutcome::TooLarge
        ));
        assert_eq!(polled.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn errors_fail_a_read_and_end_a_drain_quietly() {
        let (b, _) = body(vec![data(1), Err(std::io::Error::other("gone"))]);
        assert!(matches!(
            run(ReadBody::collect(b, 5, 9)),
            ReadOutcome::Failed
        ));

        let (b, polled) = body(vec![data(1), Err(std::io::Error::other("gone")), data(1)]);
        assert!(matches!(
            run(ReadBody::drain(b, 100)),
            ReadOutcome::TooLarge
        ));
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
        let read = run(ReadBody::collect(
            http_body_util::Full::new(chunk.clone()),
            64,
            0,
        ));
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
        let read = run(ReadBody::collect(b, 6, 0));
        let ReadOutcome::Read(bytes) = read else {
            panic!("{read:?}");
        };
        assert_eq!(&bytes[..], b"abcdef");
        let (b, _) = body(Vec::new());
        assert!(matches!(run(ReadBody::collect(b, 0, 0)), ReadOutcome::Read(b) if b.is_empty()));
    }

    #[test]
    fn another_layers_limit_is_too_large_and_other_errors_fail() {
        // axum's `DefaultBodyLimit` is a `Limited` inside: its error is a 413 too.
        let (b, _) = body(vec![data(3), data(3)]);
        let limited = http_body_util::Limited::new(b, 4);
        assert!(matches!(
            run(ReadBody::collect(limited, 100, 0)),
            ReadOutcome::TooLarge
        ));
        let (b, _) = body(vec![data(1), Err(std::io::Error::other("gone"))]);
        assert!(matches!(
            run(ReadBody::collect(b, 100, 0)),
            ReadOutcome::Failed
        ));
    }
}
