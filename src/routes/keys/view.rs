//! What the key routes share: a key as the list shows it (also the PATCH answer), the key id
//! in the path, who is asking (for the audit event), and the answers to a target that isn't
//! there or can't be changed.

use actix_web::HttpRequest;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::audit::AuditContext;
use crate::domain::{Identity, KeyId, KeyRateLimit, Scopes};
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::request_id::RequestId;
use crate::routes::timestamp;
use crate::state::AppState;
use crate::store::KeyRecord;

/// A list item: the seed's fields, then `expiresAt`, `scopes`, `enabled`, `rateLimit`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KeyView<'a> {
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
    scopes: &'a Scopes,
    enabled: bool,
    rate_limit: Option<KeyRateLimit>,
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
            scopes: &record.scopes,
            enabled: record.enabled,
            rate_limit: record.rate_limit,
        }
    }
}

/// The key id in the path.
pub(super) fn key_id(path: &str) -> Result<KeyId, ApiError> {
    KeyId::parse(path).ok_or_else(|| {
        ApiError::validation(
            "Invalid key id",
            vec![FieldError::new("id", "must be a UUID")],
        )
    })
}

/// Who is asking, for the change's audit event.
pub(super) fn audit_context(
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

/// The key isn't in the caller's scope (or doesn't exist).
pub(super) fn key_not_found() -> ApiError {
    ApiError::not_found("Key not found")
}

/// A master key is the target of a change the API only makes to project keys.
pub(super) fn master_key_refused(verb: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        format!("Master keys cannot be {verb} through the API"),
    )
}

pub(super) fn limit_reached(limit: i64) -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        format!("The organization already has {limit} active keys, the maximum; revoke one first"),
    )
}
