//! Typed callback and failure-callback events.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// What QStash reports after an attempt to deliver a message (callback), success or not.
///
/// Fields follow QStash's JSON (camelCase there). Unknown fields are ignored; everything but
/// `status` and `sourceMessageId` is optional. Times are Unix **milliseconds**, accepted as
/// numbers or numeric strings; header maps accept arrays of strings or plain strings.
///
/// A publisher may set `Upstash-Callback` and `Upstash-Failure-Callback`; QStash then delivers a
/// new, signed message to that URL whose JSON body describes the original delivery (about 2.7 ×
/// its size: see [`Receiver::callback_max_body_bytes`](crate::Receiver::callback_max_body_bytes)).
/// Verify it like any delivery, then parse the verified body:
///
/// ```
/// use qstash_receiver::CallbackEvent;
///
/// let body = br#"{"status":200,"header":{"Content-Type":["text/plain"]},"body":"b2s=",
///     "retried":0,"maxRetries":3,"sourceMessageId":"msg_1","url":"https://example.com/jobs",
///     "method":"POST","sourceHeader":{"X-Id":"7"},"sourceBody":"e30=","callerIP":"203.0.113.9",
///     "notBefore":"1767225600000","createdAt":1767225600000}"#;
/// let event: CallbackEvent = serde_json::from_slice(body)?;
/// assert!(event.is_success());
/// assert_eq!(event.body_text(), Ok("ok"));
/// assert_eq!(event.source_body, b"{}");
/// assert_eq!(event.source_header["X-Id"], ["7"]);
/// assert_eq!(event.not_before, Some(1767225600000));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct CallbackEvent {
    /// The HTTP status the destination returned.
    pub status: u16,
    /// The destination's response headers.
    #[serde(default, deserialize_with = "header_map")]
    pub header: HashMap<String, Vec<String>>,
    /// The destination's response body, decoded from base64 (QStash may truncate it).
    #[serde(default, with = "base64_bytes")]
    pub body: Vec<u8>,
    /// How many times the message had been retried at this attempt (absent means 0).
    #[serde(default)]
    pub retried: u32,
    /// The retry budget: the final attempt has `retried == max_retries`.
    #[serde(default)]
    pub max_retries: u32,
    /// The original message's id.
    pub source_message_id: String,
    /// The original destination URL.
    #[serde(default)]
    pub url: String,
    /// The original method.
    #[serde(default)]
    pub method: String,
    /// The original request's headers.
    #[serde(default, deserialize_with = "header_map")]
    pub source_header: HashMap<String, Vec<String>>,
    /// The original request's body, decoded from base64.
    #[serde(default, with = "base64_bytes")]
    pub source_body: Vec<u8>,
    /// The URL group the message was published to.
    #[serde(default)]
    pub topic_name: Option<String>,
    /// The URL-group endpoint's name.
    #[serde(default)]
    pub endpoint_name: Option<String>,
    /// The schedule the message came from.
    #[serde(default)]
    pub schedule_id: Option<String>,
    /// The publisher's IP address (`callerIP` in QStash's JSON).
    #[serde(default, rename = "callerIP")]
    pub caller_ip: Option<String>,
    /// When the message was due, Unix milliseconds.
    #[serde(default, deserialize_with = "millis")]
    pub not_before: Option<i64>,
    /// When the message was created, Unix milliseconds.
    #[serde(default, deserialize_with = "millis")]
    pub created_at: Option<i64>,
}

impl CallbackEvent {
    /// Whether the destination answered 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Whether this was the last attempt QStash makes (`retried >= max_retries`).
    pub fn is_final_attempt(&self) -> bool {
        self.retried >= self.max_retries
    }

    /// The destination's response body as UTF-8 text.
    pub fn body_text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }

    /// The destination's response body parsed as JSON into `T`.
    pub fn body_json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The original request's body as UTF-8 text.
    pub fn source_body_text(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.source_body)
    }

    /// The original request's body parsed as JSON into `T`.
    pub fn source_body_json<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.source_body)
    }
}

/// What QStash reports once a message failed for good (after the last retry): the last attempt,
/// and the dead-letter-queue entry. Dereferences to [`CallbackEvent`] for the common fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FailureCallbackEvent {
    /// The last attempt, as in a callback.
    #[serde(flatten)]
    pub event: CallbackEvent,
    /// The dead-letter-queue entry's id, when the message went to the DLQ.
    #[serde(default)]
    pub dlq_id: Option<String>,
}

impl std::ops::Deref for FailureCallbackEvent {
    type Target = CallbackEvent;
    fn deref(&self) -> &CallbackEvent {
        &self.event
    }
}

