//! Key expiry as a client asks for it: an RFC 3339 time with an offset, in the future, at
//! most ten years ahead; kept to the millisecond, as the API shows it.

use chrono::{DateTime, DurationRound, Months, Utc};

/// How far ahead an expiry may be.
pub const MAX_EXPIRY_MONTHS: u32 = 120;

/// The expiry `raw` names, judged at `now`; the problem in words otherwise.
pub fn parse_expiry(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let at = DateTime::parse_from_rfc3339(raw)
        .map_err(|_| {
            "must be an RFC 3339 time with an offset, like 2027-01-15T09:30:00Z".to_owned()
        })?
        .with_timezone(&Utc);
    // chrono reads a leap second (`:60`) as a second-59 time with 1 s or more of fraction,
    // which would compare and print differently from what is stored: refused.
    if chrono::Timelike::nanosecond(&at) >= 1_000_000_000 {
        return Err("must be a valid time (no leap second)".to_owned());
    }
    let at = to_millis(at);
    if at <= now {
        return Err("must be in the future".to_owned());
    }
    let latest = now
        .checked_add_months(Months::new(MAX_EXPIRY_MONTHS))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    if at > latest {
        return Err("must be at most 10 years ahead".to_owned());
    }
    Ok(at)
}

/// `at` without its sub-millisecond part, so what a list shows is exactly when a key stops.
pub fn to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    at.duration_trunc(chrono::Duration::milliseconds(1))
        .unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn a_leap_second_is_refused() {
        assert!(parse_expiry("2027-01-14T23:59:60.999Z", now()).is_err());
        assert!(parse_expiry("2027-01-14T10:15:60Z", now()).is_err());
        assert!(parse_expiry("2027-01-14T23:59:59.999Z", now()).is_ok());
    }

    #[test]
    fn accepts_future_times_with_any_offset() {
        let at = parse_expiry("2027-01-01T02:00:00.123456+02:00", now()).unwrap();
        assert_eq!(
            at,
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
                + chrono::Duration::milliseconds(123)
        );
        assert!(parse_expiry("2036-12-01T12:00:00Z", now()).is_ok());
    }

    #[test]
    fn refuses_past_far_future_and_offsetless_times() {
        for raw in [
            "2026-12-01T12:00:00Z",
            "2020-01-01T00:00:00Z",
            "2036-12-01T12:00:00.001Z",
            "2027-01-01T00:00:00",
            "2027-01-01",
            "tomorrow",
            "",
            "9999-12-31T23:59:59Z",
        ] {
            assert!(parse_expiry(raw, now()).is_err(), "{raw} accepted");
        }
    }
}
