//! `[rate_limit]`: the per-key buckets on gateway routes, where they live, and the failed-auth
//! throttle.

use std::num::NonZeroU32;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::{invalid, SettingsError};
use super::serde_helpers::millis;
use crate::domain::ProjectId;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub requests_per_second: f64,
    pub burst: NonZeroU32,
    pub overrides: Vec<RateLimitOverride>,
    pub failed_auth_per_second: f64,
    pub failed_auth_burst: NonZeroU32,
    /// Where per-key buckets live: this instance's memory, or Redis for the whole fleet.
    pub store: RateLimitStore,
    /// May hold a password: secret, so it never prints.
    pub redis_url: SecretString,
    /// The longest a request waits for Redis before `on_redis_error` decides.
    #[serde(rename = "redis_timeout_ms", deserialize_with = "millis")]
    pub redis_timeout: Duration,
    pub on_redis_error: OnRedisError,
    /// Prepended to every Redis key, so fleets (and tests) sharing one Redis stay apart.
    pub redis_key_prefix: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitStore {
    Local,
    Redis,
}

/// What a gateway request gets while Redis can't answer.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnRedisError {
    /// Per-instance buckets, as with `store = "local"`.
    Local,
    /// 503 `service_unavailable`.
    Deny,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitOverride {
    pub project_id: ProjectId,
    pub requests_per_second: f64,
    pub burst: NonZeroU32,
}

impl RateLimitSettings {
    /// The Redis URL and the refill rates (`redis_timeout_ms` is among the durations
    /// `Settings::validate` checks).
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        // Checked whatever the store, so switching to Redis later can't meet a bad URL.
        if redis::Client::open(self.redis_url.expose_secret()).is_err() {
            return invalid(
                "rate_limit.redis_url",
                "is not a valid Redis URL (redis://[:password@]host[:port][/db])",
            );
        }
        let rates = [
            ("rate_limit.requests_per_second", self.requests_per_second),
            (
                "rate_limit.failed_auth_per_second",
                self.failed_auth_per_second,
            ),
        ];
        let overrides = self.overrides.iter().map(|o| {
            (
                "rate_limit.overrides.requests_per_second",
                o.requests_per_second,
            )
        });
        for (setting, per_second) in rates.into_iter().chain(overrides) {
            // A token bucket needs a finite positive refill rate.
            if !(per_second.is_finite() && per_second > 0.0) {
                return invalid(setting, "must be a positive number");
            }
        }
        Ok(())
    }
}
