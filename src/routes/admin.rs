//! `/admin/v1/organizations`: organization setup for sign-up automation and load tests, and
//! `/admin/v1/organizations/{id}/master-key`: a new master key for an organization, its old
//! one revoked. Exists only when `admin.token` is set; authorized by that token, compared in
//! constant time.

use actix_web::http::header::AUTHORIZATION;
use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use secrecy::ExposeSecret;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::body::JsonBody;
use crate::access::{bearer_token, unthrottled_address};
use crate::actors::{Claim, RollMasterKey};
use crate::audit::{Actor, AuditContext};
use crate::domain::{OrgId, ProjectId};
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::metrics::counted_resource;
use crate::request_id::RequestId;
use crate::state::AppState;
use crate::store::MasterKeyRollError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        counted_resource("/admin/v1/organizations").route(web::post().to(create_organization)),
    )
    .service(
        counted_resource("/admin/v1/organizations/{id}/master-key")
            .route(web::post().to(roll_master_key)),
    );
}

/// A caller holding the admin token. First in the handler's arguments and ready at once, so
/// a wrong token is refused 401 before the body is even looked at.
struct AdminCaller;

impl FromRequest for AdminCaller {
    type Error = ApiError;
    type Future = Ready<Result<AdminCaller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req
            .app_data::<web::Data<AppState>>()
            .expect("AppState is registered by the app factory");
        ready(check_admin_token(req, state).map(|()| AdminCaller))
    }
}

fn check_admin_token(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let expected = state.settings.admin.token.expose_secret().as_bytes();
    // The same `Bearer` parsing as keys: one spelling rule for every credential.
    let presented = bearer_token(req.headers().get(AUTHORIZATION))
        .unwrap_or_default()
        .as_bytes();
    if !expected.is_empty() && bool::from(presented.ct_eq(expected)) {
        return Ok(());
    }
    // Wrong tokens count against the address like bad keys, so the token can't be guessed at
    // line rate; the right token is never refused by that throttle (as a valid key isn't).
    if let Some(ip) = unthrottled_address(req, state)? {
        state.failed_auth.record_failure(ip);
    }
    Err(ApiError::new(
        ErrorCode::Unauthorized,
        "A valid admin token is required",
    ))
}

#[derive(Serialize)]
struct CreatedOrganization<'a> {
    organization_id: OrgId,
    project_id: ProjectId,
    master_key: &'a str,
    request_id: RequestId,
}

async fn create_organization(
    _: AdminCaller,
    body: JsonBody,
    req: HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let name = body.name()?;
    let context = AuditContext::of_request(
        Actor::Admin,
        &req,
        &state.settings.server.trusted_proxies,
        request_id,
    );
    let created = state.store.create_organization(&name, &context).await?;
    Ok(HttpResponse::Created().json(CreatedOrganization {
        organization_id: created.organization_id,
        project_id: created.project_id,
        master_key: created.master_key.expose(),
        request_id,
    }))
}

#[derive(Serialize)]
struct RolledMasterKey<'a> {
    organization_id: OrgId,
    master_key: &'a str,
    request_id: RequestId,
}

/// The organization id in the path, refused as a malformed key id is.
fn organization_id(path: &str) -> Result<OrgId, ApiError> {
    OrgId::parse(path).ok_or_else(|| {
        ApiError::validation(
            "Invalid organization id",
            vec![FieldError::new("id", "must be a UUID")],
        )
    })
}

/// A new master key, shown once; the old active one(s) revoked as DELETE revokes a key. The
/// answer comes once every listening instance refuses the old key (or the ack timeout).
async fn roll_master_key(
    _: AdminCaller,
    req: HttpRequest,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let org = organization_id(req.match_info().get("id").unwrap_or_default())?;
    let context = AuditContext::of_request(
        Actor::Admin,
        &req,
        &state.settings.server.trusted_proxies,
        request_id,
    );
    let message = RollMasterKey {
        context,
        claim: Claim::default(),
    };
    let roll = state
        .org_actors
        .ask(org, message)
        .await?
        .map_err(|error| match error {
            MasterKeyRollError::OrganizationNotFound => {
                ApiError::not_found("Organization not found")
            }
            MasterKeyRollError::Store(error) => error.into(),
        })?;
    Ok(HttpResponse::Created().json(RolledMasterKey {
        organization_id: roll.record.organization_id,
        master_key: roll.master_key.expose(),
        request_id,
    }))
}
