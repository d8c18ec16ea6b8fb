//! What the key routes share: a key as the list shows it (also the PATCH answer), the key id
//! in the path, who is asking (for the audit event), and the answers to a target that isn't
//! there or can't be changed.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::access::{authorize, insufficient_scope, AuthFailure, KeysWrite, Permission};
use crate::actors::{Claimed, KeyTarget, OrgActor};
use crate::audit::AuditContext;
use crate::domain::timestamp;
use crate::domain::{Identity, KeyId, KeyRateLimit, Scopes};
use crate::error::{ApiError, ErrorCode, FieldError};
use crate::request_id::RequestId;
use crate::state::AppState;
use crate::store::{Caller, CallerRefusal, KeyRecord};
use actix::dev::ToEnvelope;
use actix::{Actor, Handler, Message};

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
fn key_id(path: &str) -> Result<KeyId, ApiError> {
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

/// A change to one key, as revoke, roll and update take it: a caller holding `keys.write`,
/// the key the path names, and who is asking for the audit event. Checked in that order.
pub(super) struct KeyChange {
    pub(super) caller: Identity,
    pub(super) target: KeyTarget,
}

impl FromRequest for KeyChange {
    type Error = ApiError;
    type Future = Ready<Result<KeyChange, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let change = || {
            let caller = authorize(req, KeysWrite::allows, KeysWrite::SCOPE)?;
            let key_id = key_id(req.match_info().get("id").unwrap_or_default())?;
            let state = req
                .app_data::<web::Data<AppState>>()
                .expect("AppState is registered by the app factory");
            let target = KeyTarget {
                key_id,
                scope: caller.project_id,
                context: audit_context(&caller, req, state, RequestId::current()),
                caller: Caller {
                    key_id: caller.key_id,
                    project_default: caller.project_id.map(|project| {
                        let limit = state.key_rate_limits.limit_of(Some(project), None);
                        KeyRateLimit {
                            requests_per_second: limit.per_second,
                            burst: limit.burst,
                        }
                    }),
                },
            };
            Ok(KeyChange { caller, target })
        };
        ready(change())
    }
}

impl KeyChange {
    /// Sends the change, made from its target, to the caller's organization's actor: its
    /// answer, once every instance acknowledged what needs acknowledging.
    pub(super) async fn ask<M>(
        self,
        state: &AppState,
        message: impl FnOnce(KeyTarget) -> M,
    ) -> Result<M::Answer, ApiError>
    where
        M: Message + Claimed + Clone + Send + 'static,
        M::Result: Send,
        OrgActor: Handler<M>,
        <OrgActor as Actor>::Context: ToEnvelope<OrgActor, M>,
    {
        let org = self.caller.organization_id;
        Ok(state.org_actors.ask(org, message(self.target)).await?)
    }
}

/// The caller's own state changed since its request authenticated: answered as that state
/// would be answered now.
pub(super) fn caller_refused(refusal: CallerRefusal) -> ApiError {
    match refusal {
        CallerRefusal::Revoked => AuthFailure::Revoked.into(),
        CallerRefusal::Expired => AuthFailure::Expired.into(),
        CallerRefusal::Disabled => AuthFailure::Disabled.into(),
        CallerRefusal::LacksScope(scope) => insufficient_scope(scope),
    }
}

/// A project key asked for more than it may hand on: 403 with a detail per field.
pub(super) fn beyond_caller(refused: Vec<FieldError>) -> ApiError {
    ApiError::new(ErrorCode::Forbidden, "This key may not make these changes").with_details(refused)
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

/// 409: the key can't take this change in its state ("revoked", "expired", …).
pub(super) fn not_changeable(why: &str, verb: &str) -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        format!("The key {why} and cannot be {verb}"),
    )
}

pub(super) fn limit_reached(limit: i64) -> ApiError {
    ApiError::new(
        ErrorCode::Conflict,
        format!("The organization already has {limit} active keys, the maximum; revoke one first"),
    )
}
