//! Rolling an organization's master key: a new master key, and every old active one revoked
//! as DELETE revokes a key (row, event, eviction notice), in one transaction under the
//! organization's advisory lock. The admin API (through the organization's actor) and the CLI
//! both come here.

use uuid::Uuid;

use super::create::{insert_key, NewKey};
use super::locked::{announce_eviction, org_lock_id, Announced};
use super::record::{key_change, key_event, KeyRecord};
use crate::audit::{Action, AuditContext};
use crate::domain::{ApiKey, DisplayName, KeyHash, KeyId, KeyType, OrgId, Scopes};
use crate::notice::AckAddress;
use crate::store::audit::record_event;
use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::pool::StoreError;

/// The name every master key carries.
const MASTER_KEY_NAME: &str = "Master key";

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyRollError {
    #[error("organization not found")]
    OrganizationNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A committed master-key roll. `master_key` is the only copy of the new plaintext.
#[derive(Debug)]
pub struct MasterKeyRoll {
    pub master_key: ApiKey,
    pub record: KeyRecord,
    /// The old master keys this roll revoked (none when the organization had no active one,
    /// say after a leak revoked it), each with its announced eviction, in the order their
    /// ack addresses were taken.
    pub revoked: Vec<RevokedMasterKey>,
}

#[derive(Debug, Clone)]
pub struct RevokedMasterKey {
    pub key_id: KeyId,
    pub announced: Announced,
}

impl Store {
    /// Gives organization `org` a new master key and revokes its old active master key(s) in
    /// one transaction under the organization's advisory lock: each old key's `revoked_at`,
    /// its `key.revoked` event and its eviction notice (delivered on commit), then the new
    /// key and its `key.created` event.
    ///
    /// `next_address` is called once per revoked key, in order, before the commit: each
    /// eviction is acknowledged under its own revocation id, so the caller can register a
    /// waiter for each (an instance's ack of one notice says nothing of the next).
    ///
    /// Not held to `keys.max_active_per_org`: the roll never leaves more than one active
    /// master key, and an organization at its limit whose master key leaked must still be
    /// able to get one back.
    pub async fn roll_master_key(
        &self,
        org: OrgId,
        next_address: &mut (dyn FnMut() -> AckAddress + Send),
        context: &AuditContext,
    ) -> Result<MasterKeyRoll, MasterKeyRollError> {
        self.within_deadline(async {
            let mut client = self.pool.get().await.map_err(StoreError::from)?;
            let tx = client.transaction().await.map_err(StoreError::from)?;
            tx.execute_cached("SELECT pg_advisory_xact_lock($1)", &[&org_lock_id(org)])
                .await
                .map_err(StoreError::from)?;
            let exists = tx
                .query_opt_cached(
                    "SELECT 1 FROM organizations WHERE id = $1",
                    &[&org.as_uuid()],
                )
                .await
                .map_err(StoreError::from)?;
            if exists.is_none() {
                return Err(MasterKeyRollError::OrganizationNotFound);
            }
            let old: Vec<(KeyId, KeyHash)> = tx
                .query_cached(
                    "SELECT id, key_hash FROM api_keys
                     WHERE organization_id = $1 AND key_type = $2 AND revoked_at IS NULL
                       AND (expires_at IS NULL OR expires_at > now())
                     ORDER BY created_at, id
                     FOR UPDATE",
                    &[&org.as_uuid(), &KeyType::Master.as_str()],
                )
                .await
                .map_err(StoreError::from)?
                .iter()
                .map(|row| {
                    let hash = KeyHash::from_bytes(row.get(1))
                        .expect("key_hash is 32 bytes by constraint");
                    (KeyId::from_uuid(row.get::<_, Uuid>(0)), hash)
                })
                .collect();
            let mut revoked = Vec::with_capacity(old.len());
            for (key_id, hash) in old {
                tx.execute_cached(
                    "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
                    &[&key_id.as_uuid()],
                )
                .await
                .map_err(StoreError::from)?;
                let change = key_event(Action::KeyRevoked, org, key_id, None);
                record_event(&tx, &change, context).await?;
                let announced = announce_eviction(&tx, hash, &next_address()).await?;
                revoked.push(RevokedMasterKey { key_id, announced });
            }
            let (master_key, record) = insert_master_key(&tx, org).await?;
            record_event(&tx, &key_change(Action::KeyCreated, &record), context).await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok(MasterKeyRoll {
                master_key,
                record,
                revoked,
            })
        })
        .await
    }
}

/// Writes a new master key for `org` (organization setup and the roll): the plaintext is
/// returned, only its hash and prefix are stored.
pub(in crate::store) async fn insert_master_key(
    tx: &deadpool_postgres::Transaction<'_>,
    org: OrgId,
) -> Result<(ApiKey, KeyRecord), StoreError> {
    let master_key = ApiKey::generate(KeyType::Master);
    let name = DisplayName::parse(MASTER_KEY_NAME).expect("constant name is valid");
    let record = insert_key(
        tx,
        &NewKey {
            id: KeyId::new(),
            organization_id: org,
            project_id: None,
            name: &name,
            key: &master_key,
            expires_at: None,
            // A master key holds every scope, always: it can't be restricted.
            scopes: &Scopes::All,
            enabled: true,
            rate_limit: None,
        },
    )
    .await?;
    Ok((master_key, record))
}
