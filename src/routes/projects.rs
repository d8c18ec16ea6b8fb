//! `/api/v1/projects`: create and list the caller's organization's projects (master key only).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::body::JsonBody;
use crate::access::{Authenticated, MasterOnly};
use crate::audit::AuditContext;
use crate::domain::timestamp;
use crate::domain::ProjectId;
use crate::error::ApiError;
use crate::metrics::counted_resource;
use crate::request_id::RequestId;
use crate::state::AppState;
use crate::store::ProjectRecord;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        counted_resource("/projects")
            .route(web::post().to(create_project))
            .route(web::get().to(list_projects)),
    );
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProjectView<'a> {
    id: ProjectId,
    name: &'a str,
    #[serde(with = "timestamp")]
    created_at: DateTime<Utc>,
}

impl<'a> From<&'a ProjectRecord> for ProjectView<'a> {
    fn from(record: &'a ProjectRecord) -> Self {
        ProjectView {
            id: record.id,
            name: &record.name,
            created_at: record.created_at,
        }
    }
}

#[derive(Serialize)]
struct CreatedProject<'a> {
    #[serde(flatten)]
    project: ProjectView<'a>,
    request_id: RequestId,
}

async fn create_project(
    caller: Authenticated<MasterOnly>,
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let name = body.name()?;
    let context = AuditContext::of_key(
        &caller.identity,
        &req,
        &state.settings.server.trusted_proxies,
        request_id,
    );
    let record = state
        .store
        .create_project(caller.identity.organization_id, &name, &context)
        .await?
        .ok_or_else(|| ApiError::not_found("Organization not found"))?;
    Ok(HttpResponse::Created().json(CreatedProject {
        project: ProjectView::from(&record),
        request_id,
    }))
}

async fn list_projects(
    caller: Authenticated<MasterOnly>,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let records = state
        .store
        .list_projects(caller.identity.organization_id)
        .await?;
    let projects = records.iter().map(ProjectView::from).collect();
    Ok(super::responses::listed("projects", projects, request_id))
}
