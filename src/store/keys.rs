//! Key rows: create, list, revoke, look up by hash, and the batched lastUsedAt write.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Store, StoreError};
use crate::auth::{Identity, KeyState};
use crate::domain::{ApiKey, DisplayName, KeyHash, KeyId, KeyPrefix, KeyType, OrgId, ProjectId};
use crate::invalidation::{LISTENER_NAME_PREFIX, REVOCATION_CHANNEL};

#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub id: KeyId,
    pub organization_id: OrgId,
    pub project_id: Option<ProjectId>,
    pub prefix: KeyPrefix,
    pub key_type: KeyType,
    pub name: DisplayName,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What a create writes. The plaintext never reaches the database: only hash and prefix do.
pub struct NewKey<'a> {
    pub id: KeyId,
    pub organization_id: OrgId,
    pub project_id: Option<ProjectId>,
    pub name: &'a DisplayName,
    pub key: &'a ApiKey,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    #[error("project not found in this organization")]
    ProjectNotFound,
    #[error("the organization has reached its limit of {0} active keys")]
    LimitReached(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("key not found in the caller's scope")]
    NotFound,
    #[error("master keys cannot be revoked through the API")]
    MasterKey,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct RevokeOutcome {
    pub hash: KeyHash,
    /// The key was revoked before this call; its first revokedAt stands.
    pub already_revoked: bool,
    /// Instance ids of the listeners that were listening when the revocation was announced:
    /// the instances whose acknowledgement the revoker waits for.
    pub listeners: Vec<String>,
}

/// The advisory-lock id of an organization: its uuid folded to 64 bits. A collision only
/// serializes two organizations' key changes, it never breaks them.
pub(super) fn org_lock_id(org: OrgId) -> i64 {
    let (high, low) = org.as_uuid().as_u64_pair();
    (high ^ low) as i64
}

impl Store {
    pub async fn create_key(
        &self,
        new: NewKey<'_>,
        max_active: i64,
    ) -> Result<KeyRecord, CreateKeyError> {
        self.within_deadline(async {
            let mut client = self.pool.get().await.map_err(StoreError::from)?;
            let tx = client.transaction().await.map_err(StoreError::from)?;
            let org = new.organization_id.as_uuid();
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&org_lock_id(new.organization_id)],
            )
            .await
            .map_err(StoreError::from)?;
            if let Some(project) = new.project_id {
                let found = tx
                    .query_opt(
                        "SELECT 1 FROM projects WHERE id = $1 AND organization_id = $2",
                        &[&project.as_uuid(), &org],
                    )
                    .await
                    .map_err(StoreError::from)?;
                if found.is_none() {
                    return Err(CreateKeyError::ProjectNotFound);
                }
            }
            let active: i64 = tx
                .query_one(
                    "SELECT count(*) FROM api_keys WHERE organization_id = $1 AND revoked_at IS NULL",
                    &[&org],
                )
                .await
                .map_err(StoreError::from)?
                .get(0);
            if active >= max_active {
                return Err(CreateKeyError::LimitReached(max_active));
            }
            let record = insert_key(&tx, &new).await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok(record)
        })
        .await
    }

    /// Keys of an organization, or of one project of it, newest first.
    pub async fn list_keys(
        &self,
        org: OrgId,
        project: Option<ProjectId>,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let statement = client
                .prepare_cached(
                    "SELECT id, organization_id, project_id, prefix, key_type, name,
                            last_used_at, created_at, revoked_at
                     FROM api_keys
                     WHERE organization_id = $1 AND ($2::uuid IS NULL OR project_id = $2)
                     ORDER BY created_at DESC, id DESC",
                )
                .await?;
            let project = project.map(|p| p.as_uuid());
            let rows = client
                .query(&statement, &[&org.as_uuid(), &project])
                .await?;
            // A key of a type this build does not know is left out (and logged): the list
            // keeps to the contract's types, and the key can't authenticate here anyway.
            Ok(rows
                .iter()
                .filter_map(|row| Some(key_record(row, stored_key_type(row, 0, 4)?)))
                .collect())
        })
        .await
    }

    /// Revokes a key in the caller's scope (`project` for project keys) and announces it on
    /// [`REVOCATION_CHANNEL`] in the same transaction, so the notice goes out only on commit.
    pub async fn revoke_key(
        &self,
        org: OrgId,
        project: Option<ProjectId>,
        key: KeyId,
        revocation: Uuid,
    ) -> Result<RevokeOutcome, RevokeError> {
        self.within_deadline(async {
            let mut client = self.pool.get().await.map_err(StoreError::from)?;
            let tx = client.transaction().await.map_err(StoreError::from)?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&org_lock_id(org)])
                .await
                .map_err(StoreError::from)?;
            let row = tx
                .query_opt(
                    "SELECT key_type, project_id, key_hash, revoked_at IS NOT NULL
                     FROM api_keys WHERE id = $1 AND organization_id = $2 FOR UPDATE",
                    &[&key.as_uuid(), &org.as_uuid()],
                )
                .await
                .map_err(StoreError::from)?
                .ok_or(RevokeError::NotFound)?;
            let key_project: Option<Uuid> = row.get(1);
            if project.is_some() && key_project != project.map(|p| p.as_uuid()) {
                return Err(RevokeError::NotFound);
            }
            if row.get::<_, &str>(0) == KeyType::Master.as_str() {
                return Err(RevokeError::MasterKey);
            }
            let hash = KeyHash::from_bytes(row.get(2)).expect("key_hash is 32 bytes by constraint");
            let already_revoked: bool = row.get(3);
            let mut listeners = Vec::new();
            if !already_revoked {
                tx.execute(
                    "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
                    &[&key.as_uuid()],
                )
                .await
                .map_err(StoreError::from)?;
                // Listeners take their name only once LISTEN is active: each of these will
                // hear the notice sent at commit.
                listeners = tx
                    .query(
                        "SELECT substr(application_name, length($1) + 1) FROM pg_stat_activity
                         WHERE datname = current_database() AND starts_with(application_name, $1)",
                        &[&LISTENER_NAME_PREFIX],
                    )
                    .await
                    .map_err(StoreError::from)?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                tx.execute(
                    "SELECT pg_notify($1, $2)",
                    &[
                        &REVOCATION_CHANNEL,
                        &format!("{}:{revocation}", hash.to_hex()),
                    ],
                )
                .await
                .map_err(StoreError::from)?;
            }
            tx.commit().await.map_err(StoreError::from)?;
            Ok(RevokeOutcome {
                hash,
                already_revoked,
                listeners,
            })
        })
        .await
    }

    /// The auth path's one query.
    pub async fn find_key_state(&self, hash: &KeyHash) -> Result<KeyState, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let statement = client
                .prepare_cached(
                    "SELECT id, organization_id, project_id, key_type, revoked_at IS NOT NULL
                     FROM api_keys WHERE key_hash = $1",
                )
                .await?;
            let row = client
                .query_opt(&statement, &[&hash.as_bytes().as_slice()])
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
                return Ok(KeyState::Revoked);
            }
            Ok(KeyState::Active(Identity {
                key_id: KeyId::from_uuid(row.get(0)),
                organization_id: OrgId::from_uuid(row.get(1)),
                project_id: row.get::<_, Option<Uuid>>(2).map(ProjectId::from_uuid),
                key_type,
            }))
        })
        .await
    }

    /// One statement for a whole batch; never moves a timestamp backwards.
    pub async fn record_last_used(
        &self,
        ids: &[Uuid],
        used_at: &[DateTime<Utc>],
    ) -> Result<u64, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let statement = client
                .prepare_cached(
                    "UPDATE api_keys SET last_used_at = batch.used_at
                     FROM unnest($1::uuid[], $2::timestamptz[]) AS batch(id, used_at)
                     WHERE api_keys.id = batch.id
                       AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < batch.used_at)",
                )
                .await?;
            Ok(client.execute(&statement, &[&ids, &used_at]).await?)
        })
        .await
    }
}

