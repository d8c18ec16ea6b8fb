//! Updating a key (`PATCH /api/v1/keys/{id}`): its name, scopes, expiry, enabled state and
//! rate limit, in one transaction with its `key.updated` event, announced like a revocation
//! so every instance enforces the new values when the request answers. A project key's change
//! is held to what it may itself do (no escalation), judged against the row it has locked.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::ceiling::{escalations, recheck_caller, Caller, CallerRefusal};
use super::locked::{announce_eviction, lock_key_in_scope, Announced};
use super::patch::KeyPatch;
use super::record::{key_columns, key_event, key_record, KeyRecord};
use crate::audit::{Action, AuditContext};
use crate::domain::{KeyId, KeyType, OrgId, ProjectId};
use crate::error::FieldError;
use crate::notice::AckAddress;
use crate::store::audit::record_event;
use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::pool::StoreError;

/// One update: which key, within which scope (a project key's own project; None for a
/// master key), what to change, and who asks (held to its ceiling when a project key).
#[derive(Debug, Clone)]
pub struct UpdateRequest<'a> {
    pub organization_id: OrgId,
    pub scope: Option<ProjectId>,
    pub key: KeyId,
    pub patch: &'a KeyPatch,
    pub caller: &'a Caller,
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("key not found in the caller's scope")]
    NotFound,
    #[error("master keys cannot be updated through the API")]
    MasterKey,
    #[error("the key is revoked")]
    Revoked,
    #[error("the key has expired")]
    Expired,
    /// Escalations, one per refused field.
    #[error("the change exceeds what the caller may do")]
    Forbidden(Vec<FieldError>),
    #[error("the caller can no longer make this change: {0:?}")]
    Caller(CallerRefusal),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug)]
pub struct UpdateOutcome {
    pub record: KeyRecord,
    /// None when nothing changed: no event, nothing announced.
    pub announced: Option<Announced>,
}

impl Store {
    /// Applies the patch to a live project key in the caller's scope, held to the ceiling.
    pub async fn update_key(
        &self,
        request: UpdateRequest<'_>,
        acks: &AckAddress,
        context: &AuditContext,
    ) -> Result<UpdateOutcome, UpdateError> {
        let UpdateRequest {
            organization_id: org,
            scope,
            key,
            patch,
            caller,
        } = request;
        self.within_deadline(async {
            let mut client = self.pool.get().await.map_err(StoreError::from)?;
            let tx = client.transaction().await.map_err(StoreError::from)?;
            let locked = lock_key_in_scope(&tx, org, scope, key)
                .await?
                .ok_or(UpdateError::NotFound)?;
            if locked.key_type != Some(KeyType::Project) {
                return Err(UpdateError::MasterKey);
            }
            if locked.revoked {
                return Err(UpdateError::Revoked);
            }
            let now = Utc::now();
            if locked.expires_at.is_some_and(|at| at <= now) {
                return Err(UpdateError::Expired);
            }
            let ceiling = recheck_caller(&tx, caller, "keys.write")
                .await?
                .map_err(UpdateError::Caller)?;
            let row = tx
                .query_one_cached(
                    concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1"),
                    &[&key.as_uuid()],
                )
                .await
                .map_err(StoreError::from)?;
            let current = key_record(&row, KeyType::Project);
            let changes = changed(&current, patch);
            if changes.is_empty() {
                return Ok(UpdateOutcome {
                    record: current,
                    announced: None,
                });
            }
            if let Some(ceiling) = &ceiling {
                let refused = escalations(ceiling, &current, &changes);
                if !refused.is_empty() {
                    return Err(UpdateError::Forbidden(refused));
                }
            }
            let updated = apply(&current, &changes);
            tx.execute_cached(
                "UPDATE api_keys SET name = $2, scopes = $3, expires_at = $4, enabled = $5,
                        rate_limit_per_second = $6, rate_limit_burst = $7
                 WHERE id = $1",
                &[
                    &key.as_uuid(),
                    &updated.name.as_str(),
                    &updated.scopes.texts(),
                    &updated.expires_at,
                    &updated.enabled,
                    &updated.rate_limit.map(|limit| limit.requests_per_second),
                    &updated.rate_limit.map(|limit| limit.burst as i32),
                ],
            )
            .await
            .map_err(StoreError::from)?;
            let mut event = key_event(Action::KeyUpdated, org, key, current.project_id);
            event.changes = Some(change_log(&current, &updated, &changes));
            record_event(&tx, &event, context).await?;
            let announced = announce_eviction(&tx, locked.hash, acks).await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok(UpdateOutcome {
                record: updated,
                announced: Some(announced),
            })
        })
        .await
    }
}

/// The part of `patch` that differs from `current`.
fn changed(current: &KeyRecord, patch: &KeyPatch) -> KeyPatch {
    KeyPatch {
        name: patch.name.clone().filter(|name| *name != current.name),
        scopes: patch
            .scopes
            .clone()
            .filter(|scopes| *scopes != current.scopes),
        expires_at: patch.expires_at.filter(|at| *at != current.expires_at),
        enabled: patch.enabled.filter(|enabled| *enabled != current.enabled),
        rate_limit: patch
            .rate_limit
            .filter(|limit| *limit != current.rate_limit),
    }
}

fn apply(current: &KeyRecord, changes: &KeyPatch) -> KeyRecord {
    let mut updated = current.clone();
    if let Some(name) = &changes.name {
        updated.name = name.clone();
    }
    if let Some(scopes) = &changes.scopes {
        updated.scopes = scopes.clone();
    }
    if let Some(expires_at) = changes.expires_at {
        updated.expires_at = expires_at;
    }
    if let Some(enabled) = changes.enabled {
        updated.enabled = enabled;
    }
    if let Some(rate_limit) = changes.rate_limit {
        updated.rate_limit = rate_limit;
    }
    updated
}

/// `{"field": {"from": …, "to": …}}` for each changed field, values as the list shows them.
fn change_log(before: &KeyRecord, after: &KeyRecord, changes: &KeyPatch) -> Value {
    let mut log = Map::new();
    let mut entry = |field: &str, from: Value, to: Value| {
        log.insert(field.to_owned(), json!({"from": from, "to": to}));
    };
    if changes.name.is_some() {
        entry(
            "name",
            json!(before.name.as_str()),
            json!(after.name.as_str()),
        );
    }
    if changes.scopes.is_some() {
        entry("scopes", json!(before.scopes), json!(after.scopes));
    }
    if changes.expires_at.is_some() {
        entry(
            "expires_at",
            timestamp(before.expires_at),
            timestamp(after.expires_at),
        );
    }
    if changes.enabled.is_some() {
        entry("enabled", json!(before.enabled), json!(after.enabled));
    }
    if changes.rate_limit.is_some() {
        entry(
            "rate_limit",
            json!(before.rate_limit),
            json!(after.rate_limit),
        );
    }
    Value::Object(log)
}

/// As the API shows a time: RFC 3339, UTC, milliseconds.
fn timestamp(at: Option<DateTime<Utc>>) -> Value {
    at.map_or(Value::Null, |at| {
        Value::String(at.to_rfc3339_opts(SecondsFormat::Millis, true))
    })
}
