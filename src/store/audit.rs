//! Audit events: written inside the transaction of the change they record (so there is no
//! change without its event, nor an event without its change), read back newest first with
//! keyset pagination. Writing an event also queues its webhook deliveries, in the same
//! statement: the transactional outbox (a change that rolls back is never delivered).

use super::cached::CachedStatements;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::handle::Store;
use super::pool::StoreError;
use crate::audit::{Action, AuditContext, TargetType};
use crate::domain::{OrgId, ProjectId};
use crate::notice::WEBHOOK_CHANNEL;

/// One change, as the caller describes it; the store adds the id and the time.
pub struct Change {
    pub organization_id: OrgId,
    pub action: Action,
    pub target_type: TargetType,
    pub target_id: Uuid,
    pub project_id: Option<ProjectId>,
    /// `key.updated`: each changed field, `{"field": {"from": …, "to": …}}`.
    pub changes: Option<serde_json::Value>,
    /// Why, when more than the action says: a leak's `{"reason": "leaked", "url", "source"}`.
    pub details: Option<serde_json::Value>,
    /// A webhook type this event is also delivered as, to the endpoints subscribing to it (a
    /// leak's `key.revoked` is also `key.leaked`, with the same event as its `data`).
    pub also_sent_as: Option<&'static str>,
}

impl Change {
    /// A change with nothing to say beyond what happened to which target.
    pub fn new(
        organization_id: OrgId,
        action: Action,
        target_type: TargetType,
        target_id: Uuid,
        project_id: Option<ProjectId>,
    ) -> Change {
        Change {
            organization_id,
            action,
            target_type,
            target_id,
            project_id,
            changes: None,
            details: None,
            also_sent_as: None,
        }
    }

    /// The webhook types this event is delivered as: its action when endpoints may hear of it,
    /// and `also_sent_as`.
    fn webhook_types(&self) -> Vec<&'static str> {
        let own = Some(self.action)
            .filter(|action| action.is_webhook_event())
            .map(Action::as_str);
        own.into_iter().chain(self.also_sent_as).collect()
    }
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
    pub actor_provider: Option<String>,
    pub details: Option<serde_json::Value>,
}

/// A position in a newest-first order of (time, id) — audit events by occurredAt, webhook
/// deliveries by creation: the last item a page showed. The next page starts strictly after
/// it, so items written meanwhile (all newer) never shift what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagePosition {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

/// What to list: an organization's events, optionally filtered, from a position on.
pub struct EventQuery {
    pub organization_id: OrgId,
    pub action: Option<Action>,
    pub target_id: Option<Uuid>,
    pub after: Option<PagePosition>,
    pub limit: u16,
}

pub struct EventPage {
    pub events: Vec<AuditEventRecord>,
    /// Where the next page starts; None on the last page.
    pub next: Option<PagePosition>,
}

/// Writes `change`'s event within `tx`. The actor key's prefix is read from its row, in the
/// same transaction: the plaintext and the hash never come near this table.
///
/// The same statement queues one webhook delivery per endpoint of the organization that
/// subscribes to the action, and wakes the dispatchers (a NOTIFY, sent on commit) when it
/// queued any. Every writer of an organization's events holds its advisory lock, so the
/// deliveries' `commit_order` follows the order in which the changes commit.
pub(super) async fn record_event(
    tx: &deadpool_postgres::Transaction<'_>,
    change: &Change,
    context: &AuditContext,
) -> Result<(), StoreError> {
    tx.execute_cached(
        "WITH event AS (
             INSERT INTO audit_events (id, organization_id, action, actor_type, actor_key_id,
                                       actor_prefix, target_type, target_id, project_id, ip,
                                       user_agent, request_id, changes, actor_provider, details)
             VALUES ($1, $2, $3, $4, $5, (SELECT prefix FROM api_keys WHERE id = $5),
                     $6, $7, $8, $9, $10, $11, $12, $15, $16)
             RETURNING id, organization_id
         ), queued AS (
             INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type, event_id)
             SELECT logstitch_uuid_v7(), endpoint.id, endpoint.organization_id, sent.type,
                    event.id
             FROM event
             CROSS JOIN unnest($13::text[]) WITH ORDINALITY AS sent (type, position)
             JOIN webhook_endpoints endpoint ON endpoint.organization_id = event.organization_id
             WHERE sent.type = ANY (endpoint.events) OR '*' = ANY (endpoint.events)
             ORDER BY endpoint.id, sent.position
             RETURNING 1
         )
         SELECT pg_notify($14, '') FROM (SELECT 1 FROM queued LIMIT 1) AS any_queued",
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
            &change.webhook_types(),
            &WEBHOOK_CHANNEL,
            &context.actor.provider(),
            &change.details,
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
                            target_type, target_id, project_id, ip, user_agent, request_id, changes,
                            actor_provider, details
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
                        &query.after.map(|after| after.at),
                        &query.after.map(|after| after.id),
                        &fetch,
                    ],
                )
                .await?;
            let mut events: Vec<AuditEventRecord> = rows.iter().map(event_record).collect();
            let more = events.len() > usize::from(query.limit);
            events.truncate(usize::from(query.limit));
            let next = events.last().filter(|_| more).map(|last| PagePosition {
                at: last.occurred_at,
                id: last.id,
            });
            Ok(EventPage { events, next })
        })
        .await
    }
}

/// An event from the first 15 columns, in the order the list selects them (`id, action,
/// occurred_at, actor_type, actor_key_id, actor_prefix, target_type, target_id, project_id,
/// ip, user_agent, request_id, changes, actor_provider, details`).
pub(super) fn event_record(row: &tokio_postgres::Row) -> AuditEventRecord {
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
        actor_provider: row.get(13),
        details: row.get(14),
    }
}
