//! `POST` and `GET /api/v1/webhook-endpoints`, `DELETE …/{id}`, `POST …/{id}/test`.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::events::CreateEndpointRequest;
use super::{endpoint_not_found, path_id};
use crate::access::{Authenticated, MasterOnly};
use crate::audit::AuditContext;
use crate::domain::timestamp;
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::request_id::RequestId;
use crate::routes::body::JsonBody;
use crate::routes::responses::listed;
use crate::state::AppState;
use crate::store::{CreateEndpointError, EndpointRecord, NewEndpoint};
use crate::webhooks::{new_secret, resolve, TargetRefused, TargetUrl};

/// How long creation waits for the URL's host to resolve. A name that doesn't resolve in time
/// (or at all) is accepted: nothing is sent until a delivery resolves it, and every delivery
/// checks the addresses again.
const RESOLVE_AT_CREATION: Duration = Duration::from_secs(5);

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EndpointView<'a> {
    id: Uuid,
    url: &'a str,
    events: &'a [String],
    #[serde(with = "timestamp")]
    created_at: DateTime<Utc>,
}

impl<'a> From<&'a EndpointRecord> for EndpointView<'a> {
    fn from(record: &'a EndpointRecord) -> Self {
        EndpointView {
            id: record.id,
            url: &record.url,
            events: &record.events,
            created_at: record.created_at,
        }
    }
}

/// The only answer that shows the secret.
#[derive(Serialize)]
struct CreatedEndpoint<'a> {
    #[serde(flatten)]
    endpoint: EndpointView<'a>,
    secret: &'a str,
    request_id: RequestId,
}

pub(super) async fn create_endpoint(
    caller: Authenticated<MasterOnly>,
    body: JsonBody,
    req: HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let settings = &state.settings.webhooks;
    let request = CreateEndpointRequest::parse(body.0, settings.allow_http)?;
    refuse_forbidden_target(&request.url, settings.allow_private_targets).await?;
    let (shown, secret) = new_secret();
    let context = AuditContext::of_key(
        &caller.identity,
        &req,
        &state.settings.server.trusted_proxies,
        request_id,
    );
    let new = NewEndpoint {
        organization_id: caller.identity.organization_id,
        url: request.url.as_str(),
        events: &request.events,
        secret: secret.as_bytes(),
    };
    let limit = settings.max_endpoints_per_org.get();
    let record = state
        .store
        .create_webhook_endpoint(new, limit, &context)
        .await
        .map_err(|error| match error {
            CreateEndpointError::LimitReached(limit) => ApiError::new(
                ErrorCode::Conflict,
                format!(
                    "The organization already has {limit} webhook endpoints, the maximum; delete one first"
                ),
            ),
            CreateEndpointError::Store(error) => error.into(),
        })?;
    Ok(HttpResponse::Created().json(CreatedEndpoint {
        endpoint: EndpointView::from(&record),
        secret: &shown,
        request_id,
    }))
}

/// 400 for a target that is, or resolves to, an address never contacted (unless
/// `webhooks.allow_private_targets`). Deliveries check again, at every attempt.
async fn refuse_forbidden_target(url: &TargetUrl, allow_private: bool) -> Result<(), ApiError> {
    let resolved = tokio::time::timeout(RESOLVE_AT_CREATION, resolve(url, allow_private)).await;
    match resolved {
        Ok(Err(refused @ TargetRefused::Forbidden { .. })) => Err(ApiError::validation(
            "Invalid request body",
            vec![FieldError::new("url", refused.message())],
        )),
        Ok(Ok(_)) | Ok(Err(TargetRefused::Unresolved { .. })) | Err(_) => Ok(()),
    }
}

pub(super) async fn list_endpoints(
    caller: Authenticated<MasterOnly>,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let records = state
        .store
        .list_webhook_endpoints(caller.identity.organization_id)
        .await?;
    let endpoints = records.iter().map(EndpointView::from).collect();
    Ok(listed("endpoints", endpoints, request_id))
}

#[derive(Serialize)]
struct Deleted {
    deleted: bool,
    request_id: RequestId,
}

pub(super) async fn delete_endpoint(
    caller: Authenticated<MasterOnly>,
    req: HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let endpoint = path_id(&req, "id")?;
    let context = AuditContext::of_key(
        &caller.identity,
        &req,
        &state.settings.server.trusted_proxies,
        request_id,
    );
    let deleted = state
        .store
        .delete_webhook_endpoint(caller.identity.organization_id, endpoint, &context)
        .await?;
    if !deleted {
        return Err(endpoint_not_found());
    }
    Ok(HttpResponse::Ok().json(Deleted {
        deleted: true,
        request_id,
    }))
}

#[derive(Serialize)]
struct Queued {
    request_id: RequestId,
}

pub(super) async fn test_endpoint(
    caller: Authenticated<MasterOnly>,
    req: HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let endpoint = path_id(&req, "id")?;
    let queued = state
        .store
        .queue_webhook_test(caller.identity.organization_id, endpoint)
        .await?;
    if !queued {
        return Err(endpoint_not_found());
    }
    Ok(HttpResponse::Accepted().json(Queued { request_id }))
}