/// `string -> [string]` or `string -> string` (a single value), as QStash sends either.
fn header_map<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<String, Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let map = Option::<HashMap<String, OneOrMany>>::deserialize(d)?.unwrap_or_default();
    Ok(map
        .into_iter()
        .map(|(k, v)| match v {
            OneOrMany::One(s) => (k, vec![s]),
            OneOrMany::Many(v) => (k, v),
        })
        .collect())
}

/// Unix milliseconds as a JSON integer or a numeric string; `null` is `None`.
fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("unix milliseconds as an integer or a numeric string")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom("milliseconds out of range"))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            if v.fract() == 0.0 && v.abs() < 9.0e15 {
                Ok(Some(v as i64))
            } else {
                Err(E::custom("milliseconds must be whole"))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.trim()
                .parse()
                .map(Some)
                .map_err(|_| E::custom("milliseconds string is not an integer"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }
    d.deserialize_any(V)
}

/// Standard base64 (padded) in JSON; `null` or absent is empty.
mod base64_bytes {
    use super::*;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        STANDARD
            .decode(s.trim())
            .map_err(|e| de::Error::custom(format_args!("invalid base64: {e}")))
    }

    pub(super) fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }
}

/// What a verified body that does not parse is reported as: serde's error category and
/// position only, since its message may quote the body (`invalid type: string "…"`), and a
/// [`Rejection`](crate::Rejection)'s message never contains a body.
#[cfg(any(feature = "axum", feature = "actix-web"))]
pub(crate) fn json_error_summary(what: &str, e: &serde_json::Error) -> String {
    let category = match e.classify() {
        serde_json::error::Category::Io => "io",
        serde_json::error::Category::Syntax => "syntax",
        serde_json::error::Category::Data => "data",
        serde_json::error::Category::Eof => "eof",
    };
    format!(
        "not {what}: {category} error at line {} column {}",
        e.line(),
        e.column()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAILURE: &str = r#"{"status":500,"header":{"Content-Type":["text/plain"]},
        "body":"Ym9vbQ==","retried":3,"maxRetries":3,"dlqId":"1725_dlq",
        "sourceMessageId":"msg_9","topicName":"orders","endpointName":"ep","url":"https://e.x/jobs",
        "method":"POST","sourceHeader":{"Upstash-Retried":["3"]},"sourceBody":"eyJ0YXNrIjoieCJ9",
        "notBefore":1767225600000,"createdAt":"1767225500000","scheduleId":"scd_1",
        "callerIP":"203.0.113.9","somethingNew":{"x":1}}"#;

    #[test]
    fn failure_callback_parses_every_field() {
        let e: FailureCallbackEvent = serde_json::from_str(FAILURE).unwrap();
        assert_eq!(e.dlq_id.as_deref(), Some("1725_dlq"));
        assert_eq!(e.status, 500);
        assert!(!e.is_success());
        assert!(e.is_final_attempt());
        assert_eq!(e.body_text(), Ok("boom"));
        assert_eq!(e.source_message_id, "msg_9");
        assert_eq!(e.topic_name.as_deref(), Some("orders"));
        assert_eq!(e.endpoint_name.as_deref(), Some("ep"));
        assert_eq!(e.schedule_id.as_deref(), Some("scd_1"));
        assert_eq!(e.caller_ip.as_deref(), Some("203.0.113.9"));
        assert_eq!(e.not_before, Some(1767225600000));
        assert_eq!(e.created_at, Some(1767225500000));
        assert_eq!(e.source_header["Upstash-Retried"], ["3"]);
        #[derive(Deserialize, PartialEq, Debug)]
        struct Job {
            task: String,
        }
        assert_eq!(
            e.source_body_json::<Job>().unwrap(),
            Job { task: "x".into() }
        );
    }

    #[test]
    fn minimal_callback_defaults() {
        let e: CallbackEvent =
            serde_json::from_str(r#"{"status":201,"sourceMessageId":"msg_1"}"#).unwrap();
        assert!(e.is_success());
        assert_eq!(e.retried, 0);
        assert!(e.body.is_empty());
        assert!(e.header.is_empty());
        assert_eq!(e.not_before, None);
    }

    #[test]
    fn bad_shapes_are_errors() {
        for bad in [
            r#"{"sourceMessageId":"m"}"#,
            r#"{"status":"200","sourceMessageId":"m"}"#,
            r#"{"status":200,"sourceMessageId":"m","body":"%%%"}"#,
            r#"{"status":200,"sourceMessageId":"m","createdAt":"soon"}"#,
            r#"{"status":200,"sourceMessageId":"m","header":{"a":1}}"#,
        ] {
            assert!(serde_json::from_str::<CallbackEvent>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serializes_back_to_qstash_shape() {
        let e: CallbackEvent =
            serde_json::from_str(r#"{"status":200,"sourceMessageId":"m","body":"aGk="}"#).unwrap();
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["body"], "aGk=");
        assert_eq!(json["sourceMessageId"], "m");
        assert_eq!(json["callerIP"], serde_json::Value::Null);
    }
}
