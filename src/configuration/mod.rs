//! Settings: `config/default.toml` (compiled in), then an optional file (`--config` or
//! `LOGSTITCH_CONFIG`), then `LOGSTITCH__SECTION__KEY` environment variables. `DATABASE_URL`
//! and `LOGSTITCH_ADMIN_TOKEN` override their settings. Unknown keys are errors, so a typo
//! can't silently fall back to a default.
//!
//! `settings` loads the layers and checks what spans sections; each section's types (and the
//! checks that concern it alone) live in a file of their own. This file only names them.

mod auth;
mod database;
mod error;
mod gateway;
mod keys;
mod log;
mod rate_limit;
mod secret_scanning;
mod serde_helpers;
mod server;
mod settings;
mod usage;
mod webhooks;

pub use auth::{
    AdminSettings, AuthSettings, LastUsedSettings, ListenerSettings, INVALIDATION_MEMORY,
};
pub use database::DatabaseSettings;
pub use error::SettingsError;
pub use gateway::{GatewayRoute, GatewaySettings};
pub use keys::{ActorSettings, KeySettings};
pub use log::{LogFormat, LogSettings};
pub use rate_limit::{OnRedisError, RateLimitOverride, RateLimitSettings, RateLimitStore};
pub use secret_scanning::{ProviderSettings, ScanningProvider, SecretScanningSettings};
pub use server::ServerSettings;
pub use settings::Settings;
pub use usage::UsageSettings;
pub use webhooks::WebhookSettings;
