//! Rolling a key: a new key of the same project and name, and the old key's shortened life
//! announced like a revocation, in one transaction.

use chrono::{DateTime, Utc};

use super::ceiling::{beyond_ceiling, recheck_caller, Caller, CallerRefusal};
use super::create::{count_active, insert_key, NewKey};
use super::locked::{announce_eviction, lock_key_in_scope, Announced};
use super::record::{key_event, KeyRecord};
use crate::audit::{Action, AuditContext};
use crate::domain::{to_millis, ApiKey, DisplayName, KeyId, KeyType, OrgId, ProjectId};
use crate::error::FieldError;
use crate::notice::AckAddress;
use crate::store::audit::record_event;
use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::pool::StoreError;

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
    #[error("the caller can no longer make this change: {0:?}")]
    Caller(CallerRefusal),
    /// The key's powers exceed the caller's own, one detail per field.
    #[error("the key exceeds what the caller may hand on")]
    Forbidden(Vec<FieldError>),
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
    pub caller: &'a Caller,
}

impl Store {
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
            let ceiling = recheck_caller(&tx, roll.caller, "keys.write")
                .await?
                .map_err(RollError::Caller)?;
            // A roll hands the old key's powers to a new key the caller receives: a project
            // key may roll only a key it could have made itself.
            if let Some(ceiling) = &ceiling {
                let refused = beyond_ceiling(ceiling, &old.scopes, old.expires_at, old.rate_limit);
                if !refused.is_empty() {
                    return Err(RollError::Forbidden(refused));
                }
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
                // Nor widens what it may do: the restrictions go with it.
                scopes: &old.scopes,
                enabled: old.enabled,
                rate_limit: old.rate_limit,
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
            let change = key_event(Action::KeyRolled, org, roll.old_key, old.project_id);
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
}
