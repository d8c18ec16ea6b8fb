//! Postgres: the pool, migrations, and the queries, grouped by what they touch.
//!
//! Create and revoke are single transactions that take the organization's advisory lock, so
//! instances sharing one database agree on the order of key changes.

mod keys;
mod migrations;
mod orgs;
mod pool;

pub use keys::{CreateKeyError, KeyRecord, NewKey, RevokeError, RevokeOutcome, REVOCATION_CHANNEL};
pub use migrations::{migrations_applied, run_migrations};
pub use orgs::{NewOrganization, OrganizationRecord, ProjectRecord};
pub use pool::{connect_pool, postgres_config, StoreError};

use deadpool_postgres::Pool;

/// Every query goes through this handle; it is cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
}

impl Store {
    pub fn new(pool: Pool) -> Store {
        Store { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}
