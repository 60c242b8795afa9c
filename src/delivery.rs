//! Delivery metadata from QStash's request headers.
//!
//! None of these headers is covered by the signature (it binds only the URL and the body):
//! treat them as information, never as proof.
//!
//! ```
//! use qstash_receiver::Delivery;
//!
//! let headers = [
//!     ("upstash-message-id", &b"msg_123"[..]),
//!     ("upstash-retried", b"2"),
//!     ("upstash-schedule-id", b"scd_9"),
//!     ("content-type", b"application/json"),
//! ];
//! let delivery = Delivery::from_headers(headers)?;
//! assert_eq!(delivery.message_id(), Some("msg_123"));
//! assert_eq!(delivery.retried(), 2);
//! assert!(delivery.is_retry());
//! assert_eq!(delivery.schedule_id(), Some("scd_9"));
//!
//! // A malformed value is an error, not a silent 0.
//! let err = Delivery::from_headers([("upstash-retried", &b"abc"[..])]).unwrap_err();
//! assert_eq!(err.to_string(), "invalid upstash-retried header: not a decimal attempt number");
//! # Ok::<(), qstash_receiver::DeliveryError>(())
//! ```

/// `Upstash-Signature`: the JWT.
pub const SIGNATURE_HEADER: &str = "upstash-signature";
/// `Upstash-Message-Id`: the same on every retry of one message.
pub const MESSAGE_ID_HEADER: &str = "upstash-message-id";
/// `Upstash-Retried`: the attempt number, `0` first.
pub const RETRIED_HEADER: &str = "upstash-retried";
/// `Upstash-Region`: the QStash region that delivered (each has its own keys).
pub const REGION_HEADER: &str = "upstash-region";
/// `Upstash-Caller-Ip`: the IP address of the publisher.
pub const CALLER_IP_HEADER: &str = "upstash-caller-ip";
/// `Upstash-Schedule-Id`: set on deliveries from a schedule.
pub const SCHEDULE_ID_HEADER: &str = "upstash-schedule-id";
/// `Upstash-Topic-Name`: the URL group's name, on deliveries through a URL group.
pub const TOPIC_NAME_HEADER: &str = "upstash-topic-name";

/// Message ids longer than this are refused (QStash's are ~30 bytes); keeps dedup keys bounded.
const MAX_ID_LEN: usize = 256;

/// Typed metadata of one delivery, read from its headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    message_id: Option<String>,
    retried: u32,
    region: Option<String>,
    caller_ip: Option<String>,
    schedule_id: Option<String>,
    url_group: Option<String>,
}

impl Delivery {
    /// Reads the QStash headers from `(name, value)` pairs; names are matched case-insensitively,
    /// other headers are ignored. Works with any framework's header map.
    ///
    /// An absent header is `None` (and `Upstash-Retried` absent is attempt 0); a present one that
    /// is not visible ASCII, is repeated, or (for `Upstash-Retried`) is not a decimal number is a
    /// [`DeliveryError`].
    pub fn from_headers<'a, I, N>(headers: I) -> Result<Self, DeliveryError>
    where
        I: IntoIterator<Item = (N, &'a [u8])>,
        N: AsRef<str>,
    {
        let mut d = Delivery::default();
        let mut retried_seen = false;
        for (name, value) in headers {
            let name = name.as_ref();
            let Some(header) = Known::from_name(name) else {
                continue;
            };
            let text = header_text(header.name(), value)?;
            match header {
                Known::MessageId => set_once(&mut d.message_id, header, text, true)?,
                Known::Region => set_once(&mut d.region, header, text, false)?,
                Known::CallerIp => set_once(&mut d.caller_ip, header, text, false)?,
                Known::ScheduleId => set_once(&mut d.schedule_id, header, text, false)?,
                Known::TopicName => set_once(&mut d.url_group, header, text, false)?,
                Known::Retried => {
                    if std::mem::replace(&mut retried_seen, true) {
                        return Err(DeliveryError::Repeated {
                            header: header.name(),
                        });
                    }
                    d.retried = parse_retried(text)?;
                }
            }
        }
        Ok(d)
    }

    /// `Upstash-Message-Id`: the key for idempotency (the same on every retry of one message;
    /// each URL-group endpoint gets its own). `None` when the header is absent.
    pub fn message_id(&self) -> Option<&str> {
        self.message_id.as_deref()
    }

    /// `Upstash-Retried`: how many times this message was tried before (0 on the first attempt).
    pub fn retried(&self) -> u32 {
        self.retried
    }

    /// Whether this is a retry (`retried() > 0`).
    pub fn is_retry(&self) -> bool {
        self.retried > 0
    }

    /// `Upstash-Region`, e.g. `US-EAST-1`.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// `Upstash-Caller-Ip`: the publisher's IP address, as sent.
    pub fn caller_ip(&self) -> Option<&str> {
        self.caller_ip.as_deref()
    }

    /// `Upstash-Schedule-Id`: set when the message comes from a schedule.
    pub fn schedule_id(&self) -> Option<&str> {
        self.schedule_id.as_deref()
    }

    /// `Upstash-Topic-Name`: the URL group the message was published to.
    pub fn url_group(&self) -> Option<&str> {
        self.url_group.as_deref()
    }
}

#[derive(Clone, Copy)]
enum Known {
    MessageId,
    Retried,
    Region,
    CallerIp,
    ScheduleId,
    TopicName,
}

impl Known {
    fn from_name(name: &str) -> Option<Self> {
        const ALL: [(&str, Known); 6] = [
            (MESSAGE_ID_HEADER, Known::MessageId),
            (RETRIED_HEADER, Known::Retried),
            (REGION_HEADER, Known::Region),
            (CALLER_IP_HEADER, Known::CallerIp),
            (SCHEDULE_ID_HEADER, Known::ScheduleId),
            (TOPIC_NAME_HEADER, Known::TopicName),
        ];
        if !name
            .get(..8)
            .is_some_and(|p| p.eq_ignore_ascii_case("upstash-"))
        {
            return None;
        }
        ALL.iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(name))
            .map(|(_, k)| *k)
    }

