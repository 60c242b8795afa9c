//! Reading the payload under a limit, the actix way.

use actix_web::dev;
use actix_web::error::PayloadError;
use bytes::{Bytes, BytesMut};

use futures_util::StreamExt as _;

use crate::{Receiver, Rejection};

/// Reads the whole payload, refusing (413) as soon as more than `receiver.limit()` bytes arrived:
/// never buffers more than the limit plus one chunk. `announced` (the `Content-Length`, already
/// checked against the limit) sizes the buffer.
pub(super) async fn read_limited(
    payload: &mut dev::Payload,
    receiver: &Receiver,
    announced: Option<u64>,
) -> Result<Bytes, Rejection> {
    let limit = receiver.limit();
    // A body that arrives in one chunk (the common case for small deliveries) is kept as it
    // is, without a copy; a second chunk starts a buffer.
    let mut first: Option<Bytes> = None;
    let mut buf: Option<BytesMut> = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| payload_error(&e, receiver))?;
        let held = buf
            .as_ref()
            .map_or_else(|| first.as_ref().map_or(0, Bytes::len), BytesMut::len);
        if chunk.len() > limit.saturating_sub(held) {
            return Err(receiver.too_large());
        }
        match (&mut buf, first.take()) {
            (Some(buf), _) => buf.extend_from_slice(&chunk),
            (None, None) => first = Some(chunk),
            (None, Some(previous)) => {
                let capacity = announced
                    .and_then(|n| usize::try_from(n).ok())
                    .unwrap_or(8 * 1024)
                    .min(limit)
                    .max(previous.len() + chunk.len());
                let mut b = BytesMut::with_capacity(capacity);
                b.extend_from_slice(&previous);
                b.extend_from_slice(&chunk);
                buf = Some(b);
            }
        }
    }
    Ok(match buf {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// A transport error while reading; an overflow reported by actix itself is a 413.
pub(super) fn payload_error(e: &PayloadError, receiver: &Receiver) -> Rejection {
    match e {
        PayloadError::Overflow => receiver.too_large(),
        other => Rejection::BodyRead(other.to_string()),
    }
}
