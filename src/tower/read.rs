//! [`ReadBody`]: a request body read into one [`Bytes`] under the limit.
//!
//! `http_body_util`'s `Limited` + `collect` does the same with a queue of chunks and a copy
//! into one buffer at the end. This reader keeps the first chunk as it is (no allocation, no
//! copy for the common one-chunk body) and copies further chunks into a buffer sized from the
//! body's size hint (its `Content-Length`), capped at the limit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http_body::Body;
use http_body_util::LengthLimitError;
use pin_project_lite::pin_project;

use super::BoxError;
use crate::{Claims, Receiver, Rejection, VerifiedToken};

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// More than the limit arrived.
    TooLarge,
    /// The body failed (a closed connection, or a limit of another layer).
    Body(BoxError),
}

pin_project! {
    /// Reads a body to its end, at most `limit` bytes (trailers are ignored).
    pub(crate) struct ReadBody<B> {
        #[pin]
        body: B,
        limit: usize,
        // The first chunk, kept as it came.
        first: Option<Bytes>,
        // The chunks once there is more than one.
        joined: Option<BytesMut>,
    }
}

impl<B> ReadBody<B> {
    pub(crate) fn new(body: B, limit: usize) -> Self {
        Self {
            body,
            limit,
            first: None,
            joined: None,
        }
    }
}

impl<B> Future for ReadBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<Bytes, ReadError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let Some(frame) = ready!(this.body.as_mut().poll_frame(cx)) else {
                let bytes = match (this.joined.take(), this.first.take()) {
                    (Some(joined), _) => joined.freeze(),
                    (None, Some(first)) => first,
                    (None, None) => Bytes::new(),
                };
                return Poll::Ready(Ok(bytes));
            };
            let frame = frame.map_err(|e| ReadError::Body(e.into()))?;
            let Ok(mut data) = frame.into_data() else {
                continue; // trailers
            };
            let len = data.remaining();
            let read = this.first.as_ref().map_or(0, Bytes::len)
                + this.joined.as_ref().map_or(0, BytesMut::len);
            if read.saturating_add(len) > *this.limit {
                return Poll::Ready(Err(ReadError::TooLarge));
            }
            if let Some(joined) = this.joined.as_mut() {
                joined.put(data);
            } else if let Some(first) = this.first.take() {
                let hint = this.body.size_hint().lower();
                let capacity = usize::try_from(hint)
                    .unwrap_or(usize::MAX)
                    .saturating_add(first.len() + len)
                    .min(*this.limit);
                let mut joined = BytesMut::with_capacity(capacity);
                joined.put(first);
                joined.put(data);
                *this.joined = Some(joined);
            } else if len > 0 {
                *this.first = Some(data.copy_to_bytes(len));
            }
        }
    }
}

/// The body as read by [`ReadBody`], checked against the token: the verified bytes and the
/// claims, or the rejection (413 past the limit, also when another layer's
/// [`LengthLimitError`] fired; 400 when the read failed; 401 on a wrong hash). Shared by the
/// layer and axum's standalone extractors.
pub(crate) fn check_read(
    receiver: &Receiver,
    token: VerifiedToken,
    read: Result<Bytes, ReadError>,
) -> Result<(Bytes, Claims), Rejection> {
    match read {
        Ok(bytes) => receiver
            .check_body(token, &bytes)
            .map(|claims| (bytes, claims)),
        Err(ReadError::TooLarge) => Err(receiver.too_large()),
        Err(ReadError::Body(error)) if is_length_limit(&*error) => Err(receiver.too_large()),
        Err(ReadError::Body(_)) => Err(Rejection::BodyRead(
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
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, Limited, StreamBody};
    use std::convert::Infallible;

    fn chunks(parts: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = Infallible> + use<> {
        let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = parts
            .iter()
            .map(|p| Ok(http_body::Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn read<B>(body: B, limit: usize) -> Result<Bytes, ReadError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(ReadBody::new(body, limit))
    }

    #[test]
    fn one_chunk_is_kept_without_a_copy() {
        let chunk = Bytes::from_static(b"hello world");
        let bytes = read(Full::new(chunk.clone()), 64).unwrap();
        assert_eq!(bytes, chunk);
        assert_eq!(bytes.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn chunks_are_joined_in_order() {
        let bytes = read(chunks(&[b"ab", b"", b"cde", b"f"]), 6).unwrap();
        assert_eq!(&bytes[..], b"abcdef");
        assert_eq!(&read(chunks(&[]), 0).unwrap()[..], b"");
        assert_eq!(&read(chunks(&[b"", b"x"]), 1).unwrap()[..], b"x");
    }

    #[test]
    fn more_than_the_limit_is_too_large() {
        assert!(matches!(
            read(chunks(&[b"abc", b"def"]), 5),
            Err(ReadError::TooLarge)
        ));
        assert!(matches!(
            read(Full::new(Bytes::from_static(b"abcdef")), 5),
            Err(ReadError::TooLarge)
        ));
        // Another layer's limit (axum's `DefaultBodyLimit` is a `Limited`) is a body error
        // that `check_read` answers 413.
        let limited = Limited::new(chunks(&[b"abc", b"def"]), 4);
        let Err(ReadError::Body(error)) = read(limited, 100) else {
            panic!("expected the inner limit's error");
        };
        assert!(is_length_limit(&*error));
    }

    #[test]
    fn trailers_are_skipped() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        let body =
            Full::new(Bytes::from_static(b"data")).with_trailers(async { Some(Ok(trailers)) });
        assert_eq!(&read(body, 10).unwrap()[..], b"data");
    }
}
