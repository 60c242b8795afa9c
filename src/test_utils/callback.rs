//! [`CallbackBuilder`]: signed callback and failure-callback deliveries as QStash sends them.

use std::fmt;
use std::time::SystemTime;

use serde_json::Value;

use super::{SignedDelivery, Signer, unix_seconds};
use crate::{CallbackEvent, FailureCallbackEvent};

/// Builds the body of a callback (`Upstash-Callback`) or failure callback
/// (`Upstash-Failure-Callback`) exactly as QStash shapes it, and signs it as a delivery to the
/// callback URL. The body parses as [`CallbackEvent`] / [`FailureCallbackEvent`]. See the
/// [module example](super). `Debug` shows neither body.
#[derive(Clone)]
pub struct CallbackBuilder {
    event: CallbackEvent,
    dlq_id: Option<String>,
}

impl fmt::Debug for CallbackBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackBuilder")
            .field("source_message_id", &self.event.source_message_id)
            .field("status", &self.event.status)
            .field("dlq_id", &self.dlq_id)
            .finish_non_exhaustive()
    }
}

impl CallbackBuilder {
    /// A callback about message `source_message_id` delivered to `url`: status 200, attempt 0 of
    /// 3 retries (QStash's default), empty bodies, created now.
    pub fn new(source_message_id: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            dlq_id: None,
            event: CallbackEvent {
                status: 200,
                max_retries: 3,
                source_message_id: source_message_id.into(),
                url: url.into(),
                method: "POST".to_owned(),
                caller_ip: Some("127.0.0.1".to_owned()),
                created_at: Some(unix_seconds(SystemTime::now()).saturating_mul(1000)),
                ..CallbackEvent::default()
            },
        }
    }

    /// The callback QStash sends after the attempt `delivery`: its message id, URL, method,
    /// attempt number, headers (without the token) and body; the destination's answer is 200
    /// with an empty body until set.
    pub fn callback(delivery: &SignedDelivery) -> Self {
        let mut builder = Self::new(delivery.message_id.clone(), delivery.url())
            .retried(delivery.retried())
            .source_body(delivery.body());
        builder.event.method = delivery.method().to_owned();
        let headers = delivery.headers.iter();
        for (name, value) in headers.filter(|(n, _)| n != "upstash-signature") {
            builder = builder.source_header(name, value.as_str());
        }
        builder
    }

    /// The failure callback QStash sends once the message of `delivery` failed for good: as
    /// [`callback`](CallbackBuilder::callback), with status 500, the final attempt
    /// (`retried == maxRetries`, 3 unless set) and a dead-letter-queue id.
    pub fn failure_callback(delivery: &SignedDelivery) -> Self {
        let mut builder = Self::callback(delivery).status(500);
        builder.event.retried = builder.event.max_retries;
        let created_at = builder.event.created_at.unwrap_or_default();
        builder.dlq_id(Some(format!("{created_at}-0")))
    }

    /// Adds a header of the destination's answer (`header`).
    #[must_use]
    pub fn response_header(mut self, name: &str, value: impl Into<String>) -> Self {
        let values = self.event.header.entry(canonical_header_name(name));
        values.or_default().push(value.into());
        self
    }

    /// Adds a header of the original request (`sourceHeader`).
    #[must_use]
    pub fn source_header(mut self, name: &str, value: impl Into<String>) -> Self {
        let values = self.event.source_header.entry(canonical_header_name(name));
        values.or_default().push(value.into());
        self
    }

    /// The retry budget (`maxRetries`). For a failure callback, the attempt number follows it
    /// (the failure callback reports the final attempt).
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        if self.dlq_id.is_some() {
            self.event.retried = max_retries;
        }
        self.event.max_retries = max_retries;
        self
    }

    setters! {
        /// The HTTP status the destination answered.
        status(status: u16) => event.status = status;
        /// The destination's answer body (`body`, sent in base64).
        response_body(body: impl Into<Vec<u8>>) => event.body = body.into();
        /// The attempt number (`retried`).
        retried(retried: u32) => event.retried = retried;
        /// The original request's body (`sourceBody`, sent in base64).
        source_body(body: impl Into<Vec<u8>>) => event.source_body = body.into();
        /// The URL group the message was published to (`topicName`).
        topic_name(name: impl Into<String>) => event.topic_name = Some(name.into());
        /// The URL-group endpoint's name (`endpointName`).
        endpoint_name(name: impl Into<String>) => event.endpoint_name = Some(name.into());
        /// The schedule the message came from (`scheduleId`).
        schedule_id(id: impl Into<String>) => event.schedule_id = Some(id.into());
        /// The publisher's IP (`callerIP`).
        caller_ip(ip: impl Into<String>) => event.caller_ip = Some(ip.into());
        /// When the message was due, Unix milliseconds (`notBefore`).
        not_before_ms(ms: i64) => event.not_before = Some(ms);
        /// When the message was created, Unix milliseconds (`createdAt`).
        created_at_ms(ms: i64) => event.created_at = Some(ms);
        /// The dead-letter-queue entry (`dlqId`): present in failure callbacks; `None` removes it.
        dlq_id(id: Option<String>) => dlq_id = id;
    }

    /// The JSON body, as QStash sends it (absent fields left out, not `null`).
    pub fn to_json(&self) -> Vec<u8> {
        let (event, dlq_id) = (self.event.clone(), self.dlq_id.clone());
        let json = serde_json::to_value(FailureCallbackEvent { event, dlq_id });
        let mut json = json.unwrap_or_default();
        if let Value::Object(fields) = &mut json {
            fields.retain(|_, value| !value.is_null());
        }
        serde_json::to_vec(&json).unwrap_or_default()
    }

    /// The signed delivery of this event to `callback_url` (a new message, with its own id, as
    /// QStash sends callbacks).
    pub fn sign(&self, signer: &Signer, callback_url: &str) -> SignedDelivery {
        signer.delivery(callback_url, &self.to_json())
    }
}

/// `upstash-retried` → `Upstash-Retried`: header names as QStash (Go) writes them.
fn canonical_header_name(name: &str) -> String {
    let words = name.split('-').map(|word| {
        let (first, rest) = word.split_at(word.chars().next().map_or(0, char::len_utf8));
        first.to_ascii_uppercase() + &rest.to_ascii_lowercase()
    });
    words.collect::<Vec<_>>().join("-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SigningKeys, Verifier};
    use serde_json::json;

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
