//! Unix seconds as RFC 3339 dates (UTC) and as "how long ago / ahead".

use qstash_receiver::test_utils::GO_ZERO_TIME;

/// 9999-12-31T23:59:59Z: later (or earlier than year 1) is not shown as a date.
const MAX: i64 = 253_402_300_799;

/// `secs` as `YYYY-MM-DDTHH:MM:SSZ`, or `None` outside years 1 to 9999.
pub(crate) fn rfc3339(secs: i64) -> Option<String> {
    if !(GO_ZERO_TIME..=MAX).contains(&secs) {
        return None;
    }
    let (days, time) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3600,
        time % 3600 / 60,
        time % 60
    ))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `at` relative to `now`: `in 4m 10s`, `2h 5m ago`, `now`.
pub(crate) fn relative(at: i64, now: i64) -> String {
    let delta = i128::from(at) - i128::from(now);
    match delta {
        0 => "now".to_owned(),
        d if d > 0 => format!("in {}", span(d.unsigned_abs())),
        d => format!("{} ago", span(d.unsigned_abs())),
    }
}

/// A duration in its two largest units, the second left out when 0: `3d 4h`, `5m 2s`, `7s`.
fn span(secs: u128) -> String {
    const UNITS: [(u128, &str); 5] = [
        (31_536_000, "y"),
        (86_400, "d"),
        (3600, "h"),
        (60, "m"),
        (1, "s"),
    ];
    let mut units = UNITS.into_iter().skip_while(|&(size, _)| secs < size);
    let Some((size, unit)) = units.next() else {
        return String::new();
    };
    match units.next().map(|(next, unit)| (secs % size / next, unit)) {
        Some((n, next_unit)) if n > 0 => format!("{}{unit} {n}{next_unit}", secs / size),
        _ => format!("{}{unit}", secs / size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339(1_767_225_600).as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            rfc3339(951_825_599).as_deref(),
            Some("2000-02-29T11:59:59Z")
        );
        assert_eq!(
            rfc3339(GO_ZERO_TIME).as_deref(),
            Some("0001-01-01T00:00:00Z")
        );
        assert_eq!(rfc3339(-1).as_deref(), Some("1969-12-31T23:59:59Z"));
        assert_eq!(rfc3339(i64::MAX), None);
        assert_eq!(rfc3339(i64::MIN), None);
    }

    #[test]
    fn spans() {
        assert_eq!(relative(10, 10), "now");
        assert_eq!(relative(310, 10), "in 5m");
        assert_eq!(relative(10, 317), "5m 7s ago");
        assert_eq!(relative(0, 90_061), "1d 1h ago");
        assert!(relative(i64::MAX, i64::MIN).starts_with("in "));
    }
}
