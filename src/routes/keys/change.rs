//! `DELETE /api/v1/keys/{id}` and `POST /api/v1/keys/{id}/roll`: master key, or a project key
//! holding `keys.write` for its own project's keys.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::view::{
    beyond_caller, caller_refused, key_not_found, limit_reached, master_key_refused,
    not_changeable, KeyChange,
};
use crate::actors::{Claim, RevokeKey, RollKey};
use crate::domain::timestamp;
use crate::domain::KeyId;
use crate::error::{ApiError, ErrorCode};
use crate::request_id::RequestId;
use crate::routes::body::{Fields, OptionalJsonBody};
use crate::state::AppState;
use crate::store::{NotRollable, RevokeError, RollError};

/// A roll's default overlap, and the longest allowed (one week).
const DEFAULT_OVERLAP_SECONDS: u64 = 3600;
const MAX_OVERLAP_SECONDS: u64 = 604_800;

#[derive(Serialize)]
struct Revoked {
    revoked: bool,
    request_id: RequestId,
}

pub(super) async fn revoke_key(
    change: KeyChange,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let answer = change
        .ask(&state, |target| RevokeKey {
            target,
            claim: Claim::default(),
        })
        .await?;
    answer.map_err(|error| match error {
        RevokeError::NotFound => key_not_found(),
        RevokeError::MasterKey => master_key_refused("revoked"),
        RevokeError::Caller(refusal) => caller_refused(refusal),
        RevokeError::Store(error) => error.into(),
    })?;
    Ok(HttpResponse::Ok().json(Revoked {
        revoked: true,
        request_id: RequestId::current(),
    }))
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

pub(super) async fn roll_key(
    change: KeyChange,
    body: OptionalJsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let overlap = overlap(body.0)?;
    let answer = change
        .ask(&state, |target| RollKey {
            target,
            overlap,
            claim: Claim::default(),
        })
        .await?;
    let rolled = answer.map_err(roll_refused)?;
    Ok(HttpResponse::Created().json(RolledKeyResponse {
        key: rolled.key.expose(),
        prefix: rolled.record.prefix.as_str(),
        key_type: rolled.record.key_type.as_str(),
        name: rolled.record.name.as_str(),
        request_id: RequestId::current(),
        replaces: Replaced {
            id: rolled.replaced,
            expires_at: rolled.replaced_expires_at,
        },
    }))
}

fn roll_refused(error: RollError) -> ApiError {
    match error {
        RollError::NotFound => key_not_found(),
        RollError::MasterKey => master_key_refused("rolled"),
        RollError::NotRollable(NotRollable::Revoked) => not_changeable("is revoked", "rolled"),
        RollError::NotRollable(NotRollable::Expired) => not_changeable("has expired", "rolled"),
        RollError::NotRollable(NotRollable::AlreadyRolled) => ApiError::new(
            ErrorCode::Conflict,
            "The key was already rolled; roll its replacement instead",
        ),
        RollError::LimitReached(limit) => limit_reached(limit),
        RollError::Caller(refusal) => caller_refused(refusal),
        RollError::Forbidden(refused) => beyond_caller(refused),
        RollError::Store(error) => error.into(),
    }
}
