//! Keyset pages, as every list of the API that pages shows them (the audit trail, an
//! endpoint's webhook deliveries): `limit` 1–100 (default 50), `cursor` = the previous page's
//! `next_cursor`, and the route's own filters; each parameter at most once, none unknown (a
//! misspelt filter must not quietly widen a query to everything).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{ApiError, FieldError};
use crate::store::PagePosition;

pub const DEFAULT_LIMIT: u16 = 50;
pub const MAX_LIMIT: u16 = 100;

/// Where a page starts and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u16,
    pub after: Option<PagePosition>,
}

/// Parses a list's query string. `filter` reads the route's other parameters: None for a name
/// it does not know, else whether the value was good (the problem in words otherwise);
/// `names` lists every parameter, for the message about an unknown one.
pub fn parse_page_query(
    query: &str,
    names: &str,
    mut filter: impl FnMut(&str, &str) -> Option<Result<(), String>>,
) -> Result<Page, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
        ApiError::validation(
            "Invalid query string",
            vec![FieldError::new(
                "query",
                "must be URL-encoded name=value pairs",
            )],
        )
    })?;
    let mut page = Page {
        limit: DEFAULT_LIMIT,
        after: None,
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut problems = Vec::new();
    for (name, value) in &pairs {
        if seen.contains(&name.as_str()) {
            problems.push(FieldError::new(name.clone(), "may be given only once"));
            continue;
        }
        seen.push(name);
        let problem = match name.as_str() {
            "limit" => parse_limit(value).map(|limit| page.limit = limit),
            "cursor" => decode_cursor(value)
                .map(|after| page.after = Some(after))
                .ok_or_else(|| "must be a next_cursor from a previous page".to_owned()),
            other => filter(other, value)
                .unwrap_or_else(|| Err(format!("is not a parameter of this route ({names})"))),
        };
        if let Err(problem) = problem {
            problems.push(FieldError::new(name.clone(), problem));
        }
    }
    if problems.is_empty() {
        Ok(page)
    } else {
        Err(ApiError::validation("Invalid query parameters", problems))
    }
}

fn parse_limit(raw: &str) -> Result<u16, String> {
    let problem = || format!("must be an integer from 1 to {MAX_LIMIT}");
    if raw.is_empty() || raw.len() > 3 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(problem());
    }
    match raw.parse::<u16>() {
        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(problem()),
    }
}

/// A cursor is the position of a page's last item: its time in microseconds (Postgres's
/// precision) and its id, as 48 hex digits. Opaque to clients; only its shape is checked,
/// since any position within the caller's own organization is harmless.
pub fn encode_cursor(position: PagePosition) -> String {
    // Items are written by this service, long after 1970: the time is never negative.
    let micros = u64::try_from(position.at.timestamp_micros()).unwrap_or(0);
    format!("{micros:016x}{}", position.id.simple())
}

fn decode_cursor(raw: &str) -> Option<PagePosition> {
    if raw.len() != 48 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let micros = i64::try_from(u64::from_str_radix(&raw[..16], 16).ok()?).ok()?;
    let at = DateTime::<Utc>::from_timestamp_micros(micros)?;
    let id = Uuid::try_parse(&raw[16..]).ok()?;
    Some(PagePosition { at, id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_to_the_microsecond() {
        let position = PagePosition {
            at: DateTime::<Utc>::from_timestamp_micros(1_764_590_400_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        let cursor = encode_cursor(position);
        assert_eq!(cursor.len(), 48);
        assert_eq!(decode_cursor(&cursor), Some(position));
    }

    #[test]
    fn malformed_cursors_are_refused() {
        let good = encode_cursor(PagePosition {
            at: Utc::now(),
            id: Uuid::now_v7(),
        });
        for bad in [
            "",
            "abc",
            &good[1..],
            &format!("{good}0"),
            &good.replace(&good[..1], "g"),
            "ffffffffffffffff00000000000000000000000000000000",
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad:?} accepted");
        }
    }

    #[test]
    fn limits_are_plain_integers_from_1_to_100() {
        assert_eq!(parse_limit("1"), Ok(1));
        assert_eq!(parse_limit("100"), Ok(100));
        for bad in [
            "0", "101", "", "-1", "+5", " 5", "5.0", "1e2", "0100", "abc",
        ] {
            assert!(parse_limit(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn pages_take_limit_and_cursor_once_and_nothing_unknown() {
        let plain = |query: &str| parse_page_query(query, "limit, cursor", |_, _| None);
        assert_eq!(
            plain("").unwrap(),
            Page {
                limit: DEFAULT_LIMIT,
                after: None
            }
        );
        assert_eq!(plain("limit=2").unwrap().limit, 2);
        for bad in ["limit=2&limit=3", "limt=2", "cursor=", "status=failed"] {
            assert!(plain(bad).is_err(), "{bad:?} accepted");
        }
    }
}
