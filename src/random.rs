//! Unpredictable bytes for lease tokens and test `jti`s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Fills `buf` from the operating system's generator. Should the OS refuse (it does not on any
/// supported platform), falls back to hashing the time, a process-wide counter and the process
/// id, which is unique but not secret.
pub(crate) fn fill(buf: &mut [u8]) {
    if getrandom::fill(buf).is_ok() {
        return;
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for chunk in buf.chunks_mut(32) {
        let mut h = Sha256::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        h.update(now.to_le_bytes());
        h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
        h.update(std::process::id().to_le_bytes());
        let digest = h.finalize();
        chunk
            .iter_mut()
            .zip(digest.iter())
            .for_each(|(d, s)| *d = *s);
    }
}

/// A random 128-bit token as 32 lower-case hex characters.
#[allow(dead_code)]
pub(crate) fn token_hex() -> String {
    let mut bytes = [0u8; 16];
    fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