pub(super) async fn insert_key(
    tx: &deadpool_postgres::Transaction<'_>,
    new: &NewKey<'_>,
) -> Result<KeyRecord, StoreError> {
    let row = tx
        .query_one(
            "INSERT INTO api_keys (id, organization_id, project_id, key_type, name, prefix, key_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             RETURNING id, organization_id, project_id, prefix, key_type, name,
                       last_used_at, created_at, revoked_at",
            &[
                &new.id.as_uuid(),
                &new.organization_id.as_uuid(),
                &new.project_id.map(|p| p.as_uuid()),
                &new.key.key_type().as_str(),
                &new.name.as_str(),
                &new.key.prefix().as_str(),
                &new.key.hash().as_bytes().as_slice(),
            ],
        )
        .await?;
    Ok(key_record(&row, new.key.key_type()))
}

/// The key type stored in column `type_column`, or None (and a warning naming the key, from
/// column `id_column`) for a type this build does not know — say, one a newer version wrote.
fn stored_key_type(
    row: &tokio_postgres::Row,
    id_column: usize,
    type_column: usize,
) -> Option<KeyType> {
    let stored: &str = row.get(type_column);
    let known = KeyType::from_name(stored);
    if known.is_none() {
        tracing::warn!(
            key_id = %KeyId::from_uuid(row.get(id_column)),
            key_type = stored,
            "refused a key of a type this build does not know"
        );
    }
    known
}

fn key_record(row: &tokio_postgres::Row, key_type: KeyType) -> KeyRecord {
    KeyRecord {
        id: KeyId::from_uuid(row.get(0)),
        organization_id: OrgId::from_uuid(row.get(1)),
        project_id: row.get::<_, Option<Uuid>>(2).map(ProjectId::from_uuid),
        prefix: KeyPrefix::from_stored(row.get(3)),
        key_type,
        name: DisplayName::from_stored(row.get(5)),
        last_used_at: row.get(6),
        created_at: row.get(7),
        revoked_at: row.get(8),
    }
}
