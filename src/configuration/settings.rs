//! The whole of the settings: the layers loaded in order (see the module above), then the
//! checks that span sections or that types alone can't express.

use std::path::Path;

use config::{Config, Environment, File, FileFormat};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::auth::{
    AdminSettings, AuthSettings, LastUsedSettings, ListenerSettings, INVALIDATION_MEMORY,
};
use super::database::DatabaseSettings;
use super::error::{invalid, SettingsError};
use super::gateway::GatewaySettings;
use super::keys::{ActorSettings, KeySettings};
use super::log::LogSettings;
use super::rate_limit::RateLimitSettings;
use super::secret_scanning::SecretScanningSettings;
use super::server::ServerSettings;
use super::usage::UsageSettings;
use super::webhooks::WebhookSettings;

const DEFAULTS: &str = include_str!("../../config/default.toml");

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
    pub usage: UsageSettings,
    pub listener: ListenerSettings,
    pub rate_limit: RateLimitSettings,
    pub gateway: GatewaySettings,
    pub webhooks: WebhookSettings,
    pub secret_scanning: SecretScanningSettings,
    pub log: LogSettings,
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
        if self.database.lookup_deadline() >= INVALIDATION_MEMORY {
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
            ("usage.flush_interval_ms", self.usage.flush_interval),
            ("listener.heartbeat_ms", self.listener.heartbeat),
            ("listener.reconnect_min_ms", self.listener.reconnect_min),
            ("rate_limit.redis_timeout_ms", self.rate_limit.redis_timeout),
            ("webhooks.poll_interval_ms", self.webhooks.poll_interval),
            ("webhooks.timeout_ms", self.webhooks.timeout),
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
        // What concerns one section alone.
        self.rate_limit.validate()?;
        self.webhooks.validate()?;
        self.secret_scanning.validate()?;
        self.gateway.validate()
    }

    /// The admin token, when the admin API is enabled.
    pub fn admin_token(&self) -> Option<&str> {
        Some(self.admin.token.expose_secret()).filter(|token| !token.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::super::rate_limit::{OnRedisError, RateLimitStore};
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
    fn a_lookup_deadline_as_long_as_the_invalidation_memory_is_refused() {
        let mut settings = defaults();
        let memory_ms = INVALIDATION_MEMORY.as_millis() as u64;
        settings.database.pool_timeout = Duration::from_millis(2000);
        settings.database.statement_timeout = Duration::from_millis(memory_ms - 2000 - 1000);
        let error = settings.validate().unwrap_err().to_string();
        assert!(error.contains("database.statement_timeout_ms"), "{error}");
        assert!(error.contains("database.pool_timeout_ms"), "{error}");
        // The message states the memory's length: it must be the constant's.
        let seconds = format!("{} s", INVALIDATION_MEMORY.as_secs());
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
    fn webhook_settings_default_as_documented_and_name_bad_values() {
        let webhooks = defaults().webhooks;
        assert!(!webhooks.allow_http && !webhooks.allow_private_targets);
        assert_eq!(webhooks.max_endpoints_per_org.get(), 10);
        assert_eq!(webhooks.poll_interval, Duration::from_millis(1000));
        assert_eq!(webhooks.timeout, Duration::from_millis(10_000));
        let schedule: Vec<u64> = webhooks
            .retry_schedule
            .iter()
            .map(|delay| delay.as_millis() as u64)
            .collect();
        assert_eq!(
            schedule,
            [5000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000]
        );
        assert_eq!(webhooks.max_attempts(), 8);
        assert_eq!(webhooks.concurrency.get(), 16);
        assert_eq!(webhooks.expiry_warning, Duration::from_secs(604_800));
        for (toml, named) in [
            (
                "[webhooks]\nmax_endpoints_per_org = 0",
                "webhooks.max_endpoints_per_org",
            ),
            (
                "[webhooks]\npoll_interval_ms = 0",
                "webhooks.poll_interval_ms",
            ),
            ("[webhooks]\ntimeout_ms = 0", "webhooks.timeout_ms"),
            ("[webhooks]\ntimeout_ms = 300001", "webhooks.timeout_ms"),
            (
                "[webhooks]\nretry_schedule_ms = [5000, -1]",
                "webhooks.retry_schedule_ms",
            ),
            (
                "[webhooks]\nretry_schedule_ms = \"soon\"",
                "webhooks.retry_schedule_ms",
            ),
            (
                "[webhooks]\nretry_schedule_ms = [604800001]",
                "webhooks.retry_schedule_ms",
            ),
            ("[webhooks]\nconcurrency = 0", "webhooks.concurrency"),
            (
                "[webhooks]\nexpiry_warning_secs = 0",
                "webhooks.expiry_warning_secs",
            ),
            ("[webhooks]\nretries = 3", "webhooks.retries"),
        ] {
            let error = with_file(toml).unwrap_err();
            assert!(error.contains(&format!("`{named}")), "{toml}: {error}");
        }
        let quick = with_file("[webhooks]\nretry_schedule_ms = []\nallow_http = true").unwrap();
        assert_eq!(quick.webhooks.max_attempts(), 1);
        assert!(quick.webhooks.allow_http);
    }

    #[test]
    fn secret_scanning_providers_fill_in_their_defaults_and_name_what_is_missing() {
        let none = defaults().secret_scanning;
        assert!(none.providers().unwrap().is_empty());
        assert_eq!(none.keys_ttl, Duration::from_secs(1800));
        assert_eq!(none.refetch_min_interval, Duration::from_secs(60));
        assert!(!none.allow_http);
        let github = with_file("[[secret_scanning.providers]]\nname = \"github\"").unwrap();
        let github = &github.secret_scanning.providers().unwrap()[0];
        assert_eq!(
            github.keys_url,
            "https://api.github.com/meta/public_keys/secret_scanning"
        );
        assert_eq!(github.key_id_header, "github-public-key-identifier");
        assert_eq!(github.signature_header, "github-public-key-signature");
        let gitlab = with_file(
            "[[secret_scanning.providers]]\nname = \"gitlab\"\nkeys_url = \"https://gitlab.example/keys\"",
        )
        .unwrap();
        let gitlab = &gitlab.secret_scanning.providers().unwrap()[0];
        assert_eq!(gitlab.key_id_header, "gitlab-public-key-identifier");
        assert_eq!(gitlab.signature_header, "gitlab-public-key-signature");
        let provider = "[[secret_scanning.providers]]\n";
        for (toml, named) in [
            (format!("{provider}name = \"gitlab\""), "providers[0].keys_url"),
            (
                format!("{provider}name = \"acme\"\nkeys_url = \"https://a.example/k\""),
                "providers[0].key_id_header",
            ),
            (
                format!("{provider}name = \"acme\"\nkeys_url = \"https://a.example/k\"\nkey_id_header = \"A\""),
                "providers[0].signature_header",
            ),
            (format!("{provider}name = \"GitHub\""), "providers[0].name"),
            (format!("{provider}name = \"\""), "providers[0].name"),
            (format!("{provider}name = \"a/b\""), "providers[0].name"),
            (
                format!("{provider}name = \"github\"\nkeys_url = \"http://k.example/\""),
                "providers[0].keys_url",
            ),
            (
                format!("{provider}name = \"github\"\nkeys_url = \"ftp://k.example/\""),
                "providers[0].keys_url",
            ),
            (
                format!("{provider}name = \"github\"\n{provider}name = \"github\""),
                "providers[1].name",
            ),
            (
                format!("{provider}name = \"github\"\nkey_id_header = \"bad header\""),
                "providers[0].key_id_header",
            ),
            (format!("{provider}name = \"github\"\nextra = 1"), "extra"),
            (
                format!("{provider}name = \"github\"\nkeys_url = \"https://u:p@k.example/\""),
                "providers[0].keys_url",
            ),
            (
                format!("{provider}name = \"github\"\nkeys_url = \"https://k.example/#f\""),
                "providers[0].keys_url",
            ),
            (
                format!("{provider}name = \"acme\"\nkeys_url = \"https://a.example/k\"\nkey_id_header = \"A-Id\"\nsignature_header = \"a-id\""),
                "providers[0].signature_header",
            ),
            (
                "[secret_scanning]\nkeys_ttl_secs = 0".to_owned(),
                "secret_scanning.keys_ttl_secs",
            ),
        ] {
            let error = with_file(&toml).unwrap_err();
            assert!(error.contains(named), "{toml}: {error}");
        }
        let http = with_file(
            "[secret_scanning]\nallow_http = true\n[[secret_scanning.providers]]\nname = \"github\"\nkeys_url = \"http://127.0.0.1:1/k\"",
        )
        .unwrap();
        assert_eq!(http.secret_scanning.providers().unwrap().len(), 1);
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
