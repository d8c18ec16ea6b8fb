//! `[keys]` and `[actors]`: key limits and the per-organization actors that write keys.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use serde::Deserialize;

use super::serde_helpers::{millis, secs};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    pub max_active_per_org: NonZeroU32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSettings {
    #[serde(rename = "idle_timeout_secs", deserialize_with = "secs")]
    pub idle_timeout: Duration,
    pub mailbox_capacity: NonZeroUsize,
    #[serde(rename = "ask_timeout_ms", deserialize_with = "millis")]
    pub ask_timeout: Duration,
}
