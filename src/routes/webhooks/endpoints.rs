//! `POST` and `GET /api/v1/webhook-endpoints`, `DELETE …/{id}`, `POST …/{id}/test`.

use std::time::Duration;

use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::caller::{endpoint_not_found, EndpointCaller, EndpointTarget};
use super::events::CreateEndpointRequest;
use crate::domain::timestamp;
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::outbound::{resolve, TargetRefused, TargetUrl};
use crate::request_id::RequestId;
use crate::routes::body::JsonBody;
use crate::routes::responses::listed;
use crate::store::{CreateEndpointError, EndpointRecord, NewEndpoint};
use crate::webhooks::new_secret;

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

/// `POST /webhook-endpoints`: 201 with the secret, shown here only.
pub(super) async fn create_endpoint(
    caller: EndpointCaller,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let state = &caller.state;
    let settings = &state.settings.webhooks;
    let request = CreateEndpointRequest::parse(body.0, settings.allow_http)?;
    refuse_forbidden_target(&request.url, settings.allow_private_targets).await?;
    let (shown, secret) = new_secret();
    let new = NewEndpoint {
        organization_id: caller.organization_id,
        url: request.url.as_str(),
        events: &request.events,
        secret: secret.as_bytes(),
    };
    let limit = settings.max_endpoints_per_org.get();
    let record = state
        .store
        .create_webhook_endpoint(new, limit, &caller.context)
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
        request_id: RequestId::current(),
    }))
}

/// 400 for a target that is, or resolves to, an address never contacted (unless
/// `webhooks.allow_private_targets`). Deliveries check again, at every attempt.
async fn refuse_forbidden_target(url: &TargetUrl, allow_private: bool) -> Result<(), ApiError> {
    if allow_private {
        return Ok(());
    }
    let resolved = tokio::time::timeout(RESOLVE_AT_CREATION, resolve(url, allow_private)).await;
    match resolved {
        Ok(Err(refused @ TargetRefused::Forbidden { .. })) => Err(ApiError::validation(
            "Invalid request body",
            vec![FieldError::new("url", refused.message())],
        )),
        Ok(Ok(_)) | Ok(Err(TargetRefused::Unresolved { .. })) | Err(_) => Ok(()),
    }
}

/// `GET /webhook-endpoints`: the organization's endpoints, newest first, never a secret.
pub(super) async fn list_endpoints(caller: EndpointCaller) -> Result<HttpResponse, ApiError> {
    let store = &caller.state.store;
    let records = store.list_webhook_endpoints(caller.organization_id).await?;
    let views = records.iter().map(EndpointView::from).collect();
    Ok(listed("endpoints", views, RequestId::current()))
}

#[derive(Serialize)]
struct Deleted {
    deleted: bool,
    request_id: RequestId,
}

/// `DELETE /webhook-endpoints/{id}`: the endpoint and its undelivered deliveries go.
pub(super) async fn delete_endpoint(target: EndpointTarget) -> Result<HttpResponse, ApiError> {
    let caller = &target.caller;
    let deleted = caller
        .state
        .store
        .delete_webhook_endpoint(caller.organization_id, target.endpoint, &caller.context)
        .await?;
    if !deleted {
        return Err(endpoint_not_found());
    }
    Ok(HttpResponse::Ok().json(Deleted {
        deleted: true,
        request_id: RequestId::current(),
    }))
}

#[derive(Serialize)]
struct Queued {
    request_id: RequestId,
}

/// `POST /webhook-endpoints/{id}/test`: 202 once a `webhook.test` delivery is queued.
pub(super) async fn test_endpoint(target: EndpointTarget) -> Result<HttpResponse, ApiError> {
    let (store, org) = (&target.caller.state.store, target.caller.organization_id);
    if !store.queue_webhook_test(org, target.endpoint).await? {
        return Err(endpoint_not_found());
    }
    Ok(HttpResponse::Accepted().json(Queued {
        request_id: RequestId::current(),
    }))
}
