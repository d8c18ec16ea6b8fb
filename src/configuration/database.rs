//! `[database]`: the Postgres pool and the deadlines of what runs on it.

use std::num::NonZeroUsize;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::serde_helpers::millis;

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

impl DatabaseSettings {
    /// The longest any store operation (an auth lookup among them) may take: waiting for a
    /// connection, then the longest statement Postgres allows, plus a second of slack.
    pub fn lookup_deadline(&self) -> Duration {
        self.pool_timeout + self.statement_timeout + Duration::from_secs(1)
    }

    /// The libpq-style config, with our connect timeout and an application name for pg_stat_activity.
    pub fn postgres_config(
        &self,
        application_name: &str,
    ) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
        let mut config: tokio_postgres::Config = self.url.expose_secret().parse()?;
        config.connect_timeout(self.pool_timeout);
        config.application_name(application_name);
        config.options(format!(
            "-c statement_timeout={}",
            self.statement_timeout.as_millis()
        ));
        Ok(config)
    }
}
