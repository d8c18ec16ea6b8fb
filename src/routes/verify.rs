//! `GET /api/v1/auth/verify`: the shared hot path as an endpoint, usable as an nginx
//! `auth_request` or Envoy ext_authz target. Identity in the body and in headers.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::timestamp;
use crate::access::{AnyKey, Authenticated};
use crate::domain::{KeyId, OrgId, ProjectId};
use crate::metrics::counted_resource;
use crate::request_id::RequestId;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(counted_resource("/auth/verify").route(web::get().to(verify)));
}

#[derive(Serialize)]
struct Verified {
    valid: bool,
    key_id: KeyId,
    organization_id: OrgId,
    project_id: Option<ProjectId>,
    #[serde(rename = "type")]
    key_type: &'static str,
    #[serde(serialize_with = "timestamp::option::serialize")]
    expires_at: Option<DateTime<Utc>>,
    request_id: RequestId,
}

async fn verify(caller: Authenticated<AnyKey>, request_id: RequestId) -> HttpResponse {
    let identity = caller.identity;
    let mut answer = HttpResponse::Ok();
    for header in identity.headers() {
        answer.insert_header(header);
    }
    answer.json(Verified {
        valid: true,
        key_id: identity.key_id,
        organization_id: identity.organization_id,
        project_id: identity.project_id,
        key_type: identity.key_type.as_str(),
        expires_at: identity.expires_at,
        request_id,
    })
}
