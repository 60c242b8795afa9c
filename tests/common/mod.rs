//! Shared by the integration tests: one table of deliveries with the answer every adapter must
//! give, so that axum, tower and actix-web are held to the same behaviour.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, SystemTime};

use qstash_receiver::test_utils::Signer;
use qstash_receiver::{Receiver, SigningKeys, UrlPolicy, Verifier};

/// The keys every shared case uses.
pub const CURRENT_KEY: &str = "sig_testCurrentKey0123456789ab";
/// The next key.
pub const NEXT_KEY: &str = "sig_testNextKey0123456789abcde";
/// The public base URL the receivers under test expect (`UrlPolicy::public_base`).
pub const PUBLIC_BASE: &str = "https://receiver.test";
/// The body limit the receivers under test are configured with.
pub const LIMIT: usize = 64 * 1024;

/// The receiver configuration every adapter under test uses.
pub fn receiver() -> Receiver {
    let keys = SigningKeys::new(CURRENT_KEY, NEXT_KEY).expect("test keys");
    Receiver::new(Verifier::new(keys))
        .url_policy(UrlPolicy::public_base(PUBLIC_BASE).expect("base"))
        .max_body_bytes(LIMIT)
}

/// One request and the answer expected from a receiver mounted at `POST /jobs` whose handler
/// answers 200 with the body it received.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: &'static str,
    pub path: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub status: u16,
    /// `Some(code)`: the JSON rejection's `error`; `None`: the handler ran and echoed the body.
    pub code: Option<&'static str>,
}

fn signed(signer: &Signer, path: &str, body: &[u8]) -> Vec<(String, String)> {
    signer
        .delivery(&format!("{PUBLIC_BASE}{path}"), body)
        .headers
}

fn without(mut headers: Vec<(String, String)>, name: &str) -> Vec<(String, String)> {
    headers.retain(|(n, _)| n != name);
    headers
}

fn replaced(mut headers: Vec<(String, String)>, name: &str, value: &str) -> Vec<(String, String)> {
    headers.retain(|(n, _)| n != name);
    headers.push((name.to_owned(), value.to_owned()));
    headers
}

/// The table. Every adapter must give each case exactly this status and code.
pub fn cases() -> Vec<Case> {
    let current = Signer::new(CURRENT_KEY);
    let next = Signer::new(NEXT_KEY);
    let body = br#"{"task":"mail","n":1}"#.to_vec();
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let expired = Signer::new(CURRENT_KEY).issued_at(SystemTime::now() - Duration::from_secs(3600));
    let future = Signer::new(CURRENT_KEY)
        .issued_at(SystemTime::now() + Duration::from_secs(3600))
        .not_before(Some(
            (SystemTime::now() + Duration::from_secs(3600))
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default(),
        ));
    let ok = |name, headers, body: Vec<u8>| Case {
        name,
        path: "/jobs",
        headers,
        body,
        status: 200,
        code: None,
    };
    let no = |name, headers, body: Vec<u8>, status, code| Case {
        name,
        path: "/jobs",
        headers,
        body,
        status,
        code: Some(code),
    };
    vec![
        ok(
            "current key",
            signed(&current, "/jobs", &body),
            body.clone(),
        ),
        ok("next key", signed(&next, "/jobs", &body), body.clone()),
        ok("empty body", signed(&current, "/jobs", b""), Vec::new()),
        ok(
            "binary body",
            signed(&current, "/jobs", &binary),
            binary.clone(),
        ),
        no(
            "missing signature",
            without(signed(&current, "/jobs", &body), "upstash-signature"),
            body.clone(),
            401,
            "missing_signature",
        ),
        no(
            "malformed signature",
            replaced(
                signed(&current, "/jobs", &body),
                "upstash-signature",
                "not.a-token",
            ),
            body.clone(),
            401,
            "malformed_token",
        ),
        no(
            "unknown key",
            signed(&Signer::new("sig_unknownKey"), "/jobs", &body),
            body.clone(),
            401,
            "invalid_signature",
        ),
        no(
            "expired",
            signed(&expired, "/jobs", &body),
            body.clone(),
            401,
            "token_expired",
        ),
        no(
            "not yet valid",
            signed(&future, "/jobs", &body),
            body.clone(),
            401,
            "token_not_yet_valid",
        ),
        no(
            "wrong issuer",
            signed(&Signer::new(CURRENT_KEY).issuer("Evil"), "/jobs", &body),
            body.clone(),
            401,
            "wrong_issuer",
        ),
        no(
            "token for another route",
            signed(&current, "/admin", &body),
            body.clone(),
            401,
            "url_mismatch",
        ),
        no(
            "body tampered",
            signed(&current, "/jobs", &body),
            br#"{"task":"drop","n":1}"#.to_vec(),
            401,
            "body_mismatch",
        ),
        no(
            "malformed retried header",
            replaced(signed(&current, "/jobs", &body), "upstash-retried", "abc"),
            body.clone(),
            400,
            "invalid_delivery_header",
        ),
        no(
            "body over the limit",
            signed(&current, "/jobs", &vec![b'a'; LIMIT + 1]),
            vec![b'a'; LIMIT + 1],
            413,
            "payload_too_large",
        ),
    ]
}

