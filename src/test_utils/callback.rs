//! [`CallbackBuilder`]: signed callback and failure-callback deliveries, shaped as QStash sends
//! them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use super::{SignedDelivery, Signer, unix_seconds};

/// Builds the body of a callback (`Upstash-Callback`) or failure callback
/// (`Upstash-Failure-Callback`) exactly as QStash shapes it, and signs it as a delivery to the
/// callback URL. The body parses as [`CallbackEvent`](crate::CallbackEvent) /
/// [`FailureCallbackEvent`](crate::FailureCallbackEvent): `header` and `sourceHeader` as lists,
/// `body` and `sourceBody` in standard padded base64, `createdAt` in Unix milliseconds, `dlqId`
/// for a failure.
///
/// ```
/// use qstash_receiver::{FailureCallbackEvent, SigningKeys, Verifier};
/// use qstash_receiver::test_utils::{CallbackBuilder, Signer};
///
/// let signer = Signer::new("sig_current");
/// let job = signer.delivery("https://example.com/jobs", br#"{"task":"mail"}"#);
///
/// // The destination answered 500 on the last attempt: QStash calls the failure callback.
/// let failure = CallbackBuilder::failure_callback(&job)
///     .status(500)
///     .response_body("database down")
///     .sign(&signer, "https://example.com/failures");
///
/// let verifier = Verifier::new(SigningKeys::new("sig_current", "sig_next")?);
/// verifier.verify(&failure.signature, failure.body(), Some("https://example.com/failures"))?;
/// let event: FailureCallbackEvent = serde_json::from_slice(failure.body())?;
/// assert_eq!(event.source_message_id, job.message_id);
/// assert_eq!(event.source_body, br#"{"task":"mail"}"#);
/// assert_eq!(event.body_text(), Ok("database down"));
/// assert!(event.is_final_attempt() && event.dlq_id.is_some());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// `Debug` shows neither body.
#[derive(Clone)]
pub struct CallbackBuilder {
    status: u16,
    header: BTreeMap<String, Vec<String>>,
    body: Vec<u8>,
    retried: u32,
    max_retries: u32,
    source_message_id: String,
    url: String,
    method: String,
    source_header: BTreeMap<String, Vec<String>>,
    source_body: Vec<u8>,
    topic_name: Option<String>,
    endpoint_name: Option<String>,
    schedule_id: Option<String>,
    caller_ip: String,
    not_before: Option<i64>,
    created_at: i64,
    dlq_id: Option<String>,
}

impl fmt::Debug for CallbackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackBuilder")
            .field("status", &self.status)
            .field("source_message_id", &self.source_message_id)
            .field("url", &self.url)
            .field("retried", &self.retried)
            .field("max_retries", &self.max_retries)
            .field("dlq_id", &self.dlq_id)
            .finish_non_exhaustive()
    }
}

/// QStash's default retry budget.
const DEFAULT_MAX_RETRIES: u32 = 3;

impl CallbackBuilder {
    /// A callback about message `source_message_id` delivered to `url`: status 200, attempt 0 of
    /// 3 retries, empty bodies, created now.
    pub fn new(source_message_id: impl Into<String>, url: impl Into<String>) -> Self {
        let now_ms = unix_seconds(SystemTime::now()).saturating_mul(1000);
        Self {
            status: 200,
            header: BTreeMap::new(),
            body: Vec::new(),
            retried: 0,
            max_retries: DEFAULT_MAX_RETRIES,
            source_message_id: source_message_id.into(),
            url: url.into(),
            method: "POST".to_owned(),
            source_header: BTreeMap::new(),
            source_body: Vec::new(),
            topic_name: None,
            endpoint_name: None,
            schedule_id: None,
            caller_ip: "127.0.0.1".to_owned(),
            not_before: None,
            created_at: now_ms,
            dlq_id: None,
        }
    }

