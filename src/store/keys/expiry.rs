//! Expiry warnings: each key about to expire gets one `key.expiring` event (and with it its
//! webhook deliveries), whichever instance gets there first.
//!
//! A key is claimed by setting its `expiry_warned_at` in an UPDATE that Postgres re-checks on
//! the row it locks, under the organization's advisory lock like every key event (so events
//! commit in occurredAt order), and its event is written in that same transaction: a key is
//! warned exactly once however many instances look, and never marked without its event.

use std::time::Duration;

use uuid::Uuid;

use super::locked::org_lock_id;
use super::record::key_event;
use crate::audit::{Action, AuditContext};
use crate::domain::{KeyId, OrgId, ProjectId};
use crate::store::audit::record_event;
use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::pool::StoreError;

/// Keys due a warning: live, not warned yet, expiring within the window (never one already
/// expired). `$1`: the window in seconds.
macro_rules! due {
    () => {
        "expiry_warned_at IS NULL AND revoked_at IS NULL AND expires_at > now()
         AND expires_at <= now() + $1::double precision * interval '1 second'"
    };
}

impl Store {
    /// Warns of every key expiring within `window` that was not warned yet; returns how many
    /// this call warned.
    pub async fn warn_expiring_keys(&self, window: Duration) -> Result<usize, StoreError> {
        let window = window.as_secs_f64();
        let organizations: Vec<Uuid> = self
            .within_deadline(async {
                let client = self.pool.get().await?;
                let rows = client
                    .query_cached(
                        concat!(
                            "SELECT DISTINCT organization_id FROM api_keys WHERE ",
                            due!()
                        ),
                        &[&window],
                    )
                    .await?;
                Ok::<_, StoreError>(rows.iter().map(|row| row.get(0)).collect())
            })
            .await?;
        let mut warned = 0;
        for org in organizations {
            warned += self
                .warn_organization(OrgId::from_uuid(org), window)
                .await?;
        }
        Ok(warned)
    }

    async fn warn_organization(&self, org: OrgId, window: f64) -> Result<usize, StoreError> {
        self.within_deadline(async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute_cached("SELECT pg_advisory_xact_lock($1)", &[&org_lock_id(org)])
                .await?;
            let keys = tx
                .query_cached(
                    concat!(
                        "UPDATE api_keys SET expiry_warned_at = now()
                         WHERE organization_id = $2 AND ",
                        due!(),
                        " RETURNING id, project_id"
                    ),
                    &[&window, &org.as_uuid()],
                )
                .await?;
            let context = AuditContext::system();
            for key in &keys {
                let project = key.get::<_, Option<Uuid>>(1).map(ProjectId::from_uuid);
                let change = key_event(
                    Action::KeyExpiring,
                    org,
                    KeyId::from_uuid(key.get(0)),
                    project,
                );
                record_event(&tx, &change, &context).await?;
            }
            tx.commit().await?;
            Ok(keys.len())
        })
        .await
    }
}