/// This crate's log lines, captured on the current thread while the returned guard lives.
///
/// Deterministic: one global subscriber, installed once per test binary before the first
/// capture, takes every event of this crate and writes it to the capture of the thread it
/// happens on (if any). No test installs a subscriber of its own, so tracing's global
/// callsite-interest cache never sees a callsite through a thread without a subscriber (which
/// made scoped `set_default` captures miss events when tests ran in parallel).
#[derive(Clone, Default)]
pub struct Logs {
    lines: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// Whether closed spans are written too (`SPAN name{fields}` lines).
    spans: bool,
}

thread_local! {
    /// The capture of this thread, if any.
    static CAPTURE: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// Restores the previous capture of its thread when dropped.
pub struct CaptureGuard(Option<Logs>);

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        CAPTURE.with(|c| *c.borrow_mut() = previous);
    }
}

/// Writes to the capture of the current thread, or nowhere.
struct ThreadWriter;

impl std::io::Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(logs) = &*c.borrow() {
                logs.lines.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The fields of a span, as `name=value` pairs in the order recorded.
struct SpanFields(String);

struct FieldsVisitor<'a>(&'a mut String);

impl tracing::field::Visit for FieldsVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        write!(self.0, " {}={:?}", field.name(), value).unwrap();
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use std::fmt::Write as _;
        write!(self.0, " {}={}", field.name(), value).unwrap();
    }
}

/// Writes each closed span, with every field recorded on it, to the capture of the thread the
/// span closes on when that capture asked for spans.
struct SpanLines;

impl<S> tracing_subscriber::Layer<S> for SpanLines
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = String::new();
        attrs.record(&mut FieldsVisitor(&mut fields));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<SpanFields>() {
                values.record(&mut FieldsVisitor(&mut fields.0));
            }
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let extensions = span.extensions();
        let fields = extensions.get::<SpanFields>().map_or("", |f| f.0.as_str());
        let line = format!("SPAN {}{{{}}}\n", span.name(), fields.trim_start());
        CAPTURE.with(|c| {
            if let Some(logs) = c.borrow().as_ref().filter(|l| l.spans) {
                logs.lines
                    .lock()
                    .unwrap()
                    .extend_from_slice(line.as_bytes());
            }
        });
    }
}

/// Installs the global subscriber once: every level of `qstash_receiver`'s events (not other
/// crates'), written to the current thread's capture.
fn install_global_subscriber() {
    use tracing_subscriber::layer::SubscriberExt as _;
    static GLOBAL: std::sync::Once = std::sync::Once::new();
    GLOBAL.call_once(|| {
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("qstash_receiver=trace"))
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .without_time()
                    .with_writer(|| ThreadWriter),
            )
            .with(SpanLines);
        tracing::subscriber::set_global_default(subscriber)
            .expect("no other global subscriber in a test binary that captures logs");
    });
}

impl Logs {
    /// Captures every level of `qstash_receiver`'s events (not other crates') logged on the
    /// current thread while the guard lives.
    pub fn capture() -> (Self, CaptureGuard) {
        Self::start(false)
    }

    /// [`Logs::capture`], and each span closed on this thread as a line
    /// `SPAN name{field=value …}` with every field recorded on it.
    pub fn capture_with_spans() -> (Self, CaptureGuard) {
        Self::start(true)
    }

    fn start(spans: bool) -> (Self, CaptureGuard) {
        install_global_subscriber();
        let logs = Self {
            lines: Default::default(),
            spans,
        };
        let previous = CAPTURE.with(|c| c.borrow_mut().replace(logs.clone()));
        (logs, CaptureGuard(previous))
    }

