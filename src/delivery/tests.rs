//! Unit tests of the header rules, then property tests of the same rules over generated
//! header lists (any order, any case, blanks around values, unrelated headers between).

use super::*;

impl Header {
    fn from_name(name: &str) -> Option<Self> {
        known_header(name).map(|(_, header)| header)
    }

    fn name(self) -> &'static str {
        HEADERS
            .iter()
            .find(|(_, header)| *header == self)
            .map_or("", |(name, _)| name)
    }
}

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
    let long = "m".repeat(MAX_VALUE_LEN);
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
fn names_are_compared_whole_and_case_insensitively() {
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
        "upstash-signature-extra",
        "x-upstash-region",
        "upstash-",
        "",
    ] {
        assert_eq!(Header::from_name(name), None, "{name}");
    }
    for (name, header) in [
        ("UpStAsH-SiGnAtUrE", Header::Signature),
        ("Upstash-Topic-Name", Header::TopicName),
        ("UPSTASH-MESSAGE-ID", Header::MessageId),
        ("upstash-retried", Header::Retried),
        ("Upstash-Region", Header::Region),
        ("upstash-caller-IP", Header::CallerIp),
        ("Upstash-Schedule-Id", Header::ScheduleId),
    ] {
        assert_eq!(Header::from_name(name), Some(header), "{name}");
    }
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

/// The rules over generated header lists: any order, any case, blanks around the values,
/// unrelated headers and a signature between them.
mod properties {
    use super::*;
    use proptest::prelude::*;

    const DELIVERY_HEADERS: [Header; 6] = [
        Header::MessageId,
        Header::Retried,
        Header::Region,
        Header::CallerIp,
        Header::ScheduleId,
        Header::TopicName,
    ];

    /// Names that are not delivery headers, some of them close to one.
    const OTHERS: [&str; 5] = [
        "content-type",
        "user-agent",
        "upstash-forward-x",
        "x-upstash-region",
        "upstash-signature-extra",
    ];

    type Entry = (String, Vec<u8>);
    /// The well-formed values sent, and the request's headers carrying them.
    type Request = (Vec<(Header, String)>, Vec<Entry>);

    /// What `Delivery` reports for `header` (`Upstash-Retried` as its decimal text).
    fn reported(delivery: &Delivery, header: Header) -> Option<String> {
        let text = match header {
            Header::Retried => return Some(delivery.retried().to_string()),
            Header::Signature => None,
            Header::MessageId => delivery.message_id(),
            Header::Region => delivery.region(),
            Header::CallerIp => delivery.caller_ip(),
            Header::ScheduleId => delivery.schedule_id(),
            Header::TopicName => delivery.url_group(),
        };
        text.map(str::to_owned)
    }

    /// Non-empty visible ASCII (inner spaces allowed), trimmed, at most 256 bytes.
    fn visible() -> impl Strategy<Value = String> {
        "[!-~]([ -~]{0,254}[!-~])?"
    }

    /// A well-formed value of `header`.
    fn valid_value(header: Header) -> BoxedStrategy<String> {
        match header {
            Header::Retried => any::<u32>().prop_map(|n| n.to_string()).boxed(),
            Header::MessageId => visible().boxed(),
            _ => prop_oneof![Just(String::new()), visible()].boxed(),
        }
    }

    /// Each delivery header present (with a well-formed value) or not.
    fn valid_values() -> impl Strategy<Value = Vec<(Header, String)>> {
        DELIVERY_HEADERS
            .map(|h| proptest::option::of(valid_value(h).prop_map(move |v| (h, v))).boxed())
            .prop_map(|values| values.into_iter().flatten().collect())
    }

    fn flip_case(name: &str, mask: u64) -> String {
        name.chars()
            .enumerate()
            .map(|(i, c)| {
                if mask >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect()
    }

    /// `name: value` as a request may carry it: the name in any case, blanks around the value.
    fn dressed(name: &'static str, value: String) -> BoxedStrategy<Entry> {
        (any::<u64>(), "[ \t]{0,2}", "[ \t]{0,2}")
            .prop_map(move |(mask, l, r)| (flip_case(name, mask), format!("{l}{value}{r}").into()))
            .boxed()
    }

    /// The values, dressed, shuffled among unrelated headers and (maybe) one signature.
    fn request(values: Vec<(Header, String)>) -> BoxedStrategy<Request> {
        let others = proptest::collection::vec(
            (
                0..OTHERS.len(),
                proptest::collection::vec(any::<u8>(), 0..8),
            ),
            0..4,
        );
        let signature = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8));
        (others, signature)
            .prop_flat_map(move |(others, signature)| {
                let mut entries: Vec<BoxedStrategy<Entry>> = values
                    .iter()
                    .map(|(h, v)| dressed(h.name(), v.clone()))
                    .collect();
                for (i, value) in others {
                    entries.push(Just((OTHERS[i].to_owned(), value)).boxed());
                }
                if let Some(value) = signature {
                    let lossy = String::from_utf8_lossy(&value).into_owned();
                    entries.push(dressed(SIGNATURE_HEADER, lossy));
                }
                (Just(values.clone()), entries.prop_shuffle())
            })
            .boxed()
    }

