//! Updating a key (`PATCH /api/v1/keys/{id}`): its name, scopes, expiry, enabled state and
//! rate limit, in one transaction with its `key.updated` event, announced like a revocation
//! so every instance enforces the new values when the request answers. A project key's change
//! is held to what it may itself do (no escalation), judged against the row it has locked.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::locked::{announce_eviction, lock_key_in_scope, Announced};
use super::record::{key_columns, key_event, key_record, KeyRecord};
use crate::audit::{Action, AuditContext};
use crate::domain::{DisplayName, KeyId, KeyRateLimit, KeyType, OrgId, ProjectId, Scopes};
use crate::error::FieldError;
use crate::notice::AckAddress;
use crate::store::audit::record_event;
use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::pool::StoreError;

/// What a PATCH asks for; None: leave as it is. Expiry and rate limit may be cleared
/// (`Some(None)`).
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<DisplayName>,
    pub scopes: Option<Scopes>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub enabled: Option<bool>,
    pub rate_limit: Option<Option<KeyRateLimit>>,
}

/// One update: which key, within which scope (a project key's own project; None for a
/// master key), what to change, and the caller's ceiling (None for a master key).
#[derive(Debug, Clone)]
pub struct UpdateRequest<'a> {
    pub organization_id: OrgId,
    pub scope: Option<ProjectId>,
    pub key: KeyId,
    pub patch: &'a KeyPatch,
    pub ceiling: Option<&'a Ceiling>,
}

/// What a project key may hand on: its own scopes, expiry and limits. A master key has no
/// ceiling.
#[derive(Debug, Clone)]
pub struct Ceiling {
    pub scopes: Scopes,
    pub expires_at: Option<DateTime<Utc>>,
    /// The caller's effective limit (its own, else its project's, else the default).
    pub rate_limit: KeyRateLimit,
    /// What a target without a limit of its own runs under (`rate_limit: null`).
    pub target_default: KeyRateLimit,
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
            ceiling,
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
            if let Some(ceiling) = ceiling {
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

impl KeyPatch {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.scopes.is_none()
            && self.expires_at.is_none()
            && self.enabled.is_none()
            && self.rate_limit.is_none()
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

/// No escalation: a project key may give only scopes it covers, move an expiry only earlier
/// (never clear it, never past its own), disable but never enable, and set no limit above its
/// own. One detail per refused field, named as in the PATCH body.
fn escalations(ceiling: &Ceiling, current: &KeyRecord, changes: &KeyPatch) -> Vec<FieldError> {
    let mut refused = Vec::new();
    if let Some(scopes) = &changes.scopes {
        let beyond: Vec<String> = scopes
            .texts()
            .into_iter()
            .filter(|text| {
                crate::domain::ScopePattern::parse(text)
                    .is_none_or(|pattern| !ceiling.scopes.covers(&pattern))
            })
            .collect();
        if !beyond.is_empty() {
            refused.push(FieldError::new(
                "scopes",
                format!(
                    "a project key may only grant scopes it holds: {} not covered",
                    quoted(&beyond)
                ),
            ));
        }
    }
    if let Some(expires_at) = changes.expires_at {
        let problem = match expires_at {
            None => Some("a project key may not clear an expiry"),
            Some(at) if current.expires_at.is_some_and(|set| at > set) => {
                Some("a project key may only move an expiry earlier")
            }
            Some(at) if ceiling.expires_at.is_some_and(|own| at > own) => {
                Some("a project key may not set an expiry past its own")
            }
            Some(_) => None,
        };
        if let Some(problem) = problem {
            refused.push(FieldError::new("expires_at", problem));
        }
    }
    if changes.enabled == Some(true) {
        refused.push(FieldError::new(
            "enabled",
            "only a master key may enable a disabled key",
        ));
    }
    if let Some(limit) = changes.rate_limit {
        let wanted = limit.unwrap_or(ceiling.target_default);
        let own = ceiling.rate_limit;
        if wanted.requests_per_second > own.requests_per_second || wanted.burst > own.burst {
            refused.push(FieldError::new(
                "rate_limit",
                format!(
                    "a project key may not set a limit above its own ({} requests per second, burst {})",
                    own.requests_per_second, own.burst
                ),
            ));
        }
    }
    refused
}

fn quoted(texts: &[String]) -> String {
    texts
        .iter()
        .map(|text| format!("\"{text}\""))
        .collect::<Vec<_>>()
        .join(", ")
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
