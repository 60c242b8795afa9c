//! How refusals are logged, the same way by every adapter: the levels are listed in the crate
//! docs' Logging section. Every value a caller chooses (the message id, a refusal's text) is
//! escaped and cut at [`MAX_VALUE`] bytes; never the token, a key or the body.

use std::fmt::{self, Write as _};

use tracing::Level;

use crate::{Rejection, VerifyError};

/// The most bytes of one caller-chosen value in a log line (escapes included).
pub(crate) const MAX_VALUE: usize = 256;
/// The most bytes of a refusal's text in a log line: it may hold two URLs.
const MAX_MESSAGE: usize = 2 * MAX_VALUE;

/// The level a refusal is logged at (see the module docs).
pub(crate) fn level(rejection: &Rejection) -> Level {
    match rejection {
        Rejection::Verify(
            VerifyError::MissingSignature
            | VerifyError::Malformed(_)
            | VerifyError::UnsupportedAlgorithm(_)
            | VerifyError::CriticalHeader
            | VerifyError::InvalidSignature
            | VerifyError::Expired { .. }
            | VerifyError::NotYetValid { .. },
        ) => Level::DEBUG,
        Rejection::BodyRead(_) | Rejection::InProgress { .. } => Level::INFO,
        Rejection::Misconfigured(_)
        | Rejection::StoreUnavailable { .. }
        | Rejection::PayloadTooLarge { .. } => Level::ERROR,
        _ => Level::WARN,
    }
}

/// Logs a refusal at its [`level`]: its code, status, the message id (as sent: escaped and
/// cut) and its text; a body over the limit with the limit and how to raise it.
pub(crate) fn refusal(rejection: &Rejection, message_id: Option<&[u8]>) {
    crate::observe::refused(rejection);
    if let Rejection::PayloadTooLarge { limit } = rejection {
        too_large(*limit, message_id);
        return;
    }
    emit(level(rejection), rejection, message_id);
}

/// How to raise the limit a verified delivery exceeded.
const RAISE_LIMIT: &str = "raise it with Receiver::max_body_bytes \
     (Receiver::callback_max_body_bytes for callbacks), and the framework's own limit if lower \
     (axum DefaultBodyLimit, actix-web PayloadConfig / JsonConfig)";

/// A verified delivery over the body limit (413): `error`, since QStash retries it and then
/// dead-letters it. Says the limit and how to raise it.
fn too_large(limit: usize, message_id: Option<&[u8]>) {
    let message_id = Escaped::bytes(message_id.unwrap_or(b"-"), MAX_VALUE);
    tracing::error!(
        code = "payload_too_large",
        status = 413u16,
        limit,
        message_id = %message_id,
        "qstash delivery refused: its body is over the limit of {limit} bytes; QStash retries \
         it, then moves it to the dead-letter queue: {RAISE_LIMIT}"
    );
}

/// The handler behind the layer or the middleware answered 413 to a verified delivery: a limit
/// of the framework's own extractors is lower than the receiver's. `error`, as a body over the
/// receiver's limit.
pub(crate) fn handler_too_large() {
    tracing::error!(
        code = "payload_too_large",
        status = 413u16,
        "qstash delivery refused by the handler with 413 although it verified: a limit of the \
         framework's extractors is lower than the receiver's; QStash retries it, then moves it \
         to the dead-letter queue: {RAISE_LIMIT}"
    );
}

/// Logs a misconfiguration found before any token could be checked (an extractor without its
/// layer, middleware or receiver): `error` the first time in this process, then `debug`, since
/// any caller can trigger it.
#[cfg(any(feature = "axum", feature = "actix-web"))]
pub(crate) fn unchecked_misconfiguration(rejection: &Rejection, message_id: Option<&[u8]>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    crate::observe::refused(rejection);
    static REPORTED: AtomicBool = AtomicBool::new(false);
    let level = if REPORTED.swap(true, Ordering::Relaxed) {
        Level::DEBUG
    } else {
        Level::ERROR
    };
    emit(level, rejection, message_id);
}

/// Logs a payload refusal of the handler behind the layer or the middleware (the framework's
/// own extractor refused the verified body), sent as 489 because the receiver is configured
/// non-retryable: `warn`, like the crate's own payload refusals.
pub(crate) fn payload_refused_downstream(status: u16) {
    tracing::warn!(
        code = "invalid_payload",
        status,
        "qstash delivery refused by the handler ({status}): answered 489, not retried"
    );
}

/// Logs why a request did not match the actix-web guard: `debug` (other callers are routed
/// elsewhere, as intended), but a misconfiguration at `error` (the guard checks the URL policy
/// only for a token that verified).
#[cfg(feature = "actix-web")]
pub(crate) fn guard_miss(rejection: &Rejection, message_id: Option<&[u8]>) {
    let level = match rejection {
        Rejection::Misconfigured(_) => Level::ERROR,
        _ => Level::DEBUG,
    };
    emit_as(level, rejection, message_id, "qstash guard: no match");
}

fn emit(level: Level, rejection: &Rejection, message_id: Option<&[u8]>) {
    emit_as(level, rejection, message_id, "qstash delivery refused");
}