    fn pairs(entries: &[Entry]) -> impl Iterator<Item = (&str, &[u8])> {
        entries.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The raw value of the first header called `name` (any case).
    fn first(entries: &[Entry], name: &str) -> Option<Vec<u8>> {
        entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// What the scan must find besides the delivery, whatever the delivery headers hold.
    fn check_signature_and_region(
        entries: &[Entry],
        scan: &HeadScan<'_>,
    ) -> Result<(), TestCaseError> {
        let signature = first(entries, SIGNATURE_HEADER);
        prop_assert_eq!(scan.signature.map(|s| s.map(<[u8]>::to_vec)), Ok(signature));
        prop_assert_eq!(
            scan.region.map(<[u8]>::to_vec),
            first(entries, REGION_HEADER)
        );
        Ok(())
    }

    /// A value that is not visible ASCII once trimmed (a control, DEL or non-ASCII byte, or a
    /// tab, inside it), or longer than 256 bytes, and the reason it is refused.
    fn bad_value() -> impl Strategy<Value = (Vec<u8>, &'static str)> {
        let byte = prop_oneof![0u8..=31, 127u8..=255];
        let invisible = (visible(), byte)
            .prop_map(|(v, b)| ([v.as_bytes(), &[b], b"x"].concat(), "not visible ascii"));
        let long = "[!-~]{257,300}".prop_map(|v| (v.into_bytes(), "longer than 256 bytes"));
        prop_oneof![invisible, long]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Well-formed headers are read back exactly, trimmed, whatever their case and order.
        #[test]
        fn well_formed_headers_are_read_back((values, entries) in valid_values().prop_flat_map(request)) {
            let delivery = Delivery::from_headers(pairs(&entries)).unwrap();
            for header in DELIVERY_HEADERS {
                let sent = values.iter().find(|(h, _)| *h == header).map(|(_, v)| v.clone());
                let sent = match header {
                    Header::Retried => Some(sent.unwrap_or_else(|| "0".to_owned())),
                    _ => sent,
                };
                prop_assert_eq!(reported(&delivery, header), sent, "{:?}", header);
            }
            let scan = scan_head(pairs(&entries));
            check_signature_and_region(&entries, &scan)?;
            prop_assert_eq!(scan.delivery, Ok(delivery));
        }

        /// One malformed value anywhere is refused, named, with its reason; the scan still finds
        /// the signature and the first region.
        #[test]
        fn a_malformed_value_is_refused(
            (_, mut entries) in valid_values().prop_flat_map(request),
            header in proptest::sample::select(DELIVERY_HEADERS.to_vec()),
            (value, reason) in bad_value(),
            at in any::<proptest::sample::Index>(),
        ) {
            let at = at.index(entries.len() + 1);
            entries.insert(at, (header.name().to_ascii_uppercase(), value));
            let expected = DeliveryError::Invalid { header: header.name(), reason };
            prop_assert_eq!(Delivery::from_headers(pairs(&entries)), Err(expected.clone()));
            let scan = scan_head(pairs(&entries));
            check_signature_and_region(&entries, &scan)?;
            prop_assert_eq!(scan.delivery.err(), Some(expected));
        }

        /// A delivery header sent twice is refused, whatever the two values; with the region,
        /// the first one is the one the scan picks for the keys.
        #[test]
        fn a_repeated_header_is_refused(
            (values, entries) in valid_values().prop_flat_map(request),
            header in proptest::sample::select(DELIVERY_HEADERS.to_vec()),
            extra in any::<u32>(),
            at in any::<proptest::sample::Index>(),
        ) {
            let mut entries = entries;
            let value = match header {
                Header::Retried | Header::MessageId => extra.to_string(),
                _ => format!("v{extra}"),
            };
            if !values.iter().any(|(h, _)| *h == header) {
                entries.push((header.name().to_owned(), value.clone().into_bytes()));
            }
            let at = at.index(entries.len() + 1);
            entries.insert(at, (header.name().to_owned(), value.into_bytes()));
            let expected = DeliveryError::Repeated { header: header.name() };
            prop_assert_eq!(Delivery::from_headers(pairs(&entries)), Err(expected.clone()));
            let scan = scan_head(pairs(&entries));
            check_signature_and_region(&entries, &scan)?;
            prop_assert_eq!(scan.delivery.err(), Some(expected));
        }
    }
}