    /// The callback QStash sends after the attempt `delivery`: its message id, URL, method,
    /// attempt number, headers (without the token) and body; the destination's answer is 200
    /// with an empty body until set.
    pub fn callback(delivery: &SignedDelivery) -> Self {
        let mut builder = Self::new(delivery.message_id.clone(), delivery.url());
        builder.method = delivery.method().to_owned();
        builder.retried = delivery.retried();
        builder.source_body = delivery.body().to_vec();
        for (name, value) in &delivery.headers {
            if name != "upstash-signature" {
                builder
                    .source_header
                    .entry(canonical_header_name(name))
                    .or_default()
                    .push(value.clone());
            }
        }
        builder
    }

    /// The failure callback QStash sends once the message of `delivery` failed for good: as
    /// [`callback`](CallbackBuilder::callback), with status 500, the final attempt
    /// (`retried == maxRetries`, 3 unless set) and a dead-letter-queue id.
    pub fn failure_callback(delivery: &SignedDelivery) -> Self {
        let mut builder = Self::callback(delivery);
        builder.status = 500;
        builder.retried = builder.max_retries;
        builder.dlq_id = Some(format!("{}-0", builder.created_at));
        builder
    }

    /// The HTTP status the destination answered.
    #[must_use]
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Adds a header of the destination's answer (`header`).
    #[must_use]
    pub fn response_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.header
            .entry(canonical_header_name(name))
            .or_default()
            .push(value.into());
        self
    }

    /// The destination's answer body (`body`, sent in base64).
    #[must_use]
    pub fn response_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The attempt number (`retried`).
    #[must_use]
    pub fn retried(mut self, retried: u32) -> Self {
        self.retried = retried;
        self
    }

    /// The retry budget (`maxRetries`). For a failure callback, the attempt number follows it
    /// (the failure callback reports the final attempt).
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        if self.dlq_id.is_some() {
            self.retried = max_retries;
        }
        self.max_retries = max_retries;
        self
    }

    /// Adds a header of the original request (`sourceHeader`).
    #[must_use]
    pub fn source_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.source_header
            .entry(canonical_header_name(name))
            .or_default()
            .push(value.into());
        self
    }

    /// The original request's body (`sourceBody`, sent in base64).
    #[must_use]
    pub fn source_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.source_body = body.into();
        self
    }

    /// The URL group the message was published to (`topicName`).
    #[must_use]
    pub fn topic_name(mut self, name: impl Into<String>) -> Self {
        self.topic_name = Some(name.into());
        self
    }

    /// The URL-group endpoint's name (`endpointName`).
    #[must_use]
    pub fn endpoint_name(mut self, name: impl Into<String>) -> Self {
        self.endpoint_name = Some(name.into());
        self
    }

    /// The schedule the message came from (`scheduleId`).
    #[must_use]
    pub fn schedule_id(mut self, id: impl Into<String>) -> Self {
        self.schedule_id = Some(id.into());
        self
    }

    /// The publisher's IP (`callerIP`).
    #[must_use]
    pub fn caller_ip(mut self, ip: impl Into<String>) -> Self {
        self.caller_ip = ip.into();
        self
    }

    /// When the message was due, Unix milliseconds (`notBefore`).
    #[must_use]
    pub fn not_before_ms(mut self, ms: i64) -> Self {
        self.not_before = Some(ms);
        self
    }

    /// When the message was created, Unix milliseconds (`createdAt`).
    #[must_use]
    pub fn created_at_ms(mut self, ms: i64) -> Self {
        self.created_at = ms;
        self
    }

    /// The dead-letter-queue entry (`dlqId`): present in failure callbacks; `None` removes it.
    #[must_use]
    pub fn dlq_id(mut self, id: Option<String>) -> Self {
        self.dlq_id = id;
        self
    }

    /// The JSON body, as QStash sends it.
    pub fn to_json(&self) -> Vec<u8> {
        let mut event = Map::new();
        event.insert("status".into(), json!(self.status));
        event.insert("header".into(), json!(self.header));
        event.insert("body".into(), json!(STANDARD.encode(&self.body)));
        event.insert("retried".into(), json!(self.retried));
        event.insert("maxRetries".into(), json!(self.max_retries));
        event.insert("sourceMessageId".into(), json!(self.source_message_id));
        event.insert("url".into(), json!(self.url));
        event.insert("method".into(), json!(self.method));
        event.insert("sourceHeader".into(), json!(self.source_header));
        event.insert(
            "sourceBody".into(),
            json!(STANDARD.encode(&self.source_body)),
        );
        event.insert("callerIP".into(), json!(self.caller_ip));
        event.insert("createdAt".into(), json!(self.created_at));
        let optional = [
            ("topicName", self.topic_name.as_ref().map(|v| json!(v))),
            (
                "endpointName",
                self.endpoint_name.as_ref().map(|v| json!(v)),
            ),
            ("scheduleId", self.schedule_id.as_ref().map(|v| json!(v))),
            ("notBefore", self.not_before.map(|v| json!(v))),
            ("dlqId", self.dlq_id.as_ref().map(|v| json!(v))),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                event.insert(name.into(), value);
            }
        }
        serde_json::to_vec(&Value::Object(event)).unwrap_or_default()
    }

    /// The signed delivery of this event to `callback_url` (a new message, with its own id, as
    /// QStash sends callbacks).
    pub fn sign(&self, signer: &Signer, callback_url: &str) -> SignedDelivery {
        signer.delivery(callback_url, &self.to_json())
    }
}

