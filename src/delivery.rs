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
/// `Upstash-Region`: the QStash region that delivered (each has its own keys). Repeated, its
/// **first** value selects the keys (receiver and actix guard alike), then 400 once verified.
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
///
/// The header values are kept in one allocation (a delivery is built for every request).
#[derive(Clone, Default)]
pub struct Delivery {
    /// The present values, one after the other.
    text: Box<str>,
    /// Where each optional value sits in `text`, indexed by [`Slot`].
    spans: [Option<(u16, u16)>; SLOTS],
    retried: u32,
}

/// The optional string values of a [`Delivery`], as indexes into its spans.
#[derive(Clone, Copy)]
enum Slot {
    MessageId = 0,
    Region = 1,
    CallerIp = 2,
    ScheduleId = 3,
    UrlGroup = 4,
}
const SLOTS: usize = 5;

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
        let mut values = Values::default();
        for (name, value) in headers {
            if let Some(header) = Known::from_name(name.as_ref()) {
                values.add(header, value)?;
            }
        }
        Ok(values.finish())
    }

    fn get(&self, slot: Slot) -> Option<&str> {
        let (start, end) = self.spans.get(slot as usize).copied().flatten()?;
        self.text.get(usize::from(start)..usize::from(end))
    }

    /// `Upstash-Message-Id`: the key for idempotency (the same on every retry of one message;
    /// each URL-group endpoint gets its own). `None` when the header is absent.
    pub fn message_id(&self) -> Option<&str> {
        self.get(Slot::MessageId)
    }

    /// `Upstash-Retried`: how many times this message was tried before (0 on the first attempt).
    pub fn retried(&self) -> u32 {
        self.retried
    }

    /// Whether this is a retry (`retried() > 0`).
    pub fn is_retry(&self) -> bool {
        self.retried > 0
    }

    /// `Upstash-Region`, e.g. `US-EAST-1`: the one whose keys verified (see [`REGION_HEADER`]).
    pub fn region(&self) -> Option<&str> {
        self.get(Slot::Region)
    }

    /// `Upstash-Caller-Ip`: the publisher's IP address, as sent.
    pub fn caller_ip(&self) -> Option<&str> {
        self.get(Slot::CallerIp)
    }

    /// `Upstash-Schedule-Id`: set when the message comes from a schedule.
    pub fn schedule_id(&self) -> Option<&str> {
        self.get(Slot::ScheduleId)
    }

    /// `Upstash-Topic-Name`: the URL group the message was published to.
    pub fn url_group(&self) -> Option<&str> {
        self.get(Slot::UrlGroup)
    }
}

impl PartialEq for Delivery {
    fn eq(&self, other: &Self) -> bool {
        self.retried == other.retried
            && self.message_id() == other.message_id()
            && self.region() == other.region()
            && self.caller_ip() == other.caller_ip()
            && self.schedule_id() == other.schedule_id()
            && self.url_group() == other.url_group()
    }
}

impl Eq for Delivery {}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("message_id", &self.message_id())
            .field("retried", &self.retried)
            .field("region", &self.region())
            .field("caller_ip", &self.caller_ip())
            .field("schedule_id", &self.schedule_id())
            .field("url_group", &self.url_group())
            .finish()
    }
}

/// The delivery headers seen so far, borrowed from the request.
#[derive(Default)]
struct Values<'a> {
    slots: [Option<&'a str>; SLOTS],
    retried: Option<u32>,
}

impl<'a> Values<'a> {
    fn add(&mut self, header: Known, value: &'a [u8]) -> Result<(), DeliveryError> {
        let (slot, non_empty) = match header {
            Known::MessageId => (Slot::MessageId, true),
            Known::Region => (Slot::Region, false),
            Known::CallerIp => (Slot::CallerIp, false),
            Known::ScheduleId => (Slot::ScheduleId, false),
            Known::TopicName => (Slot::UrlGroup, false),
            Known::Retried => {
                let text = header_text(header.name(), value)?;
                if self.retried.is_some() {
                    return Err(DeliveryError::Repeated {
                        header: header.name(),
                    });
                }
                self.retried = Some(parse_retried(text)?);
                return Ok(());
            }
        };
        let text = header_text(header.name(), value)?;
        let Some(entry) = self.slots.get_mut(slot as usize) else {
            return Ok(());
        };
        if entry.is_some() {
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
        *entry = Some(text);
        Ok(())
    }

    /// One allocation for every value (each at most `MAX_ID_LEN` bytes: the offsets fit `u16`).
    fn finish(self) -> Delivery {
        let len = self.slots.iter().flatten().map(|s| s.len()).sum();
        let mut text = String::with_capacity(len);
        let mut spans = [None; SLOTS];
        for (span, value) in spans.iter_mut().zip(self.slots) {
            if let Some(value) = value {
                let start = text.len();
                text.push_str(value);
                if let (Ok(start), Ok(end)) = (u16::try_from(start), u16::try_from(text.len())) {
                    *span = Some((start, end));
                }
            }
        }
        Delivery {
            text: text.into_boxed_str(),
            spans,
            retried: self.retried.unwrap_or(0),
        }
    }
}

/// What one pass over a request's headers found: the signature and region the verifier needs,
/// and the delivery metadata (or the first problem with it, reported after the token's).
pub(crate) struct HeadScan<'a> {
    /// `Err` when the signature header is repeated.
    pub(crate) signature: Result<Option<&'a [u8]>, ()>,
    /// The first `Upstash-Region` value (selects the region's keys; see [`REGION_HEADER`]).
    pub(crate) region: Option<&'a [u8]>,
    pub(crate) delivery: Result<Delivery, DeliveryError>,
}

