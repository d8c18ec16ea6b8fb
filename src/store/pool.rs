//! The connection pool and the one error type for storage failures.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::configuration::DatabaseSettings;
use crate::error::{ApiError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection could be had in time, or the database went away: worth retrying later.
    #[error("database unavailable")]
    Unavailable(#[source] anyhow::Error),
    #[error("database query failed")]
    Query(#[source] tokio_postgres::Error),
}

impl From<PoolError> for StoreError {
    fn from(error: PoolError) -> Self {
        StoreError::Unavailable(error.into())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        // A closed connection, a failed connect, the server shutting down or restarting
        // (class 57: admin shutdown, cancelled statement) or a connection exception (class
        // 08) is an outage worth retrying, not a bug in our SQL.
        let outage = error.code().is_none_or(|state| {
            let code = state.code();
            code.starts_with("57") || code.starts_with("08")
        });
        if error.is_closed() || outage {
            StoreError::Unavailable(error.into())
        } else {
            StoreError::Query(error)
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(_) => ApiError::new(
                ErrorCode::ServiceUnavailable,
                "The service is temporarily unavailable; retry shortly",
            )
            .with_cause(error),
            StoreError::Query(_) => {
                ApiError::new(ErrorCode::InternalError, "Unexpected server error").with_cause(error)
            }
        }
    }
}

/// Builds the pool. It connects lazily, so a server can start while Postgres is down.
pub fn connect_pool(settings: &DatabaseSettings) -> anyhow::Result<Pool> {
    let config = settings.postgres_config("logstitch-gateway")?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            // Verified: a connection that went dark while idle fails its check (within the
            // recycle timeout) and is replaced, instead of being handed to a request.
            recycling_method: RecyclingMethod::Verified,
        },
    );
    let timeout = Some(settings.pool_timeout);
    let pool = Pool::builder(manager)
        .max_size(settings.pool_max_size.get())
        .wait_timeout(timeout)
        .create_timeout(timeout)
        .recycle_timeout(Some(Duration::from_secs(1)))
        .runtime(Runtime::Tokio1)
        .build()?;
    Ok(pool)
}
