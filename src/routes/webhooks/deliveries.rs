//! `GET /api/v1/webhook-endpoints/{id}/deliveries` (newest first, keyset pages like the audit
//! trail) and `POST …/deliveries/{delivery_id}/retry` (a failed delivery queued again).

use actix_web::{HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::caller::{endpoint_not_found, path_id, EndpointTarget};
use crate::domain::timestamp;
use crate::error::{ApiError, ErrorCode};
use crate::request_id::RequestId;
use crate::routes::pages::{encode_cursor, parse_page_query};
use crate::store::{DeliveryRecord, Retried};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryView<'a> {
    id: Uuid,
    /// The audit event delivered; null for `webhook.test`.
    event_id: Option<Uuid>,
    #[serde(rename = "type")]
    event_type: &'a str,
    status: &'a str,
    attempts: i32,
    #[serde(serialize_with = "timestamp::option::serialize")]
    last_attempt_at: Option<DateTime<Utc>>,
    last_status: Option<i32>,
    #[serde(serialize_with = "timestamp::option::serialize")]
    next_attempt_at: Option<DateTime<Utc>>,
}

impl<'a> From<&'a DeliveryRecord> for DeliveryView<'a> {
    fn from(record: &'a DeliveryRecord) -> Self {
        DeliveryView {
            id: record.id,
            event_id: record.event_id,
            event_type: &record.event_type,
            status: &record.status,
            attempts: record.attempts,
            last_attempt_at: record.last_attempt_at,
            last_status: record.last_status,
            next_attempt_at: record.next_attempt_at,
        }
    }
}

#[derive(Serialize)]
struct DeliveryList<'a> {
    deliveries: Vec<DeliveryView<'a>>,
    next_cursor: Option<String>,
    request_id: RequestId,
}

/// `GET …/{id}/deliveries`: `limit` 1–100 (default 50) and `cursor`, as the audit trail.
pub(super) async fn list_deliveries(
    target: EndpointTarget,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = parse_page_query(req.query_string(), "limit, cursor", |_, _| None)?;
    let org = target.caller.organization_id;
    let listed = (target.caller.state)
        .store
        .list_webhook_deliveries(org, target.endpoint, page.after, page.limit)
        .await?
        .ok_or_else(endpoint_not_found)?;
    Ok(HttpResponse::Ok().json(DeliveryList {
        deliveries: listed.deliveries.iter().map(DeliveryView::from).collect(),
        next_cursor: listed.next.map(encode_cursor),
        request_id: RequestId::current(),
    }))
}

#[derive(Serialize)]
struct Requeued {
    id: Uuid,
    status: &'static str,
    request_id: RequestId,
}

/// `POST …/{id}/deliveries/{delivery_id}/retry`: a failed delivery is due again (202);
/// any other is 409.
pub(super) async fn retry_delivery(
    target: EndpointTarget,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let delivery = path_id(&req, "delivery_id")?;
    let org = target.caller.organization_id;
    let retried = (target.caller.state)
        .store
        .retry_webhook_delivery(org, target.endpoint, delivery)
        .await?;
    match retried {
        Retried::Requeued => Ok(HttpResponse::Accepted().json(Requeued {
            id: delivery,
            status: "pending",
            request_id: RequestId::current(),
        })),
        Retried::NotFailed => Err(ApiError::new(
            ErrorCode::Conflict,
            "Only a failed delivery can be retried; this one is pending or delivered",
        )),
        Retried::NotFound => Err(ApiError::not_found("Delivery not found")),
    }
}