/// Reads the signature, the region and the delivery headers in one pass.
pub(crate) fn scan_head<'a, I, N>(headers: I) -> HeadScan<'a>
where
    I: IntoIterator<Item = (N, &'a [u8])>,
    N: AsRef<str>,
{
    let mut signature = Ok(None);
    let mut region = None;
    let mut values = Values::default();
    let mut problem = None;
    for (name, value) in headers {
        let Some(header) = Head::from_name(name.as_ref()) else {
            continue;
        };
        let header = match header {
            Head::Signature => {
                signature = match signature {
                    Ok(None) => Ok(Some(value)),
                    _ => Err(()),
                };
                continue;
            }
            Head::Delivery(header) => header,
        };
        if matches!(header, Known::Region) && region.is_none() {
            region = Some(value);
        }
        if problem.is_none() {
            problem = values.add(header, value).err();
        }
    }
    HeadScan {
        signature,
        region,
        delivery: match problem {
            Some(problem) => Err(problem),
            None => Ok(values.finish()),
        },
    }
}

const PREFIX: &str = "upstash-";

/// A header [`scan_head`] reads.
#[derive(Clone, Copy)]
enum Head {
    Signature,
    Delivery(Known),
}

impl Head {
    /// Case-insensitive; most other headers are told apart by their length alone, the rest by
    /// one comparison.
    fn from_name(name: &str) -> Option<Self> {
        let candidate = match name.len() {
            14 => Head::Delivery(Known::Region),
            15 => Head::Delivery(Known::Retried),
            17 => match name.as_bytes().get(PREFIX.len()) {
                Some(b's' | b'S') => Head::Signature,
                _ => Head::Delivery(Known::CallerIp),
            },
            18 => match name.as_bytes().get(PREFIX.len()) {
                Some(b'm' | b'M') => Head::Delivery(Known::MessageId),
                _ => Head::Delivery(Known::TopicName),
            },
            19 => Head::Delivery(Known::ScheduleId),
            _ => return None,
        };
        let expected = match candidate {
            Head::Signature => SIGNATURE_HEADER,
            Head::Delivery(known) => known.name(),
        };
        // Header maps (`http`, actix-web) hold lower-case names: one exact comparison.
        (name == expected || name.eq_ignore_ascii_case(expected)).then_some(candidate)
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
        match Head::from_name(name)? {
            Head::Delivery(known) => Some(known),
            Head::Signature => None,
        }
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
    let invalid = DeliveryError::Invalid {
        header,
        reason: "not visible ascii",
    };
    let trimmed = trim_blanks(value);
    if !trimmed.iter().all(|&b| b.is_ascii_graphic() || b == b' ') {
        return Err(invalid);
    }
    if trimmed.len() > MAX_ID_LEN {
        return Err(DeliveryError::Invalid {
            header,
            reason: "longer than 256 bytes",
        });
    }
    // Visible ASCII and spaces: always UTF-8.
    std::str::from_utf8(trimmed).map_err(|_| invalid)
}

/// `value` without leading and trailing spaces and tabs.
fn trim_blanks(value: &[u8]) -> &[u8] {
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !blank(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    value.get(start..end).unwrap_or_default()
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

    #[test]
    fn equality_and_debug_ignore_header_order() {
        let a = parse(&[("upstash-message-id", "m1"), ("upstash-region", "R")]).unwrap();
        let b = parse(&[("upstash-region", "R"), ("upstash-message-id", "m1")]).unwrap();
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(
            format!("{a:?}"),
            "Delivery { message_id: Some(\"m1\"), retried: 0, region: Some(\"R\"), \
             caller_ip: None, schedule_id: None, url_group: None }"
        );
        let c = parse(&[("upstash-message-id", "m1"), ("upstash-region", "S")]).unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn longest_values_fit() {
        let long = "m".repeat(MAX_ID_LEN);
        let d = parse(&[
            ("upstash-message-id", &long),
            ("upstash-region", &long),
            ("upstash-caller-ip", &long),
            ("upstash-schedule-id", &long),
            ("upstash-topic-name", &long),
        ])
        .unwrap();
        assert_eq!(d.message_id(), Some(long.as_str()));
        assert_eq!(d.url_group(), Some(long.as_str()));
        assert_eq!(d.schedule_id(), Some(long.as_str()));
    }

    fn scan<'a>(headers: &'a [(&'a str, &'a str)]) -> HeadScan<'a> {
        scan_head(headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    #[test]
    fn one_pass_finds_signature_region_and_delivery() {
        let headers = [
            ("Upstash-Signature", "tok"),
            ("upstash-region", "EU-CENTRAL-1"),
            ("upstash-message-id", "msg_1"),
            ("upstash-retried", "2"),
            ("upstash-signature-extra", "x"),
            ("content-type", "application/json"),
        ];
        let s = scan(&headers);
        assert_eq!(s.signature, Ok(Some(&b"tok"[..])));
        assert_eq!(s.region, Some(&b"EU-CENTRAL-1"[..]));
        let d = s.delivery.unwrap();
        assert_eq!((d.message_id(), d.retried()), (Some("msg_1"), 2));
        assert_eq!(d.region(), Some("EU-CENTRAL-1"));

        assert_eq!(scan(&[("content-type", "x")]).signature, Ok(None));
        let twice = [("upstash-signature", "a"), ("UPSTASH-SIGNATURE", "b")];
        assert_eq!(scan(&twice).signature, Err(()));
    }

    #[test]
    fn scan_keeps_the_signature_after_a_bad_delivery_header() {
        // The delivery problem is kept for later (the token is checked first), and the scan
        // goes on: a signature after the bad header is still found.
        let headers = [
            ("upstash-retried", "x"),
            ("upstash-region", "A"),
            ("upstash-region", "B"),
            ("upstash-signature", "tok"),
        ];
        let s = scan(&headers);
        assert_eq!(s.signature, Ok(Some(&b"tok"[..])));
        // The first region selects the keys (the guard reads the same scan).
        assert_eq!(s.region, Some(&b"A"[..]));
        assert_eq!(
            s.delivery.unwrap_err(),
            DeliveryError::Invalid {
                header: RETRIED_HEADER,
                reason: "not a decimal attempt number"
            }
        );
    }

    #[test]
    fn names_of_the_same_length_are_not_mistaken() {
        for name in [
            "content-length",
            "accept-encoding",
            "upstash-signatur3",
            "upstash-caller-iq",
            "upstash-message-ix",
            "upstash-topic-namf",
            "upstash-schedule-ie",
            "xpstash-region",
            "upstash-retriex",
            "upstash-forward-x",
        ] {
            assert!(Head::from_name(name).is_none(), "{name}");
        }
        assert!(matches!(
            Head::from_name("UpStAsH-SiGnAtUrE"),
            Some(Head::Signature)
        ));
        assert!(matches!(
            Head::from_name("Upstash-Topic-Name"),
            Some(Head::Delivery(Known::TopicName))
        ));
        assert!(matches!(
            Head::from_name("UPSTASH-MESSAGE-ID"),
            Some(Head::Delivery(Known::MessageId))
        ));
    }

    #[test]
    fn values_are_trimmed_of_blanks_only() {
        let d = parse(&[
            ("upstash-message-id", " \tmsg 1\t "),
            ("upstash-region", "\t"),
        ])
        .unwrap();
        assert_eq!(d.message_id(), Some("msg 1"));
        assert_eq!(d.region(), Some(""));
        assert!(parse(&[("upstash-region", "a\u{7f}")]).is_err());
        assert!(parse(&[("upstash-region", "caf\u{e9}")]).is_err());
        assert!(parse(&[("upstash-message-id", " \t ")]).is_err());
    }

    /// The one-pass scan against a plain reference written from the rules, not the code:
    /// lower-case the name, compare whole names, the first problem of the delivery headers.
    mod differential {
        use super::*;
        use proptest::prelude::*;

        const NAMES: [&str; 12] = [
            "upstash-signature",
            "upstash-message-id",
            "upstash-retried",
            "upstash-region",
            "upstash-caller-ip",
            "upstash-schedule-id",
            "upstash-topic-name",
            "content-length",
            "upstash-signaturx",
            "upstash-forward-a",
            "x-upstash-region",
            "host",
        ];

        type Reference = (
            Result<Option<Vec<u8>>, ()>,
            Option<Vec<u8>>,
            Result<Delivery, DeliveryError>,
        );

        fn reference(headers: &[(String, Vec<u8>)]) -> Reference {
            let mut signature = Ok(None);
            let mut region = None;
            let mut seen: Vec<(&'static str, String)> = Vec::new();
            let mut retried = None;
            let mut problem = None;
            for (name, value) in headers {
                let name = name.to_ascii_lowercase();
                if name == SIGNATURE_HEADER {
                    signature = match signature {
                        Ok(None) => Ok(Some(value.clone())),
                        _ => Err(()),
                    };
                    continue;
                }
                let known = [
                    MESSAGE_ID_HEADER,
                    RETRIED_HEADER,
                    REGION_HEADER,
                    CALLER_IP_HEADER,
                    SCHEDULE_ID_HEADER,
                    TOPIC_NAME_HEADER,
                ]
                .into_iter()
                .find(|known| *known == name);
                let Some(header) = known else { continue };
                if header == REGION_HEADER && region.is_none() {
                    region = Some(value.clone());
                }
                if problem.is_some() {
                    continue;
                }
                let text = String::from_utf8_lossy(value)
                    .trim_matches(|c| c == ' ' || c == '\t')
                    .to_owned();
                let check = if !value.is_ascii()
                    || !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                {
                    Err(DeliveryError::Invalid {
                        header,
                        reason: "not visible ascii",
                    })
                } else if text.len() > MAX_ID_LEN {
                    Err(DeliveryError::Invalid {
                        header,
                        reason: "longer than 256 bytes",
                    })
                } else if header == RETRIED_HEADER {
                    if retried.is_some() {
                        Err(DeliveryError::Repeated { header })
                    } else {
                        parse_retried(&text).map(|n| retried = Some(n))
                    }
                } else if seen.iter().any(|(h, _)| *h == header) {
                    Err(DeliveryError::Repeated { header })
                } else if header == MESSAGE_ID_HEADER && text.is_empty() {
                    Err(DeliveryError::Invalid {
                        header,
                        reason: "empty",
                    })
                } else {
                    seen.push((header, text));
                    Ok(())
                };
                problem = check.err();
            }
            let value = |h: &str| seen.iter().find(|(k, _)| *k == h).map(|(_, v)| v.clone());
            let delivery = match problem {
                Some(problem) => Err(problem),
                None => {
                    let mut pairs: Vec<(&str, String)> = Vec::new();
                    for h in [
                        MESSAGE_ID_HEADER,
                        REGION_HEADER,
                        CALLER_IP_HEADER,
                        SCHEDULE_ID_HEADER,
                        TOPIC_NAME_HEADER,
                    ] {
                        if let Some(v) = value(h) {
                            pairs.push((h, v));
                        }
                    }
                    let retried = retried.unwrap_or(0).to_string();
                    pairs.push((RETRIED_HEADER, retried));
                    // Well-formed values only: the parser under test builds the expected value.
                    Ok(
                        Delivery::from_headers(pairs.iter().map(|(n, v)| (*n, v.as_bytes())))
                            .unwrap(),
                    )
                }
            };
            (signature, region, delivery)
        }

        fn header() -> impl Strategy<Value = (String, Vec<u8>)> {
            let name = (0..NAMES.len(), any::<u64>()).prop_map(|(i, flips)| {
                NAMES[i]
                    .chars()
                    .enumerate()
                    .map(|(k, c)| {
                        if flips >> (k % 64) & 1 == 1 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect::<String>()
            });
            let value = prop_oneof![
                Just(b"msg_1".to_vec()),
                Just(b" 12 ".to_vec()),
                Just(b"\t0".to_vec()),
                Just(b"".to_vec()),
                Just(b"  ".to_vec()),
                Just(b"4294967296".to_vec()),
                Just("caf\u{e9}".as_bytes().to_vec()),
                Just(b"a\x7fb".to_vec()),
                Just(vec![b'm'; 257]),
                Just(vec![b'm'; 256]),
                proptest::collection::vec(any::<u8>(), 0..6),
            ];
            (name, value)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]
            #[test]
            fn scan_head_agrees_with_the_reference(headers in proptest::collection::vec(header(), 0..10)) {
                let scan = scan_head(headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
                let (signature, region, delivery) = reference(&headers);
                prop_assert_eq!(scan.signature.map(|s| s.map(<[u8]>::to_vec)), signature);
                prop_assert_eq!(scan.region.map(<[u8]>::to_vec), region);
                prop_assert_eq!(&scan.delivery, &delivery);
                // `Delivery::from_headers` is the same scan without the signature.
                let alone = Delivery::from_headers(headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())));
                prop_assert_eq!(alone, delivery);
            }
        }
    }
}
