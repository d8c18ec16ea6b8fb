//! Timestamps as the API shows them: RFC 3339, UTC, milliseconds ("2026-01-15T09:30:00.000Z").

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(
        at: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => super::serialize(at, serializer),
            None => serializer.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    #[derive(serde::Serialize)]
    struct Probe {
        #[serde(with = "super")]
        at: chrono::DateTime<chrono::Utc>,
        #[serde(serialize_with = "super::option::serialize")]
        never: Option<chrono::DateTime<chrono::Utc>>,
    }

    #[test]
    fn formats_with_milliseconds_and_z() {
        let at = chrono::Utc.with_ymd_and_hms(2026, 1, 15, 9, 30, 0).unwrap();
        let json = serde_json::to_string(&Probe { at, never: None }).unwrap();
        assert_eq!(json, r#"{"at":"2026-01-15T09:30:00.000Z","never":null}"#);
    }
}
