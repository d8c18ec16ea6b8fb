//! The batched lastUsedAt write: one statement for a whole batch of keys.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::pool::StoreError;

impl Store {
    /// One statement for a whole batch; never moves a timestamp backwards.
    pub async fn record_last_used(
        &self,
        ids: &[Uuid],
        used_at: &[DateTime<Utc>],
    ) -> Result<u64, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            Ok(client
                .execute_cached(
                    "UPDATE api_keys SET last_used_at = batch.used_at
                     FROM unnest($1::uuid[], $2::timestamptz[]) AS batch(id, used_at)
                     WHERE api_keys.id = batch.id
                       AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < batch.used_at)",
                    &[&ids, &used_at],
                )
                .await?)
        })
        .await
    }
}
