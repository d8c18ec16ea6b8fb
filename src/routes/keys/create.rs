//! `POST /api/v1/keys` (master key) and `GET /api/v1/keys` (any key holding `keys.read`).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::scopes::read_scopes;
use super::view::{audit_context, limit_reached, KeyView};
use crate::access::{Authenticated, KeysRead, MasterOnly};
use crate::actors::{Claim, CreateKey};
use crate::domain::{parse_expiry, DisplayName, KeyType, ProjectId, ScopeCatalog, Scopes};
use crate::error::ApiError;
use crate::request_id::RequestId;
use crate::routes::body::{Fields, JsonBody};
use crate::routes::responses::listed;
use crate::state::AppState;
use crate::store::CreateKeyError;

/// The create body, parsed: holding one means every field was valid.
struct CreateKeyRequest {
    project_id: ProjectId,
    name: DisplayName,
    expires_at: Option<DateTime<Utc>>,
    scopes: Scopes,
}

impl CreateKeyRequest {
    fn parse(body: Value, catalog: &ScopeCatalog) -> Result<CreateKeyRequest, ApiError> {
        let mut fields = Fields::of(body)?;
        let project_id = fields.required("project_id", |raw| {
            ProjectId::parse(raw).ok_or_else(|| "must be a UUID".to_owned())
        });
        let key_type = fields.required("type", |raw| match KeyType::from_name(raw) {
            Some(KeyType::Project) => Ok(()),
            _ => Err(r#"must be "project" (the only type that can be created)"#.to_owned()),
        });
        let name = fields.required("name", DisplayName::parse);
        let now = Utc::now();
        let expires_at = fields.optional("expires_at", |raw| parse_expiry(raw, now));
        // Omitted: every scope, as before scopes existed.
        let scopes = read_scopes(&mut fields, catalog).unwrap_or(Scopes::All);
        fields.finish()?;
        match (project_id, key_type, name) {
            (Some(project_id), Some(()), Some(name)) => Ok(CreateKeyRequest {
                project_id,
                name,
                expires_at,
                scopes,
            }),
            _ => unreachable!("finish() reports any missing field"),
        }
    }
}

#[derive(Serialize)]
struct CreatedKeyResponse<'a> {
    key: &'a str,
    prefix: &'a str,
    #[serde(rename = "type")]
    key_type: &'static str,
    name: &'a str,
    scopes: &'a Scopes,
    request_id: RequestId,
}

pub(super) async fn create_key(
    caller: Authenticated<MasterOnly>,
    body: JsonBody,
    req: HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let request = CreateKeyRequest::parse(body.0, &state.scope_catalog)?;
    let org = caller.identity.organization_id;
    let created = state
        .org_actors
        .ask(
            org,
            CreateKey {
                project_id: request.project_id,
                name: request.name,
                expires_at: request.expires_at,
                scopes: request.scopes,
                context: audit_context(&caller.identity, &req, &state, request_id),
                claim: Claim::default(),
            },
        )
        .await?
        .map_err(|error| match error {
            CreateKeyError::ProjectNotFound => ApiError::not_found("Project not found"),
            CreateKeyError::LimitReached(limit) => limit_reached(limit),
            CreateKeyError::Store(error) => error.into(),
        })?;
    Ok(HttpResponse::Created().json(CreatedKeyResponse {
        key: created.key.expose(),
        prefix: created.record.prefix.as_str(),
        key_type: created.record.key_type.as_str(),
        name: created.record.name.as_str(),
        scopes: &created.record.scopes,
        request_id,
    }))
}

pub(super) async fn list_keys(
    caller: Authenticated<KeysRead>,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let identity = caller.identity;
    // A master key sees the whole organization; a project key, its own project.
    let records = state
        .store
        .list_keys(identity.organization_id, identity.project_id)
        .await?;
    let keys = records.iter().map(KeyView::from).collect();
    Ok(listed("keys", keys, request_id))
}