    /// The lines logged so far, and clears them.
    pub fn take(&self) -> Vec<String> {
        let bytes = std::mem::take(&mut *self.lines.lock().unwrap());
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The level of a captured line (`ERROR`, `WARN`, `INFO`, `DEBUG`, `TRACE`).
pub fn level_of(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

/// Asserts that `lines` holds at least one line, each at most 1 KiB and at `DEBUG` or below.
pub fn assert_quiet_and_short(lines: &[String]) {
    assert!(!lines.is_empty(), "the refusal was not logged at all");
    for line in lines {
        assert!(
            line.len() <= 1024,
            "{} bytes: {}",
            line.len(),
            line.get(..200).unwrap_or(line)
        );
        assert!(
            matches!(level_of(line), "DEBUG" | "TRACE"),
            "above debug: {line}"
        );
    }
}

/// Receivers whose URL policy is misconfigured: unconfigured, and a closure that gives no URL.
pub fn misconfigured_receivers() -> Vec<(&'static str, Receiver)> {
    let keys = || SigningKeys::new(CURRENT_KEY, NEXT_KEY).expect("test keys");
    vec![
        ("unconfigured", Receiver::new(Verifier::new(keys()))),
        (
            "from_fn returning None",
            Receiver::new(Verifier::new(keys())).url_policy(UrlPolicy::from_fn(|_| None)),
        ),
    ]
}

/// The key of the `EU-CENTRAL-1` region in [`regional_receiver`].
pub const EU_KEY: &str = "sig_testEuCurrentKey0123456789";

/// The shared receiver with keys for `EU-CENTRAL-1` too.
pub fn regional_receiver() -> Receiver {
    let keys = SigningKeys::new(CURRENT_KEY, NEXT_KEY).expect("test keys");
    let eu = SigningKeys::new(EU_KEY, "sig_testEuNextKey0123456789ab").expect("eu keys");
    Receiver::new(Verifier::new(keys).with_region_keys("EU-CENTRAL-1", eu))
        .url_policy(UrlPolicy::public_base(PUBLIC_BASE).expect("base"))
        .max_body_bytes(LIMIT)
}

/// A delivery to `path` signed with the EU key, its headers without `Upstash-Region` and then
/// the region headers `regions`, in order.
pub fn eu_delivery(path: &str, body: &[u8], regions: &[&str]) -> Vec<(String, String)> {
    let delivery = Signer::new(EU_KEY).delivery(&format!("{PUBLIC_BASE}{path}"), body);
    let mut headers: Vec<(String, String)> = delivery
        .headers
        .into_iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case("upstash-region"))
        .collect();
    for region in regions {
        headers.push(("upstash-region".to_owned(), (*region).to_owned()));
    }
    headers
}

/// The keys of QStash's multi-region guide (`tests/regions*.rs`).
pub mod regions {
    use std::collections::HashMap;

    pub const EU_CURRENT: &str = "sig_euCurrent0123456789abcdefgh";
    pub const EU_NEXT: &str = "sig_euNext0123456789abcdefghijk";
    pub const US_CURRENT: &str = "sig_usCurrent0123456789abcdefgh";
    pub const US_NEXT: &str = "sig_usNext0123456789abcdefghijk";
    pub const DEFAULT_CURRENT: &str = "sig_defaultCurrent0123456789ab";
    pub const DEFAULT_NEXT: &str = "sig_defaultNext0123456789abcde";

    /// The variables of QStash's multi-region guide: `QSTASH_REGION` and both regions' keys,
    /// plus the default pair when `default` is set.
    pub fn env(default: bool) -> HashMap<&'static str, &'static str> {
        let mut env = HashMap::from([
            ("QSTASH_REGION", "EU_CENTRAL_1"),
            ("EU_CENTRAL_1_QSTASH_CURRENT_SIGNING_KEY", EU_CURRENT),
            ("EU_CENTRAL_1_QSTASH_NEXT_SIGNING_KEY", EU_NEXT),
            ("US_EAST_1_QSTASH_CURRENT_SIGNING_KEY", US_CURRENT),
            ("US_EAST_1_QSTASH_NEXT_SIGNING_KEY", US_NEXT),
        ]);
        if default {
            env.insert("QSTASH_CURRENT_SIGNING_KEY", DEFAULT_CURRENT);
            env.insert("QSTASH_NEXT_SIGNING_KEY", DEFAULT_NEXT);
        }
        env
    }
}
