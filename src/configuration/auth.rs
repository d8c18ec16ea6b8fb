//! `[admin]`, `[auth]`, `[last_used]` and `[listener]`: who may call, how long answers about
//! keys are kept, and how they are kept fresh.

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::serde_helpers::{millis, secs};

/// How long the auth cache remembers an invalidation (its freshness guard's memory), so that
/// a lookup that began before it can't put the old answer back. It must exceed the longest
/// possible lookup (the store's deadline: `database.pool_timeout_ms` +
/// `database.statement_timeout_ms` + 1 s): `Settings::validate` refuses settings whose lookup
/// deadline is not shorter, and the auth cache uses it as its invalidation memory.
pub const INVALIDATION_MEMORY: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub token: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub cache_max_entries: NonZeroU64,
    #[serde(rename = "cache_ttl_secs", deserialize_with = "secs")]
    pub cache_ttl: Duration,
    #[serde(rename = "negative_ttl_secs", deserialize_with = "secs")]
    pub negative_ttl: Duration,
    /// Zero: fail closed while the listener is down.
    #[serde(rename = "stale_grace_secs", deserialize_with = "secs")]
    pub stale_grace: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastUsedSettings {
    #[serde(rename = "flush_interval_ms", deserialize_with = "millis")]
    pub flush_interval: Duration,
    pub max_pending: NonZeroUsize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSettings {
    #[serde(rename = "reconnect_min_ms", deserialize_with = "millis")]
    pub reconnect_min: Duration,
    #[serde(rename = "reconnect_max_ms", deserialize_with = "millis")]
    pub reconnect_max: Duration,
    #[serde(rename = "heartbeat_ms", deserialize_with = "millis")]
    pub heartbeat: Duration,
    #[serde(rename = "ack_timeout_ms", deserialize_with = "millis")]
    pub ack_timeout: Duration,
}
