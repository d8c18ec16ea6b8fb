//! A key's own rate limit: set through `PATCH /api/v1/keys/{id}`, it overrides the configured
//! default and project overrides for that key.

use serde::Serialize;

pub const MAX_REQUESTS_PER_SECOND: f64 = 1_000_000.0;
pub const MAX_BURST: u32 = 1_000_000;

/// Shown as `{"requestsPerSecond": r, "burst": b}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRateLimit {
    pub requests_per_second: f64,
    pub burst: u32,
}

impl KeyRateLimit {
    /// 0 < r ≤ 1,000,000 and 1 ≤ b ≤ 1,000,000; else the problem, for the field's detail.
    pub fn new(requests_per_second: f64, burst: u32) -> Result<KeyRateLimit, &'static str> {
        if !(requests_per_second > 0.0 && requests_per_second <= MAX_REQUESTS_PER_SECOND) {
            return Err("requests_per_second must be a number above 0 and at most 1000000");
        }
        if !(1..=MAX_BURST).contains(&burst) {
            return Err("burst must be an integer from 1 to 1000000");
        }
        Ok(KeyRateLimit {
            requests_per_second,
            burst,
        })
    }

    /// A stored pair (both columns set, or neither).
    pub fn from_stored(per_second: Option<f64>, burst: Option<i32>) -> Option<KeyRateLimit> {
        let burst = u32::try_from(burst?).ok()?;
        KeyRateLimit::new(per_second?, burst).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_where_the_contract_says() {
        assert!(KeyRateLimit::new(1_000_000.0, 1_000_000).is_ok());
        assert!(KeyRateLimit::new(0.001, 1).is_ok());
        for (rate, burst) in [
            (0.0, 1),
            (-1.0, 1),
            (1_000_000.5, 1),
            (f64::NAN, 1),
            (1.0, 0),
        ] {
            assert!(KeyRateLimit::new(rate, burst).is_err(), "{rate} {burst}");
        }
        assert!(KeyRateLimit::new(1.0, 1_000_001).is_err());
        assert_eq!(KeyRateLimit::from_stored(None, None), None);
        assert_eq!(
            KeyRateLimit::from_stored(Some(2.5), Some(3)),
            Some(KeyRateLimit {
                requests_per_second: 2.5,
                burst: 3
            })
        );
    }
}
