//! Statements prepared once per pooled connection (deadpool's statement cache), on the
//! connection or inside a transaction. Given a plain string, tokio-postgres sends a Parse and
//! waits for its answer before every execution: one extra round trip per statement, and a
//! revoke runs six of them while every instance of the fleet waits for its notice.

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) trait CachedStatements {
    async fn execute_cached(&self, sql: &str, params: Params<'_>) -> Result<u64, Error>;
    async fn query_cached(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error>;
    async fn query_one_cached(&self, sql: &str, params: Params<'_>) -> Result<Row, Error>;
    async fn query_opt_cached(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error>;
}

/// For pooled connections and their transactions alike.
impl<C: GenericClient + Sync> CachedStatements for C {
    async fn execute_cached(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        let statement = self.prepare_cached(sql).await?;
        self.execute(&statement, params).await
    }

    async fn query_cached(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query(&statement, params).await
    }

    async fn query_one_cached(&self, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_one(&statement, params).await
    }

    async fn query_opt_cached(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        let statement = self.prepare_cached(sql).await?;
        self.query_opt(&statement, params).await
    }
}
