//! Delivery metadata from QStash's request headers.

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

/// Values longer than this are refused (QStash's message ids are ~30 bytes); keeps dedup keys
/// bounded.
const MAX_VALUE_LEN: usize = 256;

/// Typed metadata of one delivery, read from its headers.
///
/// None of these headers is covered by the signature (it binds only the URL and the body):
/// treat them as information, never as proof.
///
/// ```
/// use qstash_receiver::Delivery;
///
/// let headers = [
///     ("upstash-message-id", &b"msg_123"[..]),
///     ("upstash-retried", b"2"),
///     ("upstash-schedule-id", b"scd_9"),
///     ("content-type", b"application/json"),
/// ];
/// let delivery = Delivery::from_headers(headers)?;
/// assert_eq!(delivery.message_id(), Some("msg_123"));
/// assert_eq!(delivery.retried(), 2);
/// assert!(delivery.is_retry());
/// assert_eq!(delivery.schedule_id(), Some("scd_9"));
///
/// // A malformed value is an error, not a silent 0.
/// let err = Delivery::from_headers([("upstash-retried", &b"abc"[..])]).unwrap_err();
/// assert_eq!(err.to_string(), "invalid upstash-retried header: not a decimal attempt number");
/// # Ok::<(), qstash_receiver::DeliveryError>(())
/// ```
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
    /// is not visible ASCII, is longer than 256 bytes, is repeated, or (for `Upstash-Retried`) is
    /// not a decimal number is a [`DeliveryError`]. Values are trimmed of spaces and tabs.
    pub fn from_headers<'a, I, N>(headers: I) -> Result<Self, DeliveryError>
    where
        I: IntoIterator<Item = (N, &'a [u8])>,
        N: AsRef<str>,
    {
        let mut reader = Reader::default();
        for (name, value) in headers {
            match known_header(name.as_ref()) {
                None | Some((_, Header::Signature)) => {}
                Some(header) => reader.read(header, value)?,
            }
        }
        Ok(reader.delivery)
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

    /// `Upstash-Region`, e.g. `US-EAST-1`: the one whose keys verified (see [`REGION_HEADER`]).
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

/// A header the scan reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Header {
    Signature,
    MessageId,
    Retried,
    Region,
    CallerIp,
    ScheduleId,
    TopicName,
}

/// The headers the scan reads, by lower-case name.
const HEADERS: [(&str, Header); 7] = [
    (SIGNATURE_HEADER, Header::Signature),
    (MESSAGE_ID_HEADER, Header::MessageId),
    (RETRIED_HEADER, Header::Retried),
    (REGION_HEADER, Header::Region),
    (CALLER_IP_HEADER, Header::CallerIp),
    (SCHEDULE_ID_HEADER, Header::ScheduleId),
    (TOPIC_NAME_HEADER, Header::TopicName),
];

/// The header called `name` (compared case-insensitively), with its lower-case name.
fn known_header(name: &str) -> Option<(&'static str, Header)> {
    HEADERS
        .into_iter()
        .find(|(n, _)| name.eq_ignore_ascii_case(n))
}

/// A [`Delivery`] being read, header by header.
#[derive(Default)]
struct Reader {
    delivery: Delivery,
    seen_retried: bool,
}

impl Reader {
    fn read(
        &mut self,
        (name, header): (&'static str, Header),
        value: &[u8],
    ) -> Result<(), DeliveryError> {
        let text = header_text(name, value)?;
        let repeated = DeliveryError::Repeated { header: name };
        let slot = match header {
            Header::Signature => return Ok(()),
            Header::Retried => {
                if std::mem::replace(&mut self.seen_retried, true) {
                    return Err(repeated);
                }
                self.delivery.retried = parse_retried(text)?;
                return Ok(());
            }
            Header::MessageId => &mut self.delivery.message_id,
            Header::Region => &mut self.delivery.region,
            Header::CallerIp => &mut self.delivery.caller_ip,
            Header::ScheduleId => &mut self.delivery.schedule_id,
            Header::TopicName => &mut self.delivery.url_group,
        };
        if slot.is_some() {
            return Err(repeated);
        }
        if header == Header::MessageId && text.is_empty() {
            return Err(DeliveryError::Invalid {
                header: name,
                reason: "empty",
            });
        }
        *slot = Some(text.to_owned());
        Ok(())
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

/// Reads the signature, the region and the delivery headers in one pass. Unlike
/// [`Delivery::from_headers`], it goes on past a bad delivery header (the token is checked
/// first, so the signature after it is still needed).
pub(crate) fn scan_head<'a, I, N>(headers: I) -> HeadScan<'a>
where
    I: IntoIterator<Item = (N, &'a [u8])>,
    N: AsRef<str>,
{
    let mut signature = Ok(None);
    let mut region = None;
    let mut reader = Reader::default();
    let mut problem = None;
    for (name, value) in headers {
        let Some(header) = known_header(name.as_ref()) else {
            continue;
        };
        match header.1 {
            Header::Signature => {
                signature = match signature {
                    Ok(None) => Ok(Some(value)),
                    _ => Err(()),
                };
                continue;
            }
            Header::Region if region.is_none() => region = Some(value),
            _ => {}
        }
        if problem.is_none() {
            problem = reader.read(header, value).err();
        }
    }
    HeadScan {
        signature,
        region,
        delivery: match problem {
            Some(problem) => Err(problem),
            None => Ok(reader.delivery),
        },
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
    if trimmed.len() > MAX_VALUE_LEN {
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
mod tests;
