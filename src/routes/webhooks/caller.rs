//! Who is calling a webhook route, as every one of them takes it: a master key (anything else
//! is refused first), its organization, the audit context of the call and the state to answer
//! it with; and, for the routes under `/webhook-endpoints/{id}`, the endpoint the path names.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use uuid::Uuid;

use crate::access::{authorize, MasterOnly, Permission};
use crate::audit::AuditContext;
use crate::domain::OrgId;
use crate::error::{ApiError, FieldError};
use crate::request_id::RequestId;
use crate::state::AppState;

/// A master key's call.
pub(super) struct EndpointCaller {
    pub(super) organization_id: OrgId,
    pub(super) context: AuditContext,
    pub(super) state: web::Data<AppState>,
}

impl EndpointCaller {
    fn of(req: &HttpRequest) -> Result<EndpointCaller, ApiError> {
        let identity = authorize(req, MasterOnly::allows, MasterOnly::SCOPE)?;
        let state = req
            .app_data::<web::Data<AppState>>()
            .expect("AppState is registered by the app factory")
            .clone();
        let proxies = &state.settings.server.trusted_proxies;
        Ok(EndpointCaller {
            organization_id: identity.organization_id,
            context: AuditContext::of_key(&identity, req, proxies, RequestId::current()),
            state,
        })
    }
}

impl FromRequest for EndpointCaller {
    type Error = ApiError;
    type Future = Ready<Result<EndpointCaller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(EndpointCaller::of(req))
    }
}

/// Refused 403 before the path is read (then 400 for a malformed id).
impl FromRequest for EndpointTarget {
    type Error = ApiError;
    type Future = Ready<Result<EndpointTarget, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(EndpointCaller::of(req).and_then(|caller| {
            Ok(EndpointTarget {
                caller,
                endpoint: path_id(req, "id")?,
            })
        }))
    }
}

/// A master key's call on the endpoint `{id}` names. Whether the endpoint is the caller's
/// organization's is the store's question.
pub(super) struct EndpointTarget {
    pub(super) caller: EndpointCaller,
    /// The endpoint's id, from the path.
    pub(super) endpoint: Uuid,
}

/// A uuid in the path (hyphenated), or 400 naming the parameter.
pub(super) fn path_id(req: &HttpRequest, name: &'static str) -> Result<Uuid, ApiError> {
    let raw = req.match_info().get(name).unwrap_or_default();
    Some(raw)
        .filter(|raw| raw.len() == 36)
        .and_then(|raw| Uuid::try_parse(raw).ok())
        .ok_or_else(|| {
            ApiError::validation(
                "Invalid id in the path",
                vec![FieldError::new(name, "must be a UUID")],
            )
        })
}

/// The endpoint is not the caller's organization's (or does not exist): nobody learns which.
pub(super) fn endpoint_not_found() -> ApiError {
    ApiError::not_found("Webhook endpoint not found")
}
