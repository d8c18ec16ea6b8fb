//! Audit events: written inside the transaction of the change they record (so there is no
//! change without its event, nor an event without its change), read back newest first with
//! keyset pagination.

use super::cached::CachedStatements;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::handle::Store;
use super::pool::StoreError;
use crate::audit::{Action, AuditContext, TargetType};
use crate::domain::{OrgId, ProjectId};

/// One change, as the caller describes it; the store adds the id and the time.
pub struct Change {
    pub organization_id: OrgId,
    pub action: Action,
    pub target_type: TargetType,
    pub target_id: Uuid,
    pub project_id: Option<ProjectId>,
    /// `key.updated`: each changed field, `{"field": {"from": …, "to": …}}`.
    pub changes: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct AuditEventRecord {
    pub id: Uuid,
    pub action: String,
    pub occurred_at: DateTime<Utc>,
    pub actor_type: String,
    pub actor_key_id: Option<Uuid>,
    pub actor_prefix: Option<String>,
    pub target_type: String,
    pub target_id: Uuid,
    pub project_id: Option<Uuid>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub changes: Option<serde_json::Value>,
}

/// A position in the newest-first order: the last event a page showed. The next page starts
/// strictly after it, so events written meanwhile (all newer) never shift what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPosition {
    pub occurred_at: DateTime<Utc>,
    pub id: Uuid,
}

/// What to list: an organization's events, optionally filtered, from a position on.
pub struct EventQuery {
    pub organization_id: OrgId,
    pub action: Option<Action>,
    pub target_id: Option<Uuid>,
    pub after: Option<EventPosition>,
    pub limit: u16,
}

pub struct EventPage {
    pub events: Vec<AuditEventRecord>,
    /// Where the next page starts; None on the last page.
    pub next: Option<EventPosition>,
}

/// Writes `change`'s event within `tx`. The actor key's prefix is read from its row, in the
/// same transaction: the plaintext and the hash never come near this table.
pub(super) async fn record_event(
    tx: &deadpool_postgres::Transaction<'_>,
    change: &Change,
    context: &AuditContext,
) -> Result<(), StoreError> {
    tx.execute_cached(
        "INSERT INTO audit_events (id, organization_id, action, actor_type, actor_key_id,
                                   actor_prefix, target_type, target_id, project_id, ip,
                                   user_agent, request_id, changes)
         VALUES ($1, $2, $3, $4, $5, (SELECT prefix FROM api_keys WHERE id = $5),
                 $6, $7, $8, $9, $10, $11, $12)",
        &[
            &Uuid::now_v7(),
            &change.organization_id.as_uuid(),
            &change.action.as_str(),
            &context.actor.type_name(),
            &context.actor.key_id().map(|id| id.as_uuid()),
            &change.target_type.as_str(),
            &change.target_id,
            &change.project_id.map(|p| p.as_uuid()),
            &context.ip.map(|ip| ip.to_string()),
            &context.user_agent,
            &context.request_id.map(|id| id.as_str().to_owned()),
            &change.changes,
        ],
    )
    .await?;
    Ok(())
}

impl Store {
    pub async fn list_audit_events(&self, query: EventQuery) -> Result<EventPage, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            // One more than asked: whether it exists says whether there is a next page.
            let fetch = i64::from(query.limit) + 1;
            let rows = client
                .query_cached(
                    "SELECT id, action, occurred_at, actor_type, actor_key_id, actor_prefix,
                            target_type, target_id, project_id, ip, user_agent, request_id, changes
                     FROM audit_events
                     WHERE organization_id = $1
                       AND ($2::text IS NULL OR action = $2)
                       AND ($3::uuid IS NULL OR target_id = $3)
                       AND ($4::timestamptz IS NULL OR (occurred_at, id) < ($4, $5::uuid))
                     ORDER BY occurred_at DESC, id DESC
                     LIMIT $6",
                    &[
                        &query.organization_id.as_uuid(),
                        &query.action.map(Action::as_str),
                        &query.target_id,
                        &query.after.map(|at| at.occurred_at),
                        &query.after.map(|at| at.id),
                        &fetch,
                    ],
                )
                .await?;
            let mut events: Vec<AuditEventRecord> = rows.iter().map(event_record).collect();
            let more = events.len() > usize::from(query.limit);
            events.truncate(usize::from(query.limit));
            let next = events.last().filter(|_| more).map(|last| EventPosition {
                occurred_at: last.occurred_at,
                id: last.id,
            });
            Ok(EventPage { events, next })
        })
        .await
    }
}

fn event_record(row: &tokio_postgres::Row) -> AuditEventRecord {
    AuditEventRecord {
        id: row.get(0),
        action: row.get(1),
        occurred_at: row.get(2),
        actor_type: row.get(3),
        actor_key_id: row.get(4),
        actor_prefix: row.get(5),
        target_type: row.get(6),
        target_id: row.get(7),
        project_id: row.get(8),
        ip: row.get(9),
        user_agent: row.get(10),
        request_id: row.get(11),
        changes: row.get(12),
    }
}
