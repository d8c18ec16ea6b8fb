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

use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};

use crate::client_addr::TrustedProxies;
use crate::domain::{KeyType, ProjectId};

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
    pub key_types: Vec<KeyType>,
    #[serde(
        rename = "timeout_ms",
        default = "default_upstream_timeout",
        deserialize_with = "millis"
    )]
    pub timeout: Duration,
    /// Pass `X-LogStitch-*` headers set by the upstream on to clients (default: dropped).
    #[serde(default)]
    pub expose_logstitch_headers: bool,
}

fn project_keys_only() -> Vec<KeyType> {
    vec![KeyType::Project]
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(10)
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// May hold a password: secret, so it never prints.
    pub url: SecretString,
    pub pool_max_size: NonZeroUsize,
    #[serde(rename = "pool_timeout_ms", deserialize_with = "millis")]
    pub pool_timeout: Duration,
    #[serde(rename = "statement_timeout_ms", deserialize_with = "millis")]
    pub statement_timeout: Duration,
}

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

/// Settings named `…_ms` / `…_secs` stay integers in files and the environment; the code
/// only ever sees a `Duration`.
fn millis<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_millis)
}

fn secs<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_secs)
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
    /// A value of the wrong type or range, or an unknown key, at `path`.
    #[error("invalid setting `{path}`: {problem}")]
    Value { path: String, problem: String },
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
        Settings::from_config(builder.build()?)
    }

    /// The compiled-in defaults alone: no file, no environment. Tests build on these, so a
    /// developer's `LOGSTITCH_CONFIG` or `LOGSTITCH__*` can't change what they test.
    pub fn defaults() -> Result<Settings, SettingsError> {
        Settings::from_config(
            Config::builder()
                .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
                .build()?,
        )
    }

    /// Deserializes the merged layers, naming the setting whose value is wrong, then checks
    /// what the types can't say.
    fn from_config(config: Config) -> Result<Settings, SettingsError> {
        let settings: Settings =
            serde_path_to_error::deserialize(config).map_err(|error| SettingsError::Value {
                path: error.path().to_string(),
                problem: error.into_inner().to_string(),
            })?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks that types alone can't express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |setting, problem| Err(SettingsError::Invalid { setting, problem });
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
        // Counts are NonZero by type; these waits would mean "never" or "at once" at zero.
        let positive_durations = [
            ("database.pool_timeout_ms", self.database.pool_timeout),
            (
                "server.client_request_timeout_ms",
                self.server.client_request_timeout,
            ),
            ("server.body_read_timeout_ms", self.server.body_read_timeout),
            ("last_used.flush_interval_ms", self.last_used.flush_interval),
            ("listener.heartbeat_ms", self.listener.heartbeat),
            ("listener.reconnect_min_ms", self.listener.reconnect_min),
            ("rate_limit.redis_timeout_ms", self.rate_limit.redis_timeout),
        ];
        let routes = self.gateway.routes.iter();
        let route_timeouts = routes.map(|route| ("gateway.routes.timeout_ms", route.timeout));
        for (setting, duration) in positive_durations.into_iter().chain(route_timeouts) {
            if duration.is_zero() {
                return invalid(setting, "must be at least 1");
            }
        }
        if self.listener.reconnect_max < self.listener.reconnect_min {
            return invalid(
                "listener.reconnect_max_ms",
                "must be at least listener.reconnect_min_ms",
            );
        }
        let limits = &self.rate_limit;
        // Checked whatever the store, so switching to Redis later can't meet a bad URL.
        if redis::Client::open(limits.redis_url.expose_secret()).is_err() {
            return invalid(
                "rate_limit.redis_url",
                "is not a valid Redis URL (redis://[:password@]host[:port][/db])",
            );
        }
        let rates = [
            ("rate_limit.requests_per_second", limits.requests_per_second),
            (
                "rate_limit.failed_auth_per_second",
                limits.failed_auth_per_second,
            ),
        ];
        let overrides = limits.overrides.iter().map(|o| {
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
        self.validate_gateway_routes()
    }

    fn validate_gateway_routes(&self) -> Result<(), SettingsError> {
        let invalid = |setting, problem| Err(SettingsError::Invalid { setting, problem });
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
            if route.key_types.is_empty() {
                return invalid(
                    "gateway.routes.key_types",
                    "must list \"project\" and/or \"master\"",
                );
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
        Ok(())
    }

    /// The admin token, when the admin API is enabled.
    pub fn admin_token(&self) -> Option<&str> {
        Some(self.admin.token.expose_secret()).filter(|token| !token.is_empty())
    }
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
    /// The longest any store operation (an auth lookup among them) may take: waiting for a
    /// connection, then the longest statement Postgres allows, plus a second of slack.
    pub fn lookup_deadline(&self) -> Duration {
        self.pool_timeout + self.statement_timeout + Duration::from_secs(1)
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
        let error = with_file("[auth]\ncache_ttl = 3").unwrap_err();
        assert!(error.contains("cache_ttl"), "{error}");
        assert!(
            error.contains("`auth.cache_ttl`"),
            "the section is named too: {error}"
        );
    }

    #[test]
    fn gateway_prefixes_may_not_shadow_built_in_routes_or_repeat() {
        let route = |prefix: &str| GatewayRoute {
            prefix: prefix.to_owned(),
            upstream: "http://127.0.0.1:9000".to_owned(),
            key_types: vec![KeyType::Project],
            timeout: Duration::from_secs(1),
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
        settings.database.pool_timeout = Duration::from_millis(2000);
        settings.database.statement_timeout = Duration::from_millis(memory_ms - 2000 - 1000);
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("database.statement_timeout_ms"), "{error}");
        assert!(error.contains("database.pool_timeout_ms"), "{error}");
        // The message states the memory's length: it must be the constant's.
        let seconds = format!("{} s", crate::auth::INVALIDATION_MEMORY.as_secs());
        assert!(error.contains(&seconds), "{error}");
        settings.database.statement_timeout -= Duration::from_millis(1);
        settings.validate().unwrap();
    }

    /// Settings read from `toml` over the defaults, as a user's file would be.
    fn with_file(toml: &str) -> Result<Settings, String> {
        Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Toml))
            .add_source(File::from_str(toml, FileFormat::Toml))
            .build()
            .map_err(SettingsError::from)
            .and_then(Settings::from_config)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn types_refuse_what_validate_used_to_check_and_name_the_setting() {
        for (toml, named) in [
            ("[database]\npool_max_size = 0", "database.pool_max_size"),
            ("[rate_limit]\nburst = 0", "rate_limit.burst"),
            ("[server]\nmax_connections = 0", "server.max_connections"),
            (
                "[[gateway.routes]]\nprefix = \"/x\"\nupstream = \"http://h\"\nkey_types = [\"viewer\"]",
                "viewer",
            ),
            (
                "[[rate_limit.overrides]]\nproject_id = \"nope\"\nrequests_per_second = 1.0\nburst = 1",
                "project_id",
            ),
        ] {
            let error = with_file(toml).unwrap_err();
            assert!(error.contains(named), "{toml}: {error}");
        }
        let typed =
            with_file("[database]\npool_timeout_ms = 1500\n[auth]\ncache_ttl_secs = 7").unwrap();
        assert_eq!(typed.database.pool_timeout, Duration::from_millis(1500));
        assert_eq!(typed.auth.cache_ttl, Duration::from_secs(7));
    }

    #[test]
    fn redis_settings_default_to_local_and_name_bad_values() {
        let settings = defaults();
        let limits = &settings.rate_limit;
        assert_eq!(limits.store, RateLimitStore::Local);
        assert_eq!(limits.on_redis_error, OnRedisError::Local);
        assert_eq!(limits.redis_timeout, Duration::from_millis(50));
        assert_eq!(limits.redis_url.expose_secret(), "redis://127.0.0.1:6379");
        let chosen =
            with_file("[rate_limit]\nstore = \"redis\"\non_redis_error = \"deny\"").unwrap();
        assert_eq!(chosen.rate_limit.store, RateLimitStore::Redis);
        assert_eq!(chosen.rate_limit.on_redis_error, OnRedisError::Deny);
        for (toml, named) in [
            ("[rate_limit]\nstore = \"memcached\"", "rate_limit.store"),
            (
                "[rate_limit]\non_redis_error = \"allow\"",
                "rate_limit.on_redis_error",
            ),
            (
                "[rate_limit]\nredis_timeout_ms = 0",
                "rate_limit.redis_timeout_ms",
            ),
            (
                "[rate_limit]\nredis_url = \"http://u:hunter2@h\"",
                "rate_limit.redis_url",
            ),
        ] {
            let error = with_file(toml).unwrap_err();
            assert!(error.contains(named), "{toml}: {error}");
            assert!(!error.contains("hunter2"), "the URL is secret: {error}");
        }
    }

    #[test]
    fn the_redis_url_never_prints() {
        let settings =
            with_file("[rate_limit]\nredis_url = \"redis://:hunter2@127.0.0.1:6379\"").unwrap();
        assert!(!format!("{settings:?}").contains("hunter2"));
    }

    #[test]
    fn a_semantic_error_names_the_setting() {
        let mut settings = defaults();
        settings.listener.heartbeat = Duration::ZERO;
        let error = settings.validate().unwrap_err();
        assert!(error.to_string().contains("listener.heartbeat_ms"));
    }
}