/// `upstash-retried` → `Upstash-Retried`: header names as QStash (Go) writes them.
fn canonical_header_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CallbackEvent, FailureCallbackEvent, SigningKeys, Verifier};

    #[test]
    fn callback_has_qstash_shape_and_parses() {
        let signer = Signer::new("sig_a");
        let job = signer
            .delivery("https://e.x/jobs", b"\x00\xffbinary")
            .retry();
        let cb = CallbackBuilder::callback(&job)
            .status(201)
            .response_header("content-type", "text/plain")
            .response_body("ok")
            .topic_name("orders")
            .created_at_ms(1_767_225_600_000)
            .sign(&signer, "https://e.x/cb");
        let json: Value = serde_json::from_slice(cb.body()).unwrap();
        assert_eq!(json["header"], json!({"Content-Type": ["text/plain"]}));
        assert_eq!(json["body"], "b2s=");
        assert_eq!(json["sourceBody"], "AP9iaW5hcnk=");
        assert_eq!(json["retried"], 1);
        assert_eq!(json["maxRetries"], 3);
        assert_eq!(json["createdAt"], 1_767_225_600_000_i64);
        assert_eq!(json["callerIP"], "127.0.0.1");
        assert_eq!(json["sourceHeader"]["Upstash-Retried"], json!(["1"]));
        assert!(json["sourceHeader"].get("Upstash-Signature").is_none());
        assert!(json.get("dlqId").is_none());

        let verifier = Verifier::new(SigningKeys::new("sig_a", "sig_b").unwrap());
        verifier
            .verify(&cb.signature, cb.body(), Some("https://e.x/cb"))
            .unwrap();
        let event: CallbackEvent = serde_json::from_slice(cb.body()).unwrap();
        assert_eq!(event.status, 201);
        assert_eq!(event.source_message_id, job.message_id);
        assert_eq!(event.source_body, b"\x00\xffbinary");
        assert_eq!(event.url, "https://e.x/jobs");
        assert_eq!(event.topic_name.as_deref(), Some("orders"));
        assert_ne!(cb.message_id, job.message_id);
    }

    #[test]
    fn failure_callback_reports_the_final_attempt() {
        let job = Signer::new("k").delivery("https://e.x/jobs", b"{}");
        let body = CallbackBuilder::failure_callback(&job)
            .max_retries(5)
            .to_json();
        let event: FailureCallbackEvent = serde_json::from_slice(&body).unwrap();
        assert_eq!((event.retried, event.max_retries), (5, 5));
        assert!(event.is_final_attempt());
        assert_eq!(event.status, 500);
        assert!(event.dlq_id.as_deref().unwrap().ends_with("-0"));
    }

    #[test]
    fn header_names_are_canonical() {
        assert_eq!(canonical_header_name("upstash-retried"), "Upstash-Retried");
        assert_eq!(canonical_header_name("X-API-key"), "X-Api-Key");
        assert_eq!(canonical_header_name(""), "");
    }
}
