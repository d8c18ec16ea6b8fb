//! Key rows: create, list, revoke, roll, look up by hash, and the batched lastUsedAt write.
//! Every change writes its audit event in its own transaction.

use super::cached::CachedStatements;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::audit::{record_event, Change};
use super::handle::Store;
use super::pool::StoreError;
use crate::audit::{Action, AuditContext, TargetType};
use crate::auth::{Identity, KeyState};
use crate::domain::{
    to_millis, ApiKey, DisplayName, KeyHash, KeyId, KeyPrefix, KeyType, OrgId, ProjectId,
};
use crate::invalidation::{AckAddress, LISTENER_NAME_PREFIX, REVOCATION_CHANNEL};

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
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a create writes. The plaintext never reaches the database: only hash and prefix do.
pub struct NewKey<'a> {
    pub id: KeyId,
    pub organization_id: OrgId,
    pub project_id: Option<ProjectId>,
    pub name: &'a DisplayName,
    pub key: &'a ApiKey,
    pub expires_at: Option<DateTime<Utc>>,
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

#[derive(Debug, thiserror::Error)]
pub enum RollError {
    #[error("key not found in the caller's scope")]
    NotFound,
    #[error("master keys cannot be rolled through the API")]
    MasterKey,
    #[error("the key is {0} and cannot be rolled")]
    NotRollable(NotRollable),
    #[error("the organization has reached its limit of {0} active keys")]
    LimitReached(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a key can't be rolled: only a live key that was never rolled can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRollable {
    Revoked,
    Expired,
    AlreadyRolled,
}

impl std::fmt::Display for NotRollable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotRollable::Revoked => "revoked",
            NotRollable::Expired => "expired",
            NotRollable::AlreadyRolled => "already rolled",
        })
    }
}

