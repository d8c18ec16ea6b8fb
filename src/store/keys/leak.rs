//! Keys a secret-scanning partner reported leaked: which of the reported hashes are keys we
//! issued, and the revocation of a live one, as DELETE revokes (announced, acknowledged) but
//! on a scanner's word: master keys too, with the report's details in the event.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::locked::lock_key_in_scope;
use super::record::key_event;
use super::revoke::{revoke_locked, RevokeOutcome};
use crate::audit::{Action, AuditContext, WEBHOOK_KEY_LEAKED};
use crate::domain::{KeyHash, KeyId, OrgId};
use crate::notice::AckAddress;
use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::pool::StoreError;

/// A reported hash that is one of our keys, in whatever state.
#[derive(Debug, Clone)]
pub struct ReportedKey {
    pub hash: KeyHash,
    pub key_id: KeyId,
    pub organization_id: OrgId,
    /// Not revoked and not expired: a revocation has something to do.
    pub live: bool,
}

/// Where the scanner found the key, as its report says (both optional, kept as sent).
#[derive(Debug, Clone, Default)]
pub struct LeakSite {
    pub url: Option<String>,
    pub source: Option<String>,
}

impl Store {
    /// The keys among `hashes`, in one query. Hashes of no key are simply absent.
    pub async fn find_reported_keys(
        &self,
        hashes: &[KeyHash],
    ) -> Result<Vec<ReportedKey>, StoreError> {
        let hashes: Vec<&[u8]> = hashes
            .iter()
            .map(|hash| hash.as_bytes().as_slice())
            .collect();
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let rows = client
                .query_cached(
                    "SELECT key_hash, id, organization_id,
                            revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
                     FROM api_keys WHERE key_hash = ANY ($1)",
                    &[&hashes],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| ReportedKey {
                    hash: KeyHash::from_bytes(row.get(0)).expect("key_hash is 32 bytes"),
                    key_id: KeyId::from_uuid(row.get::<_, Uuid>(1)),
                    organization_id: OrgId::from_uuid(row.get(2)),
                    live: row.get(3),
                })
                .collect())
        })
        .await
    }

    /// Revokes `key` of `org` because it leaked: any key type, with `{"reason": "leaked",
    /// "url", "source"}` in its `key.revoked` event, which is also delivered as `key.leaked`.
    /// None when there was nothing to do (already revoked, expired, or no such key): no
    /// event, no notice, so a replayed report changes nothing.
    pub async fn revoke_leaked_key(
        &self,
        org: OrgId,
        key: KeyId,
        site: &LeakSite,
        acks: &AckAddress,
        context: &AuditContext,
    ) -> Result<Option<RevokeOutcome>, StoreError> {
        self.within_deadline(async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let Some(target) = lock_key_in_scope(&tx, org, None, key).await? else {
                return Ok(None);
            };
            let now: DateTime<Utc> = Utc::now();
            if target.revoked || target.expires_at.is_some_and(|at| at <= now) {
                return Ok(None);
            }
            let mut change = key_event(Action::KeyRevoked, org, key, target.project_id);
            change.details = Some(json!({
                "reason": "leaked",
                "url": site.url,
                "source": site.source,
            }));
            change.also_sent_as = Some(WEBHOOK_KEY_LEAKED);
            let announced = revoke_locked(&tx, key, target.hash, &change, acks, context).await?;
            tx.commit().await?;
            Ok(Some(RevokeOutcome {
                hash: announced.hash,
                already_revoked: false,
                listeners: announced.listeners,
            }))
        })
        .await
    }
}
