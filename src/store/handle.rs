//! The handle every query goes through: the pool, and the deadline no operation may pass.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Pool;

use super::pool::{connect_pool, StoreError};
use crate::configuration::DatabaseSettings;

/// Every query goes through this handle; it is cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(super) pool: Pool,
    /// No operation may take longer: a Postgres that stops answering (a partition, not a
    /// refused connection) becomes `Unavailable` instead of a request that hangs.
    deadline: Duration,
}

impl Store {
    pub fn new(pool: Pool, deadline: Duration) -> Store {
        Store { pool, deadline }
    }

    /// The pool and the deadline from settings ([`DatabaseSettings::lookup_deadline`]).
    pub fn connect(settings: &DatabaseSettings) -> anyhow::Result<Store> {
        Ok(Store::new(
            connect_pool(settings)?,
            settings.lookup_deadline(),
        ))
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(super) async fn within_deadline<T, E: From<StoreError>>(
        &self,
        operation: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        match tokio::time::timeout(self.deadline, operation).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(anyhow::anyhow!(
                "the database did not answer within {:?}",
                self.deadline
            ))
            .into()),
        }
    }
}
