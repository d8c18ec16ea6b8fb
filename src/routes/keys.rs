//! `/api/v1/keys`: create (master only), list, revoke and roll (master or project key).

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::body::{Fields, JsonBody, OptionalJsonBody};
use super::timestamp;
use crate::access::{AnyKey, Authenticated, MasterOnly};
use crate::actors::{Claim, CreateKey, RevokeKey, RollKey};
use crate::audit::AuditContext;
use crate::domain::{parse_expiry, DisplayName, Identity, KeyId, KeyType, ProjectId};
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::metrics::counted_resource;
use crate::request_id::RequestId;
use crate::state::AppState;
use crate::store::{CreateKeyError, KeyRecord, NotRollable, RevokeError, RollError};

/// A roll's default overlap, and the longest allowed (one week).
const DEFAULT_OVERLAP_SECONDS: u64 = 3600;
const MAX_OVERLAP_SECONDS: u64 = 604_800;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        counted_resource("/keys")
            .route(web::post().to(create_key))
            .route(web::get().to(list_keys)),
    )
    .service(counted_resource("/keys/{id}").route(web::delete().to(revoke_key)))
    .service(counted_resource("/keys/{id}/roll").route(web::post().to(roll_key)));
}

/// The create body, parsed: holding one means every field was valid.
struct CreateKeyRequest {
    project_id: ProjectId,
    name: DisplayName,
    expires_at: Option<DateTime<Utc>>,
}

impl CreateKeyRequest {
    fn parse(body: Value) -> Result<CreateKeyRequest, ApiError> {
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
        fields.finish()?;
        match (project_id, key_type, name) {
            (Some(project_id), Some(()), Some(name)) => Ok(CreateKeyRequest {
                project_id,
                name,
                expires_at,
            }),
            _ => unreachable!("finish() reports any missing field"),
        }
    }
}

/// The key id in the path.
fn key_id(path: &str) -> Result<KeyId, ApiError> {
    KeyId::parse(path).ok_or_else(|| {
        ApiError::validation(
            "Invalid key id",
            vec![FieldError::new("id", "must be a UUID")],
        )
    })
}

/// Who is asking, for the change's audit event.
fn audit_context(
    identity: &Identity,
    req: &HttpRequest,
    state: &AppState,
    request_id: RequestId,
) -> AuditContext {
    AuditContext::of_key(
        identity,
        req,
        &state.settings.server.trusted_proxies,
        request_id,
    )
}

#[derive(Serialize)]
struct CreatedKeyResponse<'a> {
    key: &'a str,
    prefix: &'a str,
    #[serde(rename = "type")]
    key_type: &'static str,
    name: &'a str,
    request_id: RequestId,
}

async fn create_key(
    caller: Authenticated<MasterOnly>,
    body: JsonBody,
    req: HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let request = CreateKeyRequest::parse(body.0)?;
    let org = caller.identity.organization_id;
    let created = state
        .org_actors
        .ask(
            org,
            CreateKey {
                project_id: request.project_id,
                name: request.name,
                expires_at: request.expires_at,
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
        request_id,
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeyView<'a> {
    id: KeyId,
    prefix: &'a str,
    #[serde(rename = "type")]
    key_type: &'static str,
    name: &'a str,
    #[serde(serialize_with = "timestamp::option::serialize")]
    last_used_at: Option<DateTime<Utc>>,
    #[serde(with = "timestamp")]
    created_at: DateTime<Utc>,
    #[serde(serialize_with = "timestamp::option::serialize")]
    revoked_at: Option<DateTime<Utc>>,
    #[serde(serialize_with = "timestamp::option::serialize")]
    expires_at: Option<DateTime<Utc>>,
}

impl<'a> From<&'a KeyRecord> for KeyView<'a> {
    fn from(record: &'a KeyRecord) -> Self {
        KeyView {
            id: record.id,
            prefix: record.prefix.as_str(),
            key_type: record.key_type.as_str(),
            name: record.name.as_str(),
            last_used_at: record.last_used_at,
            created_at: record.created_at,
            revoked_at: record.revoked_at,
            expires_at: record.expires_at,
        }
    }
}

async fn list_keys(
    caller: Authenticated<AnyKey>,
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
    Ok(super::responses::listed("keys", keys, request_id))
}

#[derive(Serialize)]
struct Revoked {
    revoked: bool,
    request_id: RequestId,
}

async fn revoke_key(
    caller: Authenticated<AnyKey>,
    path: web::Path<String>,
    req: HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let key_id = key_id(&path)?;
    let identity = caller.identity;
    state
        .org_actors
        .ask(
            identity.organization_id,
            RevokeKey {
                key_id,
                scope: identity.project_id,
                context: audit_context(&identity, &req, &state, request_id),
                claim: Claim::default(),
            },
        )
        .await?
        .map_err(|error| match error {
            RevokeError::NotFound => ApiError::not_found("Key not found"),
            RevokeError::MasterKey => ApiError::new(
                ErrorCode::Forbidden,
                "Master keys cannot be revoked through the API",
            ),
            RevokeError::Store(error) => error.into(),
        })?;
    Ok(HttpResponse::Ok().json(Revoked {
        revoked: true,
        request_id,
    }))
}

fn limit_reached(limit: i64) -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        format!("The organization already has {limit} active keys, the maximum; revoke one first"),
    )
}

