//! `[server]`: the public listener and its limits.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use serde::Deserialize;

use super::serde_helpers::{millis, secs};
use crate::client_addr::TrustedProxies;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// When set, `/metrics` is served only on this address, not on `listen`.
    #[serde(default, deserialize_with = "optional_address")]
    pub metrics_listen: Option<SocketAddr>,
    pub workers: usize,
    pub max_body_bytes: NonZeroUsize,
    #[serde(rename = "client_request_timeout_ms", deserialize_with = "millis")]
    pub client_request_timeout: Duration,
    #[serde(rename = "body_read_timeout_ms", deserialize_with = "millis")]
    pub body_read_timeout: Duration,
    #[serde(rename = "keep_alive_secs", deserialize_with = "secs")]
    pub keep_alive: Duration,
    pub max_connections: NonZeroUsize,
    #[serde(rename = "drain_delay_ms", deserialize_with = "millis")]
    pub drain_delay: Duration,
    /// Peers whose `X-Forwarded-For` is believed (see `client_addr`).
    pub trusted_proxies: TrustedProxies,
}

// serde's own errors for these don't carry the key; these name the setting.
fn listen_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<SocketAddr, D::Error> {
    let raw = String::deserialize(deserializer)?;
    raw.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "server.listen: {raw:?} is not an address like 127.0.0.1:8080"
        ))
    })
}

/// An empty string means "not set", so the setting can be cleared from the environment.
fn optional_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let raw = String::deserialize(deserializer)?;
    if raw.trim().is_empty() {
        return Ok(None);
    }
    raw.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "server.metrics_listen: {raw:?} is not an address like 127.0.0.1:9090"
        ))
    })
}
