//! Postgres: the pool, migrations, and the queries, grouped by what they touch.
//!
//! Create, revoke and roll are single transactions that take the organization's advisory lock, so
//! instances sharing one database agree on the order of key changes.

mod audit;
mod cached;
mod keys;
mod migrations;
mod orgs;
mod pool;

pub use audit::{AuditEventRecord, EventPage, EventPosition, EventQuery};
pub use keys::{
    Announced, CreateKeyError, KeyRecord, NewKey, NotRollable, RevokeError, RevokeOutcome,
    RollError, RollOutcome, RollRequest,
};
pub use migrations::{migrations_applied, run_migrations};
pub use orgs::{NewOrganization, OrganizationRecord, ProjectRecord};
pub use pool::{connect_pool, StoreError};

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::Pool;

use crate::configuration::DatabaseSettings;

/// Every query goes through this handle; it is cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
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

    async fn within_deadline<T, E: From<StoreError>>(
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
