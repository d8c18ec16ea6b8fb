//! An audit event as the API shows it: the items of `GET /api/v1/audit-events`, and the `data`
//! of every webhook made from an event. One view for both, so a receiver gets exactly what the
//! audit trail shows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::audit::AuditEventRecord;
use crate::domain::timestamp;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView<'a> {
    id: Uuid,
    action: &'a str,
    #[serde(with = "timestamp")]
    occurred_at: DateTime<Utc>,
    actor: ActorView<'a>,
    target: TargetView<'a>,
    project_id: Option<Uuid>,
    ip: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
    /// `key.updated` only: each changed field, `{"from": …, "to": …}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<&'a serde_json::Value>,
    /// A leak's revocation only: `{"reason": "leaked", "url", "source"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActorView<'a> {
    #[serde(rename = "type")]
    actor_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<&'a str>,
    /// `secret_scanning` only: the provider that reported the leak.
    #[serde(skip_serializing_if = "Option::is_none")]
    provider: Option<&'a str>,
}

#[derive(Serialize)]
struct TargetView<'a> {
    #[serde(rename = "type")]
    target_type: &'a str,
    id: Uuid,
}

impl<'a> From<&'a AuditEventRecord> for EventView<'a> {
    fn from(event: &'a AuditEventRecord) -> Self {
        EventView {
            id: event.id,
            action: &event.action,
            occurred_at: event.occurred_at,
            actor: ActorView {
                actor_type: &event.actor_type,
                key_id: event.actor_key_id,
                prefix: event.actor_prefix.as_deref(),
                provider: event.actor_provider.as_deref(),
            },
            target: TargetView {
                target_type: &event.target_type,
                id: event.target_id,
            },
            project_id: event.project_id,
            ip: event.ip.as_deref(),
            user_agent: event.user_agent.as_deref(),
            request_id: event.request_id.as_deref(),
            changes: event.changes.as_ref(),
            details: event.details.as_ref(),
        }
    }
}
