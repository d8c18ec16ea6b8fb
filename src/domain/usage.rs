//! Usage counts: what happened to the requests presenting a key (its outcomes), counted per
//! UTC hour, and the buckets the usage routes answer with (by hour or by day).

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// What became of one request presenting an existing key. `UsageExceeded` stays 0 until
/// credits land; the field is kept so the answer's shape never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageOutcome {
    Valid,
    RateLimited,
    UsageExceeded,
    InsufficientScope,
    Forbidden,
    Revoked,
    Expired,
    Disabled,
}

impl UsageOutcome {
    /// In the order of the answer's fields and of the table's columns.
    pub const ALL: [UsageOutcome; 8] = [
        UsageOutcome::Valid,
        UsageOutcome::RateLimited,
        UsageOutcome::UsageExceeded,
        UsageOutcome::InsufficientScope,
        UsageOutcome::Forbidden,
        UsageOutcome::Revoked,
        UsageOutcome::Expired,
        UsageOutcome::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UsageOutcome::Valid => "valid",
            UsageOutcome::RateLimited => "rate_limited",
            UsageOutcome::UsageExceeded => "usage_exceeded",
            UsageOutcome::InsufficientScope => "insufficient_scope",
            UsageOutcome::Forbidden => "forbidden",
            UsageOutcome::Revoked => "revoked",
            UsageOutcome::Expired => "expired",
            UsageOutcome::Disabled => "disabled",
        }
    }
}

/// One count per outcome, indexed as [`UsageOutcome::ALL`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts(pub [u64; 8]);

impl UsageCounts {
    pub fn add(&mut self, outcome: UsageOutcome) {
        self.0[outcome as usize] += 1;
    }

    pub fn get(&self, outcome: UsageOutcome) -> u64 {
        self.0[outcome as usize]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|count| *count == 0)
    }

    pub fn merge(&mut self, other: &UsageCounts) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
    }
}

/// How usage is summed: per UTC hour or per UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub const NAMES: &'static str = "hour, day";

    pub fn parse(raw: &str) -> Option<Granularity> {
        match raw {
            "hour" => Some(Granularity::Hour),
            "day" => Some(Granularity::Day),
            _ => None,
        }
    }

    pub fn step(self) -> Duration {
        match self {
            Granularity::Hour => Duration::hours(1),
            Granularity::Day => Duration::days(1),
        }
    }

    /// The longest range one request may ask for.
    pub fn max_range(self) -> Duration {
        match self {
            Granularity::Hour => Duration::days(31),
            Granularity::Day => Duration::days(366),
        }
    }

    /// The start of the bucket holding `at`.
    pub fn truncate(self, at: DateTime<Utc>) -> DateTime<Utc> {
        at.duration_trunc(self.step()).unwrap_or(at)
    }

    /// The first bucket start at or after `at`.
    pub fn ceil(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let start = self.truncate(at);
        if start == at {
            at
        } else {
            start + self.step()
        }
    }
}

/// One bucket of an answer: its start and its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageBucket {
    pub start: DateTime<Utc>,
    pub counts: UsageCounts,
}

/// `{start, total, valid, rate_limited, …}`: every outcome present, 0 when none; `start` in
/// UTC to the second (`2026-01-15T09:00:00Z`).
impl Serialize for UsageBucket {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2 + UsageOutcome::ALL.len()))?;
        map.serialize_entry(
            "start",
            &self
                .start
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )?;
        map.serialize_entry("total", &self.counts.total())?;
        for outcome in UsageOutcome::ALL {
            map.serialize_entry(outcome.as_str(), &self.counts.get(outcome))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn outcomes_index_their_own_counts() {
        for (index, outcome) in UsageOutcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, index);
        }
    }

    #[test]
    fn buckets_show_every_outcome_and_their_total() {
        let mut counts = UsageCounts::default();
        counts.add(UsageOutcome::Valid);
        counts.add(UsageOutcome::Valid);
        counts.add(UsageOutcome::Revoked);
        let bucket = UsageBucket {
            start: Utc.with_ymd_and_hms(2026, 1, 15, 9, 0, 0).unwrap(),
            counts,
        };
        let json = serde_json::to_value(&bucket).unwrap();
        assert_eq!(json["start"], "2026-01-15T09:00:00Z");
        assert_eq!(json["total"], 3);
        assert_eq!(json["valid"], 2);
        assert_eq!(json["revoked"], 1);
        assert_eq!(json["usage_exceeded"], 0);
        assert_eq!(json.as_object().unwrap().len(), 10);
    }

    #[test]
    fn truncation_and_ceiling_are_utc() {
        let at = Utc.with_ymd_and_hms(2026, 1, 15, 9, 30, 5).unwrap();
        let hour = Utc.with_ymd_and_hms(2026, 1, 15, 9, 0, 0).unwrap();
        let day = Utc.with_ymd_and_hms(2026, 1, 15, 0, 0, 0).unwrap();
        assert_eq!(Granularity::Hour.truncate(at), hour);
        assert_eq!(Granularity::Day.truncate(at), day);
        assert_eq!(Granularity::Hour.ceil(at), hour + Duration::hours(1));
        assert_eq!(Granularity::Hour.ceil(hour), hour);
        assert_eq!(Granularity::Day.ceil(at), day + Duration::days(1));
    }
}
