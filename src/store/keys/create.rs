//! Creating a key (under the organization's lock and its active-key limit), and listing keys.

use chrono::{DateTime, Utc};

use super::locked::org_lock_id;
use super::record::{key_change, key_columns, key_record, stored_key_type, KeyRecord};
use crate::audit::{Action, AuditContext};
use crate::domain::{ApiKey, DisplayName, KeyId, KeyRateLimit, OrgId, ProjectId, Scopes};
use crate::store::audit::record_event;
use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::pool::StoreError;

/// What a create writes. The plaintext never reaches the database: only hash and prefix do.
pub struct NewKey<'a> {
    pub id: KeyId,
    pub organization_id: OrgId,
    pub project_id: Option<ProjectId>,
    pub name: &'a DisplayName,
    pub key: &'a ApiKey,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: &'a Scopes,
    pub enabled: bool,
    pub rate_limit: Option<KeyRateLimit>,
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
                    concat!(
                        "SELECT ",
                        key_columns!(),
                        " FROM api_keys
                         WHERE organization_id = $1 AND ($2::uuid IS NULL OR project_id = $2)
                         ORDER BY created_at DESC, id DESC"
                    ),
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
}

pub(in crate::store) async fn insert_key(
    tx: &deadpool_postgres::Transaction<'_>,
    new: &NewKey<'_>,
) -> Result<KeyRecord, StoreError> {
    let row = tx
        .query_one_cached(
            concat!(
                "INSERT INTO api_keys (id, organization_id, project_id, key_type, name, prefix,
                                       key_hash, expires_at, scopes, enabled,
                                       rate_limit_per_second, rate_limit_burst)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 RETURNING ",
                key_columns!()
            ),
            &[
                &new.id.as_uuid(),
                &new.organization_id.as_uuid(),
                &new.project_id.map(|p| p.as_uuid()),
                &new.key.key_type().as_str(),
                &new.name.as_str(),
                &new.key.prefix().as_str(),
                &new.key.hash().as_bytes().as_slice(),
                &new.expires_at,
                &new.scopes.texts(),
                &new.enabled,
                &new.rate_limit.map(|limit| limit.requests_per_second),
                &new.rate_limit.map(|limit| limit.burst as i32),
            ],
        )
        .await?;
    Ok(key_record(&row, new.key.key_type()))
}

/// Keys that can authenticate at `now`: neither revoked nor expired.
pub(super) async fn count_active(
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
