//! A key row as the API shows it, and the helpers every key query shares to read one.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::audit::{Action, TargetType};
use crate::domain::{
    DisplayName, Identity, KeyId, KeyPrefix, KeyRateLimit, KeyType, OrgId, ProjectId, Scopes,
};
use crate::store::audit::Change;

/// The columns [`key_record`] reads, in its order.
macro_rules! key_columns {
    () => {
        "id, organization_id, project_id, prefix, key_type, name, last_used_at, created_at,
         revoked_at, expires_at, scopes, enabled, rate_limit_per_second, rate_limit_burst"
    };
}
pub(super) use key_columns;

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
    pub scopes: Scopes,
    pub enabled: bool,
    pub rate_limit: Option<KeyRateLimit>,
}

impl KeyRecord {
    /// The identity this row authenticates as (revoked or not: the caller decides).
    pub fn identity(&self) -> Identity {
        Identity {
            key_id: self.id,
            organization_id: self.organization_id,
            project_id: self.project_id,
            key_type: self.key_type,
            expires_at: self.expires_at,
            scopes: self.scopes.clone(),
            enabled: self.enabled,
            rate_limit: self.rate_limit,
        }
    }
}

/// The key type stored in column `type_column`, or None (and a warning naming the key, from
/// column `id_column`) for a type this build does not know — say, one a newer version wrote.
pub(super) fn stored_key_type(
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

/// A row of [`key_columns!`], its key type already read.
pub(super) fn key_record(row: &tokio_postgres::Row, key_type: KeyType) -> KeyRecord {
    let (scopes, enabled, rate_limit) = restrictions(row, 10);
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
        scopes,
        enabled,
        rate_limit,
    }
}

/// The key's restrictions, from three adjacent columns starting at `first`: `scopes`,
/// `enabled`, then the rate limit's two columns.
pub(super) fn restrictions(
    row: &tokio_postgres::Row,
    first: usize,
) -> (Scopes, bool, Option<KeyRateLimit>) {
    (
        Scopes::from_stored(row.get(first)),
        row.get(first + 1),
        KeyRateLimit::from_stored(row.get(first + 2), row.get(first + 3)),
    )
}

/// The key-row event for `record`'s key.
pub(super) fn key_change(action: Action, record: &KeyRecord) -> Change {
    key_event(action, record.organization_id, record.id, record.project_id)
}

/// The key-row event for key `key` of `organization_id` (and of `project_id`, for a project key).
pub(super) fn key_event(
    action: Action,
    organization_id: OrgId,
    key: KeyId,
    project_id: Option<ProjectId>,
) -> Change {
    Change::new(
        organization_id,
        action,
        TargetType::Key,
        key.as_uuid(),
        project_id,
    )
}
