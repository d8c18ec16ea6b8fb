//! The auth path's one query: what a key hash resolves to, read for the auth cache.

use uuid::Uuid;

use super::record::{restrictions, stored_key_type};
use crate::domain::{Identity, KeyHash, KeyId, KeyState, OrgId, ProjectId};
use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::pool::StoreError;

impl Store {
    /// The auth path's one query.
    pub async fn find_key_state(&self, hash: &KeyHash) -> Result<KeyState, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt_cached(
                    "SELECT id, organization_id, project_id, key_type, revoked_at IS NOT NULL,
                            expires_at, scopes, enabled, rate_limit_per_second, rate_limit_burst
                     FROM api_keys WHERE key_hash = $1",
                    &[&hash.as_bytes().as_slice()],
                )
                .await?;
            // Fail closed: a key of a type this build does not know is no valid key here,
            // never read as some type it does know.
            let Some(row) = row else {
                return Ok(KeyState::Unknown);
            };
            let Some(key_type) = stored_key_type(&row, 0, 3) else {
                return Ok(KeyState::Unknown);
            };
            if row.get::<_, bool>(4) {
                return Ok(KeyState::Revoked(KeyId::from_uuid(row.get(0))));
            }
            let (scopes, enabled, rate_limit) = restrictions(&row, 6);
            Ok(KeyState::Active(Identity {
                key_id: KeyId::from_uuid(row.get(0)),
                organization_id: OrgId::from_uuid(row.get(1)),
                project_id: row.get::<_, Option<Uuid>>(2).map(ProjectId::from_uuid),
                key_type,
                expires_at: row.get(5),
                scopes,
                enabled,
                rate_limit,
            }))
        })
        .await
    }
}