fn emit_as(level: Level, rejection: &Rejection, message_id: Option<&[u8]>, what: &str) {
    let message_id = Escaped::bytes(message_id.unwrap_or(b"-"), MAX_VALUE);
    let text = Escaped::text(rejection, MAX_MESSAGE);
    let code = rejection.code();
    let status = rejection.status();
    macro_rules! at {
        ($macro:ident) => {
            tracing::$macro!(code, status, message_id = %message_id, "{what}: {text}")
        };
    }
    match level {
        Level::ERROR => at!(error),
        Level::WARN => at!(warn),
        Level::INFO => at!(info),
        Level::DEBUG => at!(debug),
        _ => at!(trace),
    }
}

/// A value for a log line, written escaped (printable ASCII as is, anything else as
/// `\t`, `\n`, `\u{…}` or `\xNN`) and cut after `max` bytes (`…` then). Formats lazily: nothing
/// is done for a level that is off.
pub(crate) struct Escaped<'a> {
    value: Value<'a>,
    max: usize,
}

enum Value<'a> {
    Bytes(&'a [u8]),
    Text(&'a dyn fmt::Display),
}

impl<'a> Escaped<'a> {
    /// Bytes as received (a header value), not necessarily UTF-8.
    pub(crate) fn bytes(value: &'a [u8], max: usize) -> Self {
        Self {
            value: Value::Bytes(value),
            max,
        }
    }

    /// A text, as it displays.
    pub(crate) fn text(value: &'a dyn fmt::Display, max: usize) -> Self {
        Self {
            value: Value::Text(value),
            max,
        }
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Capped {
            out: f,
            left: self.max,
            cut: false,
        };
        match self.value {
            Value::Text(text) => {
                // `Capped` never fails on its own: an error here is the formatter's.
                write!(out, "{text}")?;
            }
            Value::Bytes(bytes) => {
                for chunk in bytes.utf8_chunks() {
                    out.write_str(chunk.valid())?;
                    for byte in chunk.invalid() {
                        out.put(4, &format_args!("\\x{byte:02x}"))?;
                    }
                }
            }
        }
        if out.cut {
            out.out.write_char('…')?;
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Writes escaped characters to `out` until `left` bytes are used, then drops the rest.
struct Capped<'a, 'b> {
    out: &'a mut fmt::Formatter<'b>,
    left: usize,
    cut: bool,
}

impl Capped<'_, '_> {
    /// Writes `piece` (already escaped, `len` bytes) whole, or nothing and stops.
    fn put(&mut self, len: usize, piece: &dyn fmt::Display) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        if len > self.left {
            self.cut = true;
            return Ok(());
        }
        self.left -= len;
        write!(self.out, "{piece}")
    }
}

impl fmt::Write for Capped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if self.cut {
                break;
            }
            if c == ' ' || c.is_ascii_graphic() {
                self.put(1, &c)?;
            } else {
                let escaped = c.escape_default();
                self.put(escaped.len(), &escaped)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(e: Escaped<'_>) -> String {
        e.to_string()
    }

    #[test]
    fn values_are_escaped_and_cut() {
        assert_eq!(shown(Escaped::bytes(b"msg_1", 256)), "msg_1");
        assert_eq!(
            shown(Escaped::bytes(b"a\nb\r\tc\x1b[31m\xff\xfe", 256)),
            "a\\nb\\r\\tc\\u{1b}[31m\\xff\\xfe"
        );
        assert_eq!(
            shown(Escaped::bytes("é\u{202e}".as_bytes(), 256)),
            "\\u{e9}\\u{202e}"
        );
        let long = vec![b'm'; 200_000];
        let cut = shown(Escaped::bytes(&long, MAX_VALUE));
        assert_eq!(cut.len(), MAX_VALUE + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        // An escape is never cut in the middle.
        let newlines = vec![b'\n'; 300];
        let cut = shown(Escaped::bytes(&newlines, 5));
        assert_eq!(cut, "\\n\\n…");
        assert_eq!(shown(Escaped::text(&"line\nbreak", 256)), "line\\nbreak");
    }

    #[test]
    fn levels() {
        let cases = [
            (
                Rejection::Verify(VerifyError::MissingSignature),
                Level::DEBUG,
            ),
            (
                Rejection::Verify(VerifyError::InvalidSignature),
                Level::DEBUG,
            ),
            (
                Rejection::Verify(VerifyError::Expired { exp: 1 }),
                Level::DEBUG,
            ),
            (Rejection::Verify(VerifyError::BodyMismatch), Level::WARN),
            (Rejection::PayloadTooLarge { limit: 1 }, Level::ERROR),
            (Rejection::BodyRead("gone".into()), Level::INFO),
            (
                Rejection::InProgress {
                    retry_after_secs: 1,
                },
                Level::INFO,
            ),
            (
                Rejection::StoreUnavailable {
                    retry_after_secs: 1,
                },
                Level::ERROR,
            ),
            (Rejection::Misconfigured("x".into()), Level::ERROR),
        ];
        for (rejection, want) in cases {
            assert_eq!(level(&rejection), want, "{rejection:?}");
        }
    }
}
