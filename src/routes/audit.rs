//! `GET /api/v1/audit-events`: the organization's audit trail, newest first, a page at a time
//! (master key only).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::timestamp;
use crate::access::{Authenticated, MasterOnly};
use crate::audit::Action;
use crate::error::{ApiError, FieldError};
use crate::metrics::counted_resource;
use crate::request_id::RequestId;
use crate::state::AppState;
use crate::store::{AuditEventRecord, EventPosition, EventQuery};

pub const DEFAULT_LIMIT: u16 = 50;
pub const MAX_LIMIT: u16 = 100;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(counted_resource("/audit-events").route(web::get().to(list_events)));
}

/// The query string, parsed: each parameter at most once, none unknown (a misspelt filter
/// must not quietly widen an audit query to everything).
struct ListRequest {
    limit: u16,
    after: Option<EventPosition>,
    action: Option<Action>,
    target_id: Option<Uuid>,
}

impl ListRequest {
    fn parse(query: &str) -> Result<ListRequest, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|_| {
            ApiError::validation(
                "Invalid query string",
                vec![FieldError::new(
                    "query",
                    "must be URL-encoded name=value pairs",
                )],
            )
        })?;
        let mut request = ListRequest {
            limit: DEFAULT_LIMIT,
            after: None,
            action: None,
            target_id: None,
        };
        let mut seen: Vec<&str> = Vec::new();
        let mut problems = Vec::new();
        for (name, value) in &pairs {
            if seen.contains(&name.as_str()) {
                problems.push(FieldError::new(name.clone(), "may be given only once"));
                continue;
            }
            seen.push(name);
            let problem = match name.as_str() {
                "limit" => parse_limit(value).map(|limit| request.limit = limit),
                "cursor" => decode_cursor(value)
                    .map(|after| request.after = Some(after))
                    .ok_or_else(|| "must be a next_cursor from a previous page".to_owned()),
                "action" => Action::from_name(value)
                    .map(|action| request.action = Some(action))
                    .ok_or_else(|| {
                        let names: Vec<_> = Action::ALL.iter().map(|a| a.as_str()).collect();
                        format!("must be one of {}", names.join(", "))
                    }),
                "target_id" => Uuid::try_parse(value)
                    .map(|id| request.target_id = Some(id))
                    .map_err(|_| "must be a UUID".to_owned()),
                _ => Err(
                    "is not a parameter of this route (limit, cursor, action, target_id)"
                        .to_owned(),
                ),
            };
            if let Err(problem) = problem {
                problems.push(FieldError::new(name.clone(), problem));
            }
        }
        if problems.is_empty() {
            Ok(request)
        } else {
            Err(ApiError::validation("Invalid query parameters", problems))
        }
    }
}

fn parse_limit(raw: &str) -> Result<u16, String> {
    let problem = || format!("must be an integer from 1 to {MAX_LIMIT}");
    if raw.is_empty() || raw.len() > 3 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(problem());
    }
    match raw.parse::<u16>() {
        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(problem()),
    }
}

/// A cursor is the position of a page's last event: its time in microseconds (Postgres's
/// precision) and its id, as 48 hex digits. Opaque to clients; only its shape is checked,
/// since any position within the caller's own organization is harmless.
fn encode_cursor(position: EventPosition) -> String {
    // Events are written by this service, long after 1970: the time is never negative.
    let micros = u64::try_from(position.occurred_at.timestamp_micros()).unwrap_or(0);
    format!("{micros:016x}{}", position.id.simple())
}

fn decode_cursor(raw: &str) -> Option<EventPosition> {
    if raw.len() != 48 || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let micros = i64::try_from(u64::from_str_radix(&raw[..16], 16).ok()?).ok()?;
    let occurred_at = DateTime::<Utc>::from_timestamp_micros(micros)?;
    let id = Uuid::try_parse(&raw[16..]).ok()?;
    Some(EventPosition { occurred_at, id })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventView<'a> {
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
        }
    }
}

#[derive(Serialize)]
struct EventList<'a> {
    events: Vec<EventView<'a>>,
    next_cursor: Option<String>,
    request_id: RequestId,
}

async fn list_events(
    caller: Authenticated<MasterOnly>,
    req: HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let request = ListRequest::parse(req.query_string())?;
    let page = state
        .store
        .list_audit_events(EventQuery {
            organization_id: caller.identity.organization_id,
            action: request.action,
            target_id: request.target_id,
            after: request.after,
            limit: request.limit,
        })
        .await?;
    Ok(HttpResponse::Ok().json(EventList {
        events: page.events.iter().map(EventView::from).collect(),
        next_cursor: page.next.map(encode_cursor),
        request_id,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_to_the_microsecond() {
        let position = EventPosition {
            occurred_at: DateTime::<Utc>::from_timestamp_micros(1_764_590_400_123_456).unwrap(),
            id: Uuid::now_v7(),
        };
        let cursor = encode_cursor(position);
        assert_eq!(cursor.len(), 48);
        assert_eq!(decode_cursor(&cursor), Some(position));
    }

    #[test]
    fn malformed_cursors_are_refused() {
        let good = encode_cursor(EventPosition {
            occurred_at: Utc::now(),
            id: Uuid::now_v7(),
        });
        for bad in [
            "",
            "abc",
            &good[1..],
            &format!("{good}0"),
            &good.replace(&good[..1], "g"),
            "ffffffffffffffff00000000000000000000000000000000",
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad:?} accepted");
        }
    }

    #[test]
    fn limits_are_plain_integers_from_1_to_100() {
        assert_eq!(parse_limit("1"), Ok(1));
        assert_eq!(parse_limit("100"), Ok(100));
        for bad in [
            "0", "101", "", "-1", "+5", " 5", "5.0", "1e2", "0100", "abc",
        ] {
            assert!(parse_limit(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn parameters_are_known_and_given_once() {
        assert!(ListRequest::parse("").is_ok());
        assert!(ListRequest::parse("limit=2&action=key.created").is_ok());
        for bad in [
            "limit=2&limit=3",
            "actoin=key.created",
            "action=key.deleted",
            "target_id=nope",
            "cursor=",
        ] {
            assert!(ListRequest::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
