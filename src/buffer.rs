//! [`BodyBuffer`]: a request body collected under a limit into one buffer, whatever its framing.
//! Shared by the tower layer, axum's extractors and actix-web.
//!
//! Memory per request is the limit plus a constant: one chunk is kept as it came; from the
//! second on, bytes go into one `Vec<u8>` never larger than the limit (`reserve_exact`:
//! `BytesMut` doubles past it). A list of frames would hold ~36 MB for 1 MiB sent one byte per
//! frame (`valgrind --tool=dhat` on the tower test `a_body_in_one_byte_frames_is_verified_and_echoed`).

use bytes::{Buf, Bytes};

/// The first buffer size for a body of unknown length that arrives in several chunks.
const INITIAL_CAPACITY: usize = 8 * 1024;

/// A chunk would take the body over the limit (nothing of it was kept).
#[derive(Debug)]
pub(crate) struct TooLarge;

/// A body being collected, at most `limit` bytes.
#[derive(Debug)]
pub(crate) struct BodyBuffer {
    /// The only chunk so far, as it came.
    first: Option<Bytes>,
    /// From the second chunk on: every byte (the first chunk's included).
    joined: Vec<u8>,
    limit: usize,
    /// The announced length, when there is one within the limit: the buffer's size.
    announced: Option<usize>,
}

impl BodyBuffer {
    /// An empty body of at most `limit` bytes; `announced` (a `Content-Length` or an exact size
    /// hint) sizes the buffer when it is within the limit.
    pub(crate) fn new(limit: usize, announced: Option<u64>) -> Self {
        Self {
            first: None,
            joined: Vec::new(),
            limit,
            announced: announced
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n <= limit),
        }
    }

    /// The bytes collected so far.
    pub(crate) fn len(&self) -> usize {
        match &self.first {
            Some(first) => first.len(),
            None => self.joined.len(),
        }
    }

    /// Adds `chunk`; [`TooLarge`] (the chunk not taken) when the body would exceed the limit.
    pub(crate) fn push(&mut self, mut chunk: impl Buf) -> Result<(), TooLarge> {
        let n = chunk.remaining();
        let len = self.len();
        if n > self.limit.saturating_sub(len) {
            return Err(TooLarge);
        }
        if n == 0 {
            return Ok(());
        }
        if len == 0 && self.joined.capacity() == 0 {
            // The first chunk: kept as it came (`Bytes` to `Bytes` is no copy).
            self.first = Some(chunk.copy_to_bytes(n));
            return Ok(());
        }
        self.reserve(len + n);
        if let Some(first) = self.first.take() {
            self.joined.extend_from_slice(&first);
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let taken = part.len();
            self.joined.extend_from_slice(part);
            chunk.advance(taken);
        }
        Ok(())
    }

    /// Room for `needed` bytes in all (at most the limit): the announced length when it is
    /// enough, else twice the current capacity; never more than the limit.
    fn reserve(&mut self, needed: usize) {
        let capacity = self.joined.capacity();
        if needed <= capacity {
            return;
        }
        let target = match self.announced {
            Some(announced) if announced >= needed => announced,
            _ => needed.max(capacity.saturating_mul(2)).max(INITIAL_CAPACITY),
        }
        .min(self.limit)
        .max(needed);
        self.joined
            .reserve_exact(target.saturating_sub(self.joined.len()));
    }

    /// The body, in order, as one `Bytes` (no copy).
    pub(crate) fn finish(self) -> Bytes {
        match self.first {
            Some(first) => first,
            None => Bytes::from(self.joined),
        }
    }

    /// The buffer's capacity (the first chunk's length while it is the only one).
    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.first
            .as_ref()
            .map_or(self.joined.capacity(), Bytes::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_chunk_is_kept_as_it_came() {
        let chunk = Bytes::from_static(b"hello");
        let mut buffer = BodyBuffer::new(64, None);
        buffer.push(chunk.clone()).unwrap();
        buffer.push(Bytes::new()).unwrap();
        let body = buffer.finish();
        assert_eq!(body.as_ptr(), chunk.as_ptr());
        assert!(BodyBuffer::new(0, None).finish().is_empty());
    }

    #[test]
    fn many_chunks_grow_one_buffer_capped_at_the_limit() {
        let limit = 100_000;
        let mut buffer = BodyBuffer::new(limit, None);
        for i in 0..limit {
            buffer.push(&[(i % 251) as u8][..]).unwrap();
            assert!(buffer.capacity() <= limit, "{} at {i}", buffer.capacity());
        }
        assert!(matches!(buffer.push(&b"x"[..]), Err(TooLarge)));
        let body = buffer.finish();
        assert_eq!(body.len(), limit);
        assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    }

    #[test]
    fn the_announced_length_sizes_the_buffer_once() {
        let mut buffer = BodyBuffer::new(1000, Some(300));
        buffer.push(&[1u8; 100][..]).unwrap();
        buffer.push(&[2u8; 100][..]).unwrap();
        assert_eq!(buffer.capacity(), 300);
        buffer.push(&[3u8; 100][..]).unwrap();
        assert_eq!(buffer.capacity(), 300);
        // Longer than announced: grows, still within the limit.
        buffer.push(&[4u8; 700][..]).unwrap();
        assert_eq!(buffer.capacity(), 1000);
        assert!(matches!(buffer.push(&[5u8][..]), Err(TooLarge)));
        assert_eq!(buffer.len(), 1000);
        // An announced length over the limit is not trusted for the size.
        let mut buffer = BodyBuffer::new(10, Some(1 << 40));
        buffer.push(&[1u8; 4][..]).unwrap();
        buffer.push(&[1u8; 4][..]).unwrap();
        assert_eq!(buffer.capacity(), 10);
    }
}
