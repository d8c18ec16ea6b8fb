//! `[webhooks]`: where deliveries may go, how fast they go out, how they are retried, and when
//! keys warn of their expiry.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;

use super::error::{invalid, SettingsError};
use super::serde_helpers::{millis, secs};

/// The longest a single attempt may be given, and the longest wait between two attempts.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);
/// At most this many retries (each one a row's worth of attempts).
const MAX_RETRIES: usize = 100;
/// Keys expire at most 10 years ahead: a longer warning would warn at creation anyway.
const MAX_EXPIRY_WARNING: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// `http://` endpoint URLs are accepted (tests, private deployments); else `https://` only.
    pub allow_http: bool,
    /// Targets resolving to loopback, private, link-local, … addresses are contacted.
    pub allow_private_targets: bool,
    pub max_endpoints_per_org: NonZeroU32,
    /// How often each instance looks for due deliveries and expiring keys (commits also wake
    /// it at once).
    #[serde(rename = "poll_interval_ms", deserialize_with = "millis")]
    pub poll_interval: Duration,
    /// A 2xx within this is delivered; anything slower is a failed attempt.
    #[serde(rename = "timeout_ms", deserialize_with = "millis")]
    pub timeout: Duration,
    /// The waits before each retry: a delivery gets 1 + this many attempts.
    #[serde(rename = "retry_schedule_ms", deserialize_with = "schedule")]
    pub retry_schedule: Vec<Duration>,
    /// Attempts in flight per instance, at most.
    pub concurrency: NonZeroUsize,
    /// `key.expiring` is written this long before a key's `expiresAt`.
    #[serde(rename = "expiry_warning_secs", deserialize_with = "secs")]
    pub expiry_warning: Duration,
}

fn schedule<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<Duration>, D::Error> {
    Vec::<u64>::deserialize(deserializer)
        .map(|delays| delays.into_iter().map(Duration::from_millis).collect())
}

impl WebhookSettings {
    /// Attempts a delivery gets before it fails: the first, then one per retry delay.
    pub fn max_attempts(&self) -> usize {
        1 + self.retry_schedule.len()
    }

    /// How long an instance holds an endpoint for one attempt: the attempt's timeout and a
    /// margin to record its outcome. A crashed instance's delivery is attempted again once
    /// this has passed.
    pub fn lease(&self) -> Duration {
        self.timeout + Duration::from_secs(5)
    }

    /// Bounds the types can't say (`timeout_ms` and `poll_interval_ms` being at least 1 are
    /// among the durations `Settings::validate` checks).
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        if self.timeout > MAX_TIMEOUT {
            return invalid("webhooks.timeout_ms", "must be at most 300000 (5 minutes)");
        }
        if self.retry_schedule.len() > MAX_RETRIES {
            return invalid("webhooks.retry_schedule_ms", "must list at most 100 delays");
        }
        if self
            .retry_schedule
            .iter()
            .any(|delay| *delay > MAX_RETRY_DELAY)
        {
            return invalid(
                "webhooks.retry_schedule_ms",
                "each delay must be at most 604800000 (7 days)",
            );
        }
        if self.expiry_warning.is_zero() || self.expiry_warning > MAX_EXPIRY_WARNING {
            return invalid(
                "webhooks.expiry_warning_secs",
                "must be from 1 to 316224000 (10 years)",
            );
        }
        Ok(())
    }
}
