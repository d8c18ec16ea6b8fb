//! What a project key may do to its project's keys, judged in the transaction of the change:
//! the caller's own row is read again under the organization's lock, so a key revoked,
//! expired, disabled or narrowed since its request authenticated can't finish a change with
//! the powers it had; and the change is held to that row (no escalation).

use chrono::{DateTime, Utc};

use super::patch::KeyPatch;
use super::record::{restrictions, KeyRecord};
use crate::domain::{KeyId, KeyRateLimit, KeyType, ScopePattern, Scopes};
use crate::error::FieldError;
use crate::store::cached::CachedStatements;
use crate::store::pool::StoreError;

/// Who is making a key change, as its request authenticated.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub key_id: KeyId,
    /// What a key of the caller's project without a limit of its own runs under (the
    /// project's override, else the default); None for a master key.
    pub project_default: Option<KeyRateLimit>,
}

/// Why the caller can no longer make the change (its state since it authenticated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerRefusal {
    Revoked,
    Expired,
    Disabled,
    /// The scope the change needs, which the caller no longer holds.
    LacksScope(&'static str),
}

/// What a project key may hand on: its own scopes, expiry and limits, as its row says now.
#[derive(Debug, Clone)]
pub struct Ceiling {
    pub scopes: Scopes,
    pub expires_at: Option<DateTime<Utc>>,
    /// The caller's effective limit (its own, else its project's, else the default).
    pub rate_limit: KeyRateLimit,
    /// What a target without a limit of its own runs under (`rate_limit: null`).
    pub target_default: KeyRateLimit,
}

/// Reads the caller's row again (`FOR SHARE`, inside the change's transaction, after the
/// organization's lock): a project key's ceiling, None for a master key, or why the caller may
/// no longer make a change that `needs` a scope.
pub(super) async fn recheck_caller(
    tx: &deadpool_postgres::Transaction<'_>,
    caller: &Caller,
    needs: &'static str,
) -> Result<Result<Option<Ceiling>, CallerRefusal>, StoreError> {
    let row = tx
        .query_opt_cached(
            "SELECT key_type, revoked_at IS NOT NULL, expires_at,
                    scopes, enabled, rate_limit_per_second, rate_limit_burst
             FROM api_keys WHERE id = $1 FOR SHARE",
            &[&caller.key_id.as_uuid()],
        )
        .await?;
    let Some(row) = row else {
        return Ok(Err(CallerRefusal::Revoked));
    };
    if row.get::<_, bool>(1) {
        return Ok(Err(CallerRefusal::Revoked));
    }
    let expires_at: Option<DateTime<Utc>> = row.get(2);
    if expires_at.is_some_and(|at| at <= Utc::now()) {
        return Ok(Err(CallerRefusal::Expired));
    }
    let (scopes, enabled, own_limit) = restrictions(&row, 3);
    if !enabled {
        return Ok(Err(CallerRefusal::Disabled));
    }
    let (Some(KeyType::Project), Some(project_default)) =
        (KeyType::from_name(row.get(0)), caller.project_default)
    else {
        return Ok(Ok(None));
    };
    if !scopes.grants(needs) {
        return Ok(Err(CallerRefusal::LacksScope(needs)));
    }
    Ok(Ok(Some(Ceiling {
        rate_limit: own_limit.unwrap_or(project_default),
        target_default: project_default,
        scopes,
        expires_at,
    })))
}

/// A roll hands the target's powers to a new key: a project key may roll only a key within
/// its own ceiling (scopes it covers, an expiry no later than its own, a limit no higher).
pub(super) fn beyond_ceiling(
    ceiling: &Ceiling,
    scopes: &Scopes,
    expires_at: Option<DateTime<Utc>>,
    rate_limit: Option<KeyRateLimit>,
) -> Vec<FieldError> {
    let mut refused: Vec<FieldError> = uncovered_scopes(ceiling, scopes).into_iter().collect();
    if let Some(own) = ceiling.expires_at {
        if expires_at.is_none_or(|at| at > own) {
            refused.push(FieldError::new(
                "expires_at",
                "a project key may not roll a key that outlives it",
            ));
        }
    }
    refused.extend(limit_above(ceiling, rate_limit));
    refused
}

/// No escalation: a project key may give only scopes it covers, move an expiry only earlier
/// (never clear it, never past its own), disable but never enable, and set no limit above its
/// own. One detail per refused field, named as in the PATCH body.
pub(super) fn escalations(
    ceiling: &Ceiling,
    current: &KeyRecord,
    changes: &KeyPatch,
) -> Vec<FieldError> {
    let mut refused = Vec::new();
    if let Some(scopes) = &changes.scopes {
        refused.extend(uncovered_scopes(ceiling, scopes));
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
        refused.extend(limit_above(ceiling, limit));
    }
    refused
}

fn uncovered_scopes(ceiling: &Ceiling, scopes: &Scopes) -> Option<FieldError> {
    let beyond: Vec<String> = scopes
        .texts()
        .into_iter()
        .filter(|text| ScopePattern::parse(text).is_none_or(|p| !ceiling.scopes.covers(&p)))
        .map(|text| format!("\"{text}\""))
        .collect();
    (!beyond.is_empty()).then(|| {
        FieldError::new(
            "scopes",
            format!(
                "a project key may only grant scopes it holds: {} not covered",
                beyond.join(", ")
            ),
        )
    })
}

/// `limit` (None: the target's default) above the caller's own effective limit.
fn limit_above(ceiling: &Ceiling, limit: Option<KeyRateLimit>) -> Option<FieldError> {
    let wanted = limit.unwrap_or(ceiling.target_default);
    let own = ceiling.rate_limit;
    (wanted.requests_per_second > own.requests_per_second || wanted.burst > own.burst).then(|| {
        FieldError::new(
            "rate_limit",
            format!(
                "a project key may not set a limit above its own ({} requests per second, burst {})",
                own.requests_per_second, own.burst
            ),
        )
    })
}
