//! Reading the payload under a limit, the actix way.

use actix_web::dev;
use actix_web::error::PayloadError;
use bytes::Bytes;

use futures_util::StreamExt as _;

use crate::buffer::BodyBuffer;
use crate::{Receiver, Rejection};

/// Reads the whole payload, refusing (413) as soon as more than `receiver.get_max_body_bytes()` bytes arrived:
/// one buffer, at most the limit (see [`BodyBuffer`]). `announced` (the `Content-Length`, already
/// checked against the limit) sizes the buffer.
pub(super) async fn read_limited(
    payload: &mut dev::Payload,
    receiver: &Receiver,
    announced: Option<u64>,
) -> Result<Bytes, Rejection> {
    let mut buffer = BodyBuffer::new(receiver.get_max_body_bytes(), announced);
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| payload_error(&e, receiver))?;
        buffer.push(chunk).map_err(|_| receiver.too_large())?;
    }
    Ok(buffer.finish())
}

/// A transport error while reading; an overflow reported by actix itself is a 413.
pub(super) fn payload_error(e: &PayloadError, receiver: &Receiver) -> Rejection {
    match e {
        PayloadError::Overflow => receiver.too_large(),
        other => Rejection::BodyRead(other.to_string()),
    }
}
