//! Revoking a key: its row updated, its event written and its eviction announced in one
//! transaction, so the notice goes out only on commit.

use super::ceiling::{recheck_caller, Caller, CallerRefusal};
use super::locked::{announce_eviction, lock_key_in_scope, Announced};
use super::record::key_event;
use crate::audit::{Action, AuditContext};
use crate::domain::{KeyHash, KeyId, KeyType, OrgId, ProjectId};
use crate::notice::AckAddress;
use crate::store::audit::{record_event, Change};
use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::pool::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("key not found in the caller's scope")]
    NotFound,
    #[error("master keys cannot be revoked through the API")]
    MasterKey,
    #[error("the caller can no longer make this change: {0:?}")]
    Caller(CallerRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct RevokeOutcome {
    pub hash: KeyHash,
    /// The key was revoked before this call; its first revokedAt stands, nothing was
    /// announced and no event written.
    pub already_revoked: bool,
    pub listeners: Vec<String>,
}

impl Store {
    /// Revokes a key in the caller's scope (`project` for project keys) and announces it on
    /// [`REVOCATION_CHANNEL`](crate::notice::REVOCATION_CHANNEL) in the same transaction,
    /// so the notice goes out only on commit.
    pub async fn revoke_key(
        &self,
        org: OrgId,
        project: Option<ProjectId>,
        key: KeyId,
        caller: &Caller,
        acks: &AckAddress,
        context: &AuditContext,
    ) -> Result<RevokeOutcome, RevokeError> {
        self.within_deadline(async {
            let mut client = self.pool.get().await.map_err(StoreError::from)?;
            let tx = client.transaction().await.map_err(StoreError::from)?;
            let target = lock_key_in_scope(&tx, org, project, key)
                .await?
                .ok_or(RevokeError::NotFound)?;
            // A key of an unknown type can't authenticate here, but revoking it is always safe.
            if target.key_type == Some(KeyType::Master) {
                return Err(RevokeError::MasterKey);
            }
            recheck_caller(&tx, caller, "keys.write")
                .await?
                .map_err(RevokeError::Caller)?;
            if target.revoked {
                return Ok(RevokeOutcome {
                    hash: target.hash,
                    already_revoked: true,
                    listeners: Vec::new(),
                });
            }
            let change = key_event(Action::KeyRevoked, org, key, target.project_id);
            let announced = revoke_locked(&tx, key, target.hash, &change, acks, context).await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok(RevokeOutcome {
                hash: announced.hash,
                already_revoked: false,
                listeners: announced.listeners,
            })
        })
        .await
    }
}

/// Revokes key `key` (hash `hash`), already locked by `tx` and known unrevoked: its row, its
/// `key.revoked` event (`change`) and the eviction notice, all sent on commit. What every
/// revocation does, whoever asked for it.
pub(super) async fn revoke_locked(
    tx: &deadpool_postgres::Transaction<'_>,
    key: KeyId,
    hash: KeyHash,
    change: &Change,
    acks: &AckAddress,
    context: &AuditContext,
) -> Result<Announced, StoreError> {
    tx.execute_cached(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
        &[&key.as_uuid()],
    )
    .await?;
    record_event(tx, change, context).await?;
    announce_eviction(tx, hash, acks).await
}
