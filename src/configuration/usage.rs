//! `[usage]`: how often each instance writes its usage counts, and how long they are kept.

use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;

use super::serde_helpers::millis;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageSettings {
    #[serde(rename = "flush_interval_ms", deserialize_with = "millis")]
    pub flush_interval: Duration,
    pub retention_days: NonZeroU32,
}
