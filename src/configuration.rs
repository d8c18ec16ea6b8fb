//! Settings: `config/default.toml` (compiled in), then an optional file (`--config` or
//! `LOGSTITCH_CONFIG`), then `LOGSTITCH__SECTION__KEY` environment variables. `DATABASE_URL`
//! and `LOGSTITCH_ADMIN_TOKEN` override their settings. Unknown keys are errors, so a typo
//! can't silently fall back to a default.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::client_addr::TrustedProxies;

const DEFAULTS: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub admin: AdminSettings,
    pub auth: AuthSettings,
    pub keys: KeySettings,
    pub actors: ActorSettings,
    pub last_used: LastUsedSettings,
    pub listener: ListenerSettings,
    pub rate_limit: RateLimitSettings,
    pub gateway: GatewaySettings,
    pub log: LogSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub requests_per_second: f64,
    pub burst: u32,
    pub overrides: Vec<RateLimitOverride>,
    pub failed_auth_per_second: f64,
    pub failed_auth_burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitOverride {
    pub project_id: uuid::Uuid,
    pub requests_per_second: f64,
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    pub routes: Vec<GatewayRoute>,
    /// Forward client headers whose names contain `_` (our own names are never forwarded).
    pub forward_underscore_headers: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayRoute {
    /// Path prefix, matched at a segment boundary ("/api/v1/events" matches
    /// "/api/v1/events" and "/api/v1/events/x", not "/api/v1/eventsx").
    pub prefix: String,
    /// Base URL, http only; the request's path and query are appended unchanged.
    pub upstream: String,
    #[serde(default = "project_keys_only")]
    pub key_types: Vec<String>,
    #[serde(default = "default_upstream_timeout_ms")]
    pub timeout_ms: u64,
    /// Pass `X-LogStitch-*` headers set by the upstream on to clients (default: dropped).
    #[serde(default)]
    pub expose_logstitch_headers: bool,
}

fn project_keys_only() -> Vec<String> {
    vec!["project".to_owned()]
}

fn default_upstream_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    #[serde(deserialize_with = "listen_address")]
    pub listen: SocketAddr,
    /// When set, `/metrics` is served only on this address, not on `listen`.
    #[serde(default, deserialize_with = "optional_address")]
    pub metrics_listen: Option<SocketAddr>,
    pub workers: usize,
    pub max_body_bytes: usize,
    pub client_request_timeout_ms: u64,
    pub body_read_timeout_ms: u64,
    pub keep_alive_secs: u64,
    pub max_connections: usize,
    pub drain_delay_ms: u64,
    /// Peers whose `X-Forwarded-For` is believed (see `client_addr`).
    pub trusted_proxies: TrustedProxies,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// May hold a password: secret, so it never prints.
    pub url: SecretString,
    pub pool_max_size: usize,
    pub pool_timeout_ms: u64,
    pub statement_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSettings {
    pub token: SecretString,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub cache_max_entries: u64,
    pub cache_ttl_secs: u64,
    pub negative_ttl_secs: u64,
    pub stale_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    pub max_active_per_org: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActorSettings {
    pub idle_timeout_secs: u64,
    pub mailbox_capacity: usize,
    pub ask_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastUsedSettings {
    pub flush_interval_ms: u64,
    pub max_pending: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerSettings {
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub heartbeat_ms: u64,
    pub ack_timeout_ms: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    #[serde(deserialize_with = "log_format")]
    pub format: LogFormat,
}

// serde's own errors for these two don't carry the key; these name the setting.
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

fn log_format<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<LogFormat, D::Error> {
    match String::deserialize(deserializer)?.as_str() {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        other => Err(serde::de::Error::custom(format!(
            "log.format: {other:?} is not \"human\" or \"json\""
        ))),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid settings: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid setting `{setting}`: {problem}")]
    Invalid {
        setting: &'static str,
        problem: &'static str,
    },
}

impl Settings {
    /// Loads the layers. `file` comes from `--config`; `LOGSTITCH_CONFIG` is its fallback.
    pub fn load(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let env_file = std::env::var_os("LOGSTITCH_CONFIG").map(std::path::PathBuf::from);
        let mut builder = Config::builder().add_source(File::from_str(DEFAULTS, FileFormat::Toml));
        if let Some(path) = file.or(env_file.as_deref()) {
            builder = builder.add_source(File::from(path).required(true));
        }
        builder = builder.add_source(
            Environment::with_prefix("LOGSTITCH")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        if let Ok(url) = std::env::var("DATABASE_URL") {
            builder = builder.set_override("database.url", url)?;
        }
        if let Ok(token) = std::env::var("LOGSTITCH_ADMIN_TOKEN") {
            builder = builder.set_override("admin.token", token)?;
        }
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The compiled-in defaults alone: no file, no environment. Tests build on these, so a
    /// developer's `LOGSTITCH_CONFIG` or `LOGSTITCH__*` can't change what they test.
    pub fn defaults() -> Result<Settings, SettingsError> {
        let settings: Settings = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks that types alone can't express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |setting, problem| Err(SettingsError::Invalid { setting, problem });
        if self.database.pool_max_size == 0 {
            return invalid("database.pool_max_size", "must be at least 1");
        }
        if self.database.pool_timeout_ms == 0 {
            return invalid("database.pool_timeout_ms", "must be at least 1");
        }
        if self
            .database
            .url
            .expose_secret()
            .parse::<tokio_postgres::Config>()
            .is_err()
        {
            return invalid("database.url", "is not a valid Postgres connection string");
        }
        // The auth cache remembers an invalidation for a fixed time so that a lookup that
        // began before it can't put the old answer back; a lookup allowed to run longer could.
        if self.database.lookup_deadline() >= crate::auth::INVALIDATION_MEMORY {
            return invalid(
                "database.statement_timeout_ms",
                "database.pool_timeout_ms + database.statement_timeout_ms + 1 s (the lookup \
                 deadline) must be under 120 s, the auth cache's memory of invalidations",
            );
        }
        if self.server.max_body_bytes == 0 {
            return invalid("server.max_body_bytes", "must be at least 1");
        }
        if self.server.client_request_timeout_ms == 0 || self.server.body_read_timeout_ms == 0 {
            return invalid(
                "server.client_request_timeout_ms",
                "client_request_timeout_ms and body_read_timeout_ms must be at least 1",
            );
        }
        if self.server.max_connections == 0 {
            return invalid("server.max_connections", "must be at least 1");
        }
        if self.auth.cache_max_entries == 0 {
            return invalid("auth.cache_max_entries", "must be at least 1");
        }
        if self.keys.max_active_per_org < 1 {
            return invalid("keys.max_active_per_org", "must be at least 1");
        }
        if self.actors.mailbox_capacity == 0 {
            return invalid("actors.mailbox_capacity", "must be at least 1");
        }
        if self.last_used.flush_interval_ms == 0 || self.last_used.max_pending == 0 {
            return invalid(
                "last_used",
                "flush_interval_ms and max_pending must be at least 1",
            );
        }
        let limits = &self.rate_limit;
        if !is_positive_rate(limits.requests_per_second, limits.burst) {
            return invalid(
                "rate_limit.requests_per_second",
                "rate and burst must be positive",
            );
        }
        if !is_positive_rate(limits.failed_auth_per_second, limits.failed_auth_burst) {
            return invalid(
                "rate_limit.failed_auth_per_second",
                "rate and burst must be positive",
            );
        }
        if limits
            .overrides
            .iter()
            .any(|o| !is_positive_rate(o.requests_per_second, o.burst))
        {
            return invalid(
                "rate_limit.overrides",
                "every override needs a positive requests_per_second and burst",
            );
        }
        for route in &self.gateway.routes {
            if !route.prefix.starts_with('/')
                || route.prefix.len() < 2
                || route.prefix.ends_with('/')
            {
                return invalid(
                    "gateway.routes.prefix",
                    "must start with / and not end with / (e.g. \"/api/v1/events\")",
                );
            }
            if !route.upstream.starts_with("http://") {
                return invalid("gateway.routes.upstream", "must be an http:// URL");
            }
            if route.key_types.is_empty()
                || route
                    .key_types
                    .iter()
                    .any(|t| crate::domain::KeyType::from_name(t).is_none())
            {
                return invalid(
                    "gateway.routes.key_types",
                    "must list \"project\" and/or \"master\"",
                );
            }
            if route.timeout_ms == 0 {
                return invalid("gateway.routes.timeout_ms", "must be at least 1");
            }
            if crate::routes::BUILT_IN_PATHS
                .iter()
                .any(|path| crate::routes::overlaps(&route.prefix, path))
            {
                return invalid(
                    "gateway.routes.prefix",
                    "must not equal, contain or sit under a built-in route (/api/v1/keys, /api/v1/projects, /api/v1/auth/verify, /admin/v1/organizations, /healthz, /readyz, /metrics, /openapi.json)",
                );
            }
        }
        let mut prefixes: Vec<&str> = self
            .gateway
            .routes
            .iter()
            .map(|r| r.prefix.as_str())
            .collect();
        prefixes.sort_unstable();
        if prefixes.windows(2).any(|pair| pair[0] == pair[1]) {
            return invalid(
                "gateway.routes.prefix",
                "each prefix may be configured once",
            );
        }
        if self.listener.heartbeat_ms == 0 {
            return invalid("listener.heartbeat_ms", "must be at least 1");
        }
        if self.listener.reconnect_min_ms == 0
            || self.listener.reconnect_max_ms < self.listener.reconnect_min_ms
        {
            return invalid(
                "listener.reconnect_max_ms",
                "must be at least listener.reconnect_min_ms, which must be at least 1",
            );
        }
        Ok(())
    }

    /// The admin token, when the admin API is enabled.
    pub fn admin_token(&self) -> Option<&str> {
        Some(self.admin.token.expose_secret()).filter(|token| !token.is_empty())
    }
}

/// A token bucket needs a finite positive refill rate and room for at least one token.
fn is_positive_rate(per_second: f64, burst: u32) -> bool {
    per_second.is_finite() && per_second > 0.0 && burst > 0
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

impl DatabaseSettings {
    pub fn pool_timeout(&self) -> Duration {
        Duration::from_millis(self.pool_timeout_ms)
    }

    /// The longest any store operation (an auth lookup among them) may take: waiting for a
    /// connection, then the longest statement Postgres allows, plus a second of slack.
    pub fn lookup_deadline(&self) -> Duration {
        self.pool_timeout()
            + Duration::from_millis(self.statement_timeout_ms)
            + Duration::from_secs(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Settings {
        Settings::defaults().unwrap()
    }

    #[test]
    fn defaults_parse_and_validate() {
        let settings = defaults();
        settings.validate().unwrap();
        assert_eq!(settings.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.admin_token(), None);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut settings = defaults();
        settings.admin.token = SecretString::from("very-secret-token");
        assert!(!format!("{settings:?}").contains("very-secret-token"));
        assert!(!format!("{settings:?}").contains("postgres://"));
    }

    #[test]
    fn an_unknown_key_names_itself() {
        let error = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(File::from_str("[auth]\ncache_ttl = 3", FileFormat::Toml))
            .build()
            .unwrap()
            .try_deserialize::<Settings>()
            .unwrap_err();
        assert!(error.to_string().contains("cache_ttl"), "{error}");
    }

    #[test]
    fn gateway_prefixes_may_not_shadow_built_in_routes_or_repeat() {
        let route = |prefix: &str| GatewayRoute {
            prefix: prefix.to_owned(),
            upstream: "http://127.0.0.1:9000".to_owned(),
            key_types: vec!["project".to_owned()],
            timeout_ms: 1000,
            expose_logstitch_headers: false,
        };
        for bad in [
            vec![route("/api/v1/keys")],
            vec![route("/api/v1")],
            vec![route("/api/v1/auth/verify/x")],
            vec![route("/healthz")],
            vec![route("/api/v1/events"), route("/api/v1/events")],
        ] {
            let mut settings = defaults();
            settings.gateway.routes = bad;
            let error = settings.validate().unwrap_err();
            assert!(
                error.to_string().contains("gateway.routes.prefix"),
                "{error}"
            );
        }
        let mut settings = defaults();
        settings.gateway.routes = vec![route("/api/v1/events"), route("/api/v1/events/batch")];
        settings.validate().unwrap();
    }

    #[test]
    fn a_lookup_deadline_as_long_as_the_invalidation_memory_is_refused() {
        let mut settings = defaults();
        let memory_ms = crate::auth::INVALIDATION_MEMORY.as_millis() as u64;
        settings.database.pool_timeout_ms = 2000;
        settings.database.statement_timeout_ms = memory_ms - 2000 - 1000;
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("database.statement_timeout_ms"), "{error}");
        assert!(error.contains("database.pool_timeout_ms"), "{error}");
        // The message states the memory's length: it must be the constant's.
        let seconds = format!("{} s", crate::auth::INVALIDATION_MEMORY.as_secs());
        assert!(error.contains(&seconds), "{error}");
        settings.database.statement_timeout_ms -= 1;
        settings.validate().unwrap();
    }

    #[test]
    fn a_semantic_error_names_the_setting() {
        let mut settings = defaults();
        settings.database.pool_max_size = 0;
        let error = settings.validate().unwrap_err();
        assert!(error.to_string().contains("database.pool_max_size"));
    }
}