/// The roll body: absent, or an object with an optional `overlap_seconds`.
fn overlap(body: Option<Value>) -> Result<chrono::Duration, ApiError> {
    let seconds = match body {
        None => DEFAULT_OVERLAP_SECONDS,
        Some(body) => {
            let mut fields = Fields::of(body)?;
            let seconds = fields.optional_integer("overlap_seconds", 0..=MAX_OVERLAP_SECONDS);
            fields.finish()?;
            seconds.unwrap_or(DEFAULT_OVERLAP_SECONDS)
        }
    };
    Ok(chrono::Duration::seconds(
        i64::try_from(seconds).expect("at most a week"),
    ))
}

#[derive(Serialize)]
struct RolledKeyResponse<'a> {
    key: &'a str,
    prefix: &'a str,
    #[serde(rename = "type")]
    key_type: &'static str,
    name: &'a str,
    request_id: RequestId,
    replaces: Replaced,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Replaced {
    id: KeyId,
    #[serde(with = "timestamp")]
    expires_at: DateTime<Utc>,
}

async fn roll_key(
    caller: Authenticated<AnyKey>,
    path: web::Path<String>,
    body: OptionalJsonBody,
    req: HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let key_id = key_id(&path)?;
    let overlap = overlap(body.0)?;
    let identity = caller.identity;
    let rolled = state
        .org_actors
        .ask(
            identity.organization_id,
            RollKey {
                key_id,
                scope: identity.project_id,
                overlap,
                context: audit_context(&identity, &req, &state, request_id),
                claim: Claim::default(),
            },
        )
        .await?
        .map_err(|error| match error {
            RollError::NotFound => ApiError::not_found("Key not found"),
            RollError::MasterKey => ApiError::new(
                ErrorCode::Forbidden,
                "Master keys cannot be rolled through the API",
            ),
            RollError::NotRollable(why) => ApiError::new(
                ErrorCode::Conflict,
                match why {
                    NotRollable::Revoked => "The key is revoked and cannot be rolled",
                    NotRollable::Expired => "The key has expired and cannot be rolled",
                    NotRollable::AlreadyRolled => {
                        "The key was already rolled; roll its replacement instead"
                    }
                },
            ),
            RollError::LimitReached(limit) => limit_reached(limit),
            RollError::Store(error) => error.into(),
        })?;
    Ok(HttpResponse::Created().json(RolledKeyResponse {
        key: rolled.key.expose(),
        prefix: rolled.record.prefix.as_str(),
        key_type: rolled.record.key_type.as_str(),
        name: rolled.record.name.as_str(),
        request_id,
        replaces: Replaced {
            id: rolled.replaced,
            expires_at: rolled.replaced_expires_at,
        },
    }))
}