/// A change other instances must hear of before the request answers: the key's cached
/// entry is evicted everywhere (the next lookup reads the new state).
#[derive(Debug, Clone)]
pub struct Announced {
    pub hash: KeyHash,
    /// Instance ids of the listeners that were listening when the change was announced:
    /// the instances whose acknowledgement the changer waits for.
    pub listeners: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RevokeOutcome {
    pub hash: KeyHash,
    /// The key was revoked before this call; its first revokedAt stands, nothing was
    /// announced and no event written.
    pub already_revoked: bool,
    pub listeners: Vec<String>,
}

/// A committed roll: the new key's row, and the old key's new expiry, announced.
#[derive(Debug, Clone)]
pub struct RollOutcome {
    pub new_key: KeyRecord,
    pub old_key: KeyId,
    pub old_expires_at: DateTime<Utc>,
    pub announced: Announced,
}

/// What a roll writes: the old key's id and overlap, and the new key (same project and name,
/// taken from the old key's row inside the transaction).
pub struct RollRequest<'a> {
    pub organization_id: OrgId,
    /// The caller's project for a project key; None for a master key.
    pub scope: Option<ProjectId>,
    pub old_key: KeyId,
    pub overlap: chrono::Duration,
    pub new_id: KeyId,
    pub new_key: &'a ApiKey,
    pub now: DateTime<Utc>,
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
        context: &AuditContext,
    ) -> Result<KeyRecord, CreateKeyError> {
        self.within_deadline(async {
            let mut client = self.pool.get().await.map_err(StoreError::from)?;
            let tx = client.transaction().await.map_err(StoreError::from)?;
            let org = new.organization_id.as_uuid();
            tx.execute_cached(
                "SELECT pg_advisory_xact_lock($1)",
                &[&org_lock_id(new.organization_id)],
            )
            .await
            .map_err(StoreError::from)?;
            if let Some(project) = new.project_id {
                let found = tx
                    .query_opt_cached(
                        "SELECT 1 FROM projects WHERE id = $1 AND organization_id = $2",
                        &[&project.as_uuid(), &org],
                    )
                    .await
                    .map_err(StoreError::from)?;
                if found.is_none() {
                    return Err(CreateKeyError::ProjectNotFound);
                }
            }
            if count_active(&tx, new.organization_id, Utc::now()).await? >= max_active {
                return Err(CreateKeyError::LimitReached(max_active));
            }
            let record = insert_key(&tx, &new).await?;
            record_event(&tx, &key_change(Action::KeyCreated, &record), context).await?;
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
            let project = project.map(|p| p.as_uuid());
            let rows = client
                .query_cached(
                    "SELECT id, organization_id, project_id, prefix, key_type, name,
                            last_used_at, created_at, revoked_at, expires_at
                     FROM api_keys
                     WHERE organization_id = $1 AND ($2::uuid IS NULL OR project_id = $2)
                     ORDER BY created_at DESC, id DESC",
                    &[&org.as_uuid(), &project],
                )
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
            if target.revoked {
                return Ok(RevokeOutcome {
                    hash: target.hash,
                    already_revoked: true,
                    listeners: Vec::new(),
                });
            }
            tx.execute_cached(
                "UPDATE api_keys SET revoked_at = now() WHERE id = $1",
                &[&key.as_uuid()],
            )
            .await
            .map_err(StoreError::from)?;
            let change = Change {
                organization_id: org,
                action: Action::KeyRevoked,
                target_type: TargetType::Key,
                target_id: key.as_uuid(),
                project_id: target.project_id,
            };
            record_event(&tx, &change, context).await?;
            let announced = announce_eviction(&tx, target.hash, acks).await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok(RevokeOutcome {
                hash: announced.hash,
                already_revoked: false,
                listeners: announced.listeners,
            })
        })
        .await
    }

    /// Rolls a live key: a new key of the same project and name, the old key expiring after
    /// the overlap (never later than it already would), one event, and the old key's new
    /// expiry announced like a revocation — all in one transaction.
    pub async fn roll_key(
        &self,
        roll: RollRequest<'_>,
        max_active: i64,
        acks: &AckAddress,
        context: &AuditContext,
    ) -> Result<RollOutcome, RollError> {
        self.within_deadline(async {
            let mut client = self.pool.get().await.map_err(StoreError::from)?;
            let tx = client.transaction().await.map_err(StoreError::from)?;
            let org = roll.organization_id;
            let old = lock_key_in_scope(&tx, org, roll.scope, roll.old_key)
                .await?
                .ok_or(RollError::NotFound)?;
            // Rolling makes a project key: only a project key can be rolled.
            if old.key_type != Some(KeyType::Project) {
                return Err(RollError::MasterKey);
            }
            let refusal = if old.revoked {
                Some(NotRollable::Revoked)
            } else if old.expires_at.is_some_and(|at| at <= roll.now) {
                Some(NotRollable::Expired)
            } else if old.replaced_by.is_some() {
                Some(NotRollable::AlreadyRolled)
            } else {
                None
            };
            if let Some(refusal) = refusal {
                return Err(RollError::NotRollable(refusal));
            }
            let overlap_end = to_millis(roll.now + roll.overlap);
            let old_expires_at = old.expires_at.map_or(overlap_end, |at| at.min(overlap_end));
            // The old key's shortened life first, so an overlap of 0 frees its place in the
            // active-key count before the new key takes one.
            let name = DisplayName::from_stored(old.name);
            let new = NewKey {
                id: roll.new_id,
                organization_id: org,
                project_id: old.project_id,
                name: &name,
                key: roll.new_key,
                // A roll never lengthens a credential's life: the new key keeps the old key's
                // expiry, else a holder of an expiring project key could roll it into one
                // that never expires.
                expires_at: old.expires_at,
            };
            tx.execute_cached(
                "UPDATE api_keys SET expires_at = $2 WHERE id = $1",
                &[&roll.old_key.as_uuid(), &old_expires_at],
            )
            .await
            .map_err(StoreError::from)?;
            if count_active(&tx, org, roll.now).await? >= max_active {
                return Err(RollError::LimitReached(max_active));
            }
            let new_key = insert_key(&tx, &new).await?;
            tx.execute_cached(
                "UPDATE api_keys SET replaced_by = $2 WHERE id = $1",
                &[&roll.old_key.as_uuid(), &new_key.id.as_uuid()],
            )
            .await
            .map_err(StoreError::from)?;
            let change = Change {
                organization_id: org,
                action: Action::KeyRolled,
                target_type: TargetType::Key,
                target_id: roll.old_key.as_uuid(),
                project_id: old.project_id,
            };
            record_event(&tx, &change, context).await?;
            let announced = announce_eviction(&tx, old.hash, acks).await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok(RollOutcome {
                new_key,
                old_key: roll.old_key,
                old_expires_at,
                announced,
            })
        })
        .await
    }

    /// The auth path's one query.
    pub async fn find_key_state(&self, hash: &KeyHash) -> Result<KeyState, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let row = client
                .query_opt_cached(
                    "SELECT id, organization_id, project_id, key_type, revoked_at IS NOT NULL,
                            expires_at
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
                return Ok(KeyState::Revoked);
            }
            Ok(KeyState::Active(Identity {
                key_id: KeyId::from_uuid(row.get(0)),
                organization_id: OrgId::from_uuid(row.get(1)),
                project_id: row.get::<_, Option<Uuid>>(2).map(ProjectId::from_uuid),
                key_type,
                expires_at: row.get(5),
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

pub(super) async fn insert_key(
    tx: &deadpool_postgres::Transaction<'_>,
    new: &NewKey<'_>,
) -> Result<KeyRecord, StoreError> {
    let row = tx
        .query_one_cached(
            "INSERT INTO api_keys (id, organization_id, project_id, key_type, name, prefix, key_hash,
                                   expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             RETURNING id, organization_id, project_id, prefix, key_type, name,
                       last_used_at, created_at, revoked_at, expires_at",
            &[
                &new.id.as_uuid(),
                &new.organization_id.as_uuid(),
                &new.project_id.map(|p| p.as_uuid()),
                &new.key.key_type().as_str(),
                &new.name.as_str(),
                &new.key.prefix().as_str(),
                &new.key.hash().as_bytes().as_slice(),
                &new.expires_at,
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
        expires_at: row.get(9),
    }
}

/// A key row as a revoke or roll sees it, locked until the transaction ends.
struct LockedKey {
    /// None for a type this build does not know (say, one a newer version wrote).
    key_type: Option<KeyType>,
    project_id: Option<ProjectId>,
    hash: KeyHash,
    name: String,
    revoked: bool,
    expires_at: Option<DateTime<Utc>>,
    replaced_by: Option<Uuid>,
}

/// Takes the organization's advisory lock (key changes of one organization are serialized
/// across instances) and the key's row lock; None when the key is not in the caller's scope
/// (another organization's, or — for a project key — another project's).
async fn lock_key_in_scope(
    tx: &deadpool_postgres::Transaction<'_>,
    org: OrgId,
    scope: Option<ProjectId>,
    key: KeyId,
) -> Result<Option<LockedKey>, StoreError> {
    tx.execute_cached("SELECT pg_advisory_xact_lock($1)", &[&org_lock_id(org)])
        .await?;
    let row = tx
        .query_opt_cached(
            "SELECT key_type, project_id, key_hash, name, revoked_at IS NOT NULL, expires_at,
                    replaced_by
             FROM api_keys WHERE id = $1 AND organization_id = $2 FOR UPDATE",
            &[&key.as_uuid(), &org.as_uuid()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let project_id = row.get::<_, Option<Uuid>>(1).map(ProjectId::from_uuid);
    if scope.is_some() && project_id != scope {
        return Ok(None);
    }
    let key_type = KeyType::from_name(row.get(0));
    Ok(Some(LockedKey {
        key_type,
        project_id,
        hash: KeyHash::from_bytes(row.get(2)).expect("key_hash is 32 bytes by constraint"),
        name: row.get(3),
        revoked: row.get(4),
        expires_at: row.get(5),
        replaced_by: row.get(6),
    }))
}

/// Keys that can authenticate at `now`: neither revoked nor expired.
async fn count_active(
    tx: &deadpool_postgres::Transaction<'_>,
    org: OrgId,
    now: DateTime<Utc>,
) -> Result<i64, StoreError> {
    Ok(tx
        .query_one_cached(
            "SELECT count(*) FROM api_keys
             WHERE organization_id = $1 AND revoked_at IS NULL
               AND (expires_at IS NULL OR expires_at > $2)",
            &[&org.as_uuid(), &now],
        )
        .await?
        .get(0))
}

/// Tells every listening instance to evict `hash` (a NOTIFY, delivered on commit) and names
/// the listeners that will hear it, whose acknowledgements the caller then waits for.
async fn announce_eviction(
    tx: &deadpool_postgres::Transaction<'_>,
    hash: KeyHash,
    acks: &AckAddress,
) -> Result<Announced, StoreError> {
    // Listeners take their name only once LISTEN is active: each of these will hear the
    // notice sent at commit.
    let listeners = tx
        .query_cached(
            "SELECT substr(application_name, length($1) + 1) FROM pg_stat_activity
             WHERE datname = current_database() AND starts_with(application_name, $1)",
            &[&LISTENER_NAME_PREFIX],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    tx.execute_cached(
        "SELECT pg_notify($1, $2)",
        &[&REVOCATION_CHANNEL, &acks.notice(hash)],
    )
    .await?;
    Ok(Announced { hash, listeners })
}

/// The key-row event for `record`'s key.
fn key_change(action: Action, record: &KeyRecord) -> Change {
    Change {
        organization_id: record.organization_id,
        action,
        target_type: TargetType::Key,
        target_id: record.id.as_uuid(),
        project_id: record.project_id,
    }
}
