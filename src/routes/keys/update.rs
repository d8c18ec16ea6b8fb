//! `PATCH /api/v1/keys/{id}`: change a key's name, scopes, expiry, enabled state or rate
//! limit. Master key, or a project key holding `keys.write` for its own project's keys, held
//! to what it may itself do (no escalation; the rules are the store's, `store/keys/update.rs`).

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Serialize;
use serde_json::{Map, Value};

use super::scopes::read_scopes;
use super::view::{
    beyond_caller, caller_refused, key_not_found, master_key_refused, not_changeable, KeyChange,
    KeyView,
};
use crate::actors::{Claim, UpdateKey};
use crate::domain::{
    parse_expiry, DisplayName, KeyRateLimit, ScopeCatalog, MAX_BURST, MAX_REQUESTS_PER_SECOND,
};
use crate::error::{ApiError, FieldError};
use crate::request_id::RequestId;
use crate::routes::body::{Fields, JsonBody};
use crate::state::AppState;
use crate::store::{KeyPatch, UpdateError};

/// The fields a PATCH may name; a body naming none of them changes nothing and is refused.
const FIELDS: [&str; 5] = ["name", "scopes", "expires_at", "enabled", "rate_limit"];

fn parse_patch(body: Value, catalog: &ScopeCatalog) -> Result<KeyPatch, ApiError> {
    let mut fields = Fields::of(body)?;
    if !fields.names_any(&FIELDS) {
        return Err(ApiError::validation(
            "Nothing to change",
            vec![FieldError::new(
                "body",
                "must name at least one of name, scopes, expires_at, enabled, rate_limit",
            )],
        ));
    }
    let mut patch = KeyPatch::default();
    match fields.value("name") {
        None => {}
        // A name can be changed, not removed.
        Some(Value::Null) => fields.refuse("name", "must be a string of 1-100 characters"),
        Some(_) => patch.name = fields.required("name", DisplayName::parse),
    }
    patch.scopes = read_scopes(&mut fields, catalog);
    patch.expires_at = match fields.value("expires_at") {
        None => None,
        Some(Value::Null) => Some(None),
        Some(_) => fields
            .optional("expires_at", |raw| parse_expiry(raw, Utc::now()))
            .map(Some),
    };
    match fields.value("enabled").cloned() {
        None => {}
        Some(Value::Bool(enabled)) => patch.enabled = Some(enabled),
        Some(_) => fields.refuse("enabled", "must be true or false"),
    }
    patch.rate_limit = match fields.value("rate_limit").cloned() {
        None => None,
        Some(Value::Null) => Some(None),
        Some(Value::Object(limit)) => read_rate_limit(&mut fields, &limit).map(Some),
        Some(_) => {
            fields.refuse(
                "rate_limit",
                "must be {\"requests_per_second\": r, \"burst\": b} or null",
            );
            None
        }
    };
    fields.finish()?;
    Ok(patch)
}

/// `{"requests_per_second": r, "burst": b}`: r a number, 0 < r ≤ 1,000,000; b an integer,
/// 1 ≤ b ≤ 1,000,000; both required.
fn read_rate_limit(fields: &mut Fields, limit: &Map<String, Value>) -> Option<KeyRateLimit> {
    let rate = match limit.get("requests_per_second").map(Value::as_f64) {
        Some(Some(rate)) if rate > 0.0 && rate <= MAX_REQUESTS_PER_SECOND => Some(rate),
        None => {
            fields.refuse("rate_limit.requests_per_second", "is required");
            None
        }
        Some(_) => {
            fields.refuse(
                "rate_limit.requests_per_second",
                "must be a number above 0 and at most 1000000",
            );
            None
        }
    };
    let burst = match limit.get("burst").map(Value::as_u64) {
        Some(Some(burst)) if (1..=u64::from(MAX_BURST)).contains(&burst) => Some(burst as u32),
        None => {
            fields.refuse("rate_limit.burst", "is required");
            None
        }
        Some(_) => {
            fields.refuse("rate_limit.burst", "must be an integer from 1 to 1000000");
            None
        }
    };
    KeyRateLimit::new(rate?, burst?).ok()
}

#[derive(Serialize)]
struct Updated<'a> {
    #[serde(flatten)]
    key: KeyView<'a>,
    request_id: RequestId,
}

pub(super) async fn update_key(
    change: KeyChange,
    body: JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let patch = parse_patch(body.0, &state.scope_catalog)?;
    let answer = change
        .ask(&state, |target| UpdateKey {
            target,
            patch: Arc::new(patch),
            claim: Claim::default(),
        })
        .await?;
    let record = answer.map_err(update_refused)?;
    Ok(HttpResponse::Ok().json(Updated {
        key: KeyView::from(&record),
        request_id: RequestId::current(),
    }))
}

fn update_refused(error: UpdateError) -> ApiError {
    match error {
        UpdateError::NotFound => key_not_found(),
        UpdateError::MasterKey => master_key_refused("updated"),
        UpdateError::Revoked => not_changeable("is revoked", "updated"),
        UpdateError::Expired => not_changeable("has expired", "updated"),
        UpdateError::Forbidden(refused) => beyond_caller(refused),
        UpdateError::Caller(refusal) => caller_refused(refusal),
        UpdateError::Store(error) => error.into(),
    }
}
