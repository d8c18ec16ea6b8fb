//! What revoke, roll and update share: the organization's advisory lock, the key's row lock,
//! and the eviction notice their change sends to every instance.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::record::restrictions;
use crate::domain::{KeyHash, KeyId, KeyRateLimit, KeyType, OrgId, ProjectId, Scopes};
use crate::notice::{AckAddress, LISTENER_NAME_PREFIX, REVOCATION_CHANNEL};
use crate::store::cached::CachedStatements;
use crate::store::pool::StoreError;

/// A change other instances must hear of before the request answers: the key's cached
/// entry is evicted everywhere (the next lookup reads the new state).
#[derive(Debug, Clone)]
pub struct Announced {
    pub hash: KeyHash,
    /// Instance ids of the listeners that were listening when the change was announced:
    /// the instances whose acknowledgement the changer waits for.
    pub listeners: Vec<String>,
}

/// The advisory-lock id of an organization: its uuid folded to 64 bits. A collision only
/// serializes two organizations' key changes, it never breaks them.
pub(in crate::store) fn org_lock_id(org: OrgId) -> i64 {
    let (high, low) = org.as_uuid().as_u64_pair();
    (high ^ low) as i64
}

/// A key row as a revoke or roll sees it, locked until the transaction ends.
pub(super) struct LockedKey {
    /// None for a type this build does not know (say, one a newer version wrote).
    pub(super) key_type: Option<KeyType>,
    pub(super) project_id: Option<ProjectId>,
    pub(super) hash: KeyHash,
    pub(super) name: String,
    pub(super) revoked: bool,
    pub(super) expires_at: Option<DateTime<Utc>>,
    pub(super) replaced_by: Option<Uuid>,
    pub(super) scopes: Scopes,
    pub(super) enabled: bool,
    pub(super) rate_limit: Option<KeyRateLimit>,
}

/// Takes the organization's advisory lock (key changes of one organization are serialized
/// across instances) and the key's row lock; None when the key is not in the caller's scope
/// (another organization's, or — for a project key — another project's).
pub(super) async fn lock_key_in_scope(
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
                    replaced_by, scopes, enabled, rate_limit_per_second, rate_limit_burst
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
    let (scopes, enabled, rate_limit) = restrictions(&row, 7);
    Ok(Some(LockedKey {
        key_type,
        project_id,
        hash: KeyHash::from_bytes(row.get(2)).expect("key_hash is 32 bytes by constraint"),
        name: row.get(3),
        revoked: row.get(4),
        expires_at: row.get(5),
        replaced_by: row.get(6),
        scopes,
        enabled,
        rate_limit,
    }))
}

/// Tells every listening instance to evict `hash` (a NOTIFY, delivered on commit) and names
/// the listeners that will hear it, whose acknowledgements the caller then waits for.
pub(super) async fn announce_eviction(
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