    fn name(self) -> &'static str {
        match self {
            Self::MessageId => MESSAGE_ID_HEADER,
            Self::Retried => RETRIED_HEADER,
            Self::Region => REGION_HEADER,
            Self::CallerIp => CALLER_IP_HEADER,
            Self::ScheduleId => SCHEDULE_ID_HEADER,
            Self::TopicName => TOPIC_NAME_HEADER,
        }
    }
}

fn header_text<'v>(header: &'static str, value: &'v [u8]) -> Result<&'v str, DeliveryError> {
    let text = std::str::from_utf8(value)
        .ok()
        .map(|s| s.trim_matches(|c| c == ' ' || c == '\t'))
        .filter(|s| s.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
        .ok_or(DeliveryError::Invalid {
            header,
            reason: "not visible ascii",
        })?;
    if text.len() > MAX_ID_LEN {
        return Err(DeliveryError::Invalid {
            header,
            reason: "longer than 256 bytes",
        });
    }
    Ok(text)
}

fn set_once(
    slot: &mut Option<String>,
    header: Known,
    text: &str,
    non_empty: bool,
) -> Result<(), DeliveryError> {
    if slot.is_some() {
        return Err(DeliveryError::Repeated {
            header: header.name(),
        });
    }
    if non_empty && text.is_empty() {
        return Err(DeliveryError::Invalid {
            header: header.name(),
            reason: "empty",
        });
    }
    *slot = Some(text.to_owned());
    Ok(())
}

fn parse_retried(text: &str) -> Result<u32, DeliveryError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DeliveryError::Invalid {
            header: RETRIED_HEADER,
            reason: "not a decimal attempt number",
        });
    }
    text.parse().map_err(|_| DeliveryError::Invalid {
        header: RETRIED_HEADER,
        reason: "attempt number out of range",
    })
}

/// A QStash delivery header that is present but unusable. Adapters answer it with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// The header's value is malformed.
    #[error("invalid {header} header: {reason}")]
    Invalid {
        /// The header's name, lower-case.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The header appears more than once.
    #[error("{header} header appears more than once")]
    Repeated {
        /// The header's name, lower-case.
        header: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(headers: &[(&str, &str)]) -> Result<Delivery, DeliveryError> {
        Delivery::from_headers(headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn reads_every_header_case_insensitively() {
        let d = parse(&[
            ("Upstash-Message-Id", "msg_abc"),
            ("UPSTASH-RETRIED", "3"),
            ("upstash-region", "EU-CENTRAL-1"),
            ("Upstash-Caller-Ip", "203.0.113.9"),
            ("Upstash-Schedule-Id", "scd_1"),
            ("Upstash-Topic-Name", "orders"),
            ("User-Agent", "Upstash-QStash"),
        ])
        .unwrap();
        assert_eq!(d.message_id(), Some("msg_abc"));
        assert_eq!(d.retried(), 3);
        assert_eq!(d.region(), Some("EU-CENTRAL-1"));
        assert_eq!(d.caller_ip(), Some("203.0.113.9"));
        assert_eq!(d.schedule_id(), Some("scd_1"));
        assert_eq!(d.url_group(), Some("orders"));
    }

    #[test]
    fn absent_headers_are_none_and_attempt_zero() {
        let d = parse(&[]).unwrap();
        assert_eq!(d, Delivery::default());
        assert_eq!(d.retried(), 0);
        assert!(!d.is_retry());
    }

    #[test]
    fn malformed_values_are_typed_errors() {
        for bad in ["abc", "-1", "", "1.5", "+1", "99999999999"] {
            let err = parse(&[("upstash-retried", bad)]).unwrap_err();
            assert!(
                matches!(
                    err,
                    DeliveryError::Invalid {
                        header: RETRIED_HEADER,
                        ..
                    }
                ),
                "{bad}: {err:?}"
            );
        }
        assert_eq!(
            parse(&[("upstash-message-id", "")]).unwrap_err(),
            DeliveryError::Invalid {
                header: MESSAGE_ID_HEADER,
                reason: "empty"
            }
        );
        assert_eq!(
            parse(&[("upstash-message-id", "a"), ("upstash-message-id", "b")]).unwrap_err(),
            DeliveryError::Repeated {
                header: MESSAGE_ID_HEADER
            }
        );
        let long = "m".repeat(300);
        assert!(parse(&[("upstash-message-id", &long)]).is_err());
        let err = Delivery::from_headers([("upstash-message-id", &b"\xff\xfe"[..])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid upstash-message-id header: not visible ascii"
        );
    }
}
