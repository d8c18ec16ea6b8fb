//! The middleware that resolves a request's bearer key once, and the typed extractor that
//! hands the result to handlers.
//!
//! Resolution happens in a middleware, before any extractor runs, so an unauthenticated
//! request is refused as 401 even when its body is also malformed or too large: actix polls a
//! handler's extractors together, and the first to fail would otherwise win.

use std::future::{ready, Ready};
use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderValue, AUTHORIZATION};
use actix_web::middleware::Next;
use actix_web::{web, Error, FromRequest, HttpMessage, HttpRequest};

use crate::domain::{ApiKey, Identity, KeyHash, KeyId, KeyState, KeyType, UsageOutcome};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{AuthResult, RateLimitedBy};
use crate::rate_limit::RateDecision;
use crate::state::AppState;
use crate::store::StoreError;
use crate::usage::outcome_of_answer;

/// Why a request is not authenticated.
#[derive(Debug, Clone)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Unknown,
    Revoked,
    Expired,
    Disabled,
    /// Too many failed authentications from this client IP; no lookup was made.
    Throttled(RateDecision),
    Unavailable(Arc<StoreError>),
}

impl AuthFailure {
    pub fn metric_label(&self) -> AuthResult {
        match self {
            AuthFailure::Missing => AuthResult::Missing,
            AuthFailure::Malformed | AuthFailure::Unknown => AuthResult::Invalid,
            AuthFailure::Revoked => AuthResult::Revoked,
            AuthFailure::Expired => AuthResult::Expired,
            AuthFailure::Disabled => AuthResult::Disabled,
            AuthFailure::Throttled(_) => AuthResult::Throttled,
            AuthFailure::Unavailable(_) => AuthResult::Unavailable,
        }
    }
}

impl AuthFailure {
    /// What a key that exists but can't authenticate counts as in its usage.
    fn usage_outcome(&self) -> Option<UsageOutcome> {
        match self {
            AuthFailure::Revoked => Some(UsageOutcome::Revoked),
            AuthFailure::Expired => Some(UsageOutcome::Expired),
            AuthFailure::Disabled => Some(UsageOutcome::Disabled),
            _ => None,
        }
    }

    /// Failures that count against the client's IP (not outages, not throttling itself).
    fn is_client_mistake(&self) -> bool {
        matches!(
            self,
            AuthFailure::Missing
                | AuthFailure::Malformed
                | AuthFailure::Unknown
                | AuthFailure::Revoked
                | AuthFailure::Expired
                | AuthFailure::Disabled
        )
    }
}

impl From<AuthFailure> for ApiError {
    fn from(failure: AuthFailure) -> ApiError {
        match failure {
            AuthFailure::Missing => ApiError::new(
                ErrorCode::Unauthorized,
                "Missing or unsupported credentials: send Authorization: Bearer <key>",
            ),
            AuthFailure::Malformed => {
                ApiError::new(ErrorCode::InvalidApiKey, "API key format is invalid")
            }
            AuthFailure::Unknown => {
                ApiError::new(ErrorCode::InvalidApiKey, "API key is not recognized")
            }
            AuthFailure::Revoked => {
                ApiError::new(ErrorCode::KeyRevoked, "API key has been revoked")
            }
            AuthFailure::Expired => ApiError::new(ErrorCode::KeyExpired, "API key has expired"),
            AuthFailure::Disabled => ApiError::new(ErrorCode::KeyDisabled, "API key is disabled"),
            AuthFailure::Throttled(decision) => ApiError::new(
                ErrorCode::RateLimited,
                "Too many failed authentications from this address; retry later",
            )
            .with_headers(decision.headers()),
            AuthFailure::Unavailable(cause) => ApiError::new(
                ErrorCode::ServiceUnavailable,
                "Authentication is temporarily unavailable; retry shortly",
            )
            .with_cause(cause),
        }
    }
}

/// The outcome stored in request extensions by [`authenticate`].
#[derive(Debug, Clone)]
pub struct AuthOutcome(pub Result<Identity, AuthFailure>);

/// Middleware for every route that needs a key. After the route answered, a key that exists
/// is counted for usage by the answer's outcome (`usage::outcome_of_answer`).
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .expect("AppState is registered by the app factory")
        .clone();
    let ip = state
        .settings
        .server
        .trusted_proxies
        .client_ip(req.peer_addr(), req.headers());
    let (outcome, key) = identify(req.headers().get(AUTHORIZATION), ip, &state).await;
    record(&outcome, &state);
    let refused = outcome.as_ref().err().and_then(AuthFailure::usage_outcome);
    req.extensions_mut().insert(AuthOutcome(outcome));
    let response = next.call(req).await?;
    if let Some(key) = key {
        let code = response
            .response()
            .error()
            .and_then(|error| error.as_error::<ApiError>())
            .map(ApiError::code);
        // A key that can't authenticate counts as what it is, whatever the route answered
        // (an unknown path's 404 included); 5xx answers are never counted.
        if let Some(answer) = outcome_of_answer(response.status(), code) {
            state.usage.count(key, refused.unwrap_or(answer));
        }
    }
    Ok(response)
}

/// Counted once per request, here: the authentication result, and for a key that resolved,
/// its use (lastUsedAt) — whether or not the route then admits its type.
fn record(outcome: &Result<Identity, AuthFailure>, state: &AppState) {
    match outcome {
        Ok(identity) => {
            state.metrics.auth_ok.inc();
            if !state.last_used.record(identity.key_id) {
                state.metrics.last_used_dropped.inc();
            }
        }
        Err(failure) => state.metrics.auth_result(failure.metric_label()),
    }
}

/// The rule: a key with a fresh cached active, unexpired identity passes without the
/// failed-auth throttle being consulted (the hot path: one cache read). The throttle limits
/// what costs — lookups of keys not cached as active, and malformed keys — so only otherwise
/// does a throttled address get 429, before any lookup. A key that resolves active never
/// counts as a failure; missing credentials, malformed, unknown, revoked and expired keys do.
/// With the outcome, the id of the key presented when it exists (what usage is counted
/// against), even revoked, expired or disabled; none when throttled before any lookup.
async fn identify(
    header: Option<&HeaderValue>,
    ip: Option<IpAddr>,
    state: &AppState,
) -> (Result<Identity, AuthFailure>, Option<KeyId>) {
    let hash = presented_hash(header);
    let cached = match &hash {
        Ok(hash) => state.auth_cache.peek(hash).await,
        Err(_) => None,
    };
    if let Some(KeyState::Active(identity)) = &cached {
        if identity.enabled && !identity.is_expired() {
            return (Ok(identity.clone()), Some(identity.key_id));
        }
    }
    let throttled = ip
        .map(|ip| state.failed_auth.check(ip))
        .filter(|decision| !decision.allowed);
    if let Some(decision) = throttled {
        state.metrics.rate_limited(RateLimitedBy::Ip);
        return (Err(AuthFailure::Throttled(decision)), None);
    }
    let resolved = match (hash, cached) {
        (Err(failure), _) => Err(failure),
        (Ok(_), Some(answer)) => Ok(answer),
        (Ok(hash), None) => state
            .auth_cache
            .fetch(hash)
            .await
            .map_err(AuthFailure::Unavailable),
    };
    let key = resolved.as_ref().ok().and_then(KeyState::key_id);
    let outcome = resolved.and_then(known_identity);
    if let (Some(ip), Err(failure)) = (ip, &outcome) {
        if failure.is_client_mistake() {
            state.failed_auth.record_failure(ip);
        }
    }
    (outcome, key)
}

/// The presented key's hash, if the header holds a well-formed key; never a lookup.
fn presented_hash(header: Option<&HeaderValue>) -> Result<KeyHash, AuthFailure> {
    let presented = bearer_token(header)?;
    ApiKey::check_format(presented).map_err(|_| AuthFailure::Malformed)?;
    Ok(KeyHash::of(presented))
}

/// Revoked, then expired, then disabled: the first that applies is the answer.
fn known_identity(state: KeyState) -> Result<Identity, AuthFailure> {
    match state {
        KeyState::Active(identity) if identity.is_expired() => Err(AuthFailure::Expired),
        KeyState::Active(identity) if !identity.enabled => Err(AuthFailure::Disabled),
        KeyState::Active(identity) => Ok(identity),
        KeyState::Revoked(_) => Err(AuthFailure::Revoked),
        KeyState::Unknown => Err(AuthFailure::Unknown),
    }
}

/// `Bearer <token>`; the scheme is case-insensitive (RFC 9110 §11.1) and spaces around the
/// token are trimmed. Keys and the admin token are both read through this one function.
pub(crate) fn bearer_token(header: Option<&HeaderValue>) -> Result<&str, AuthFailure> {
    let header = header.ok_or(AuthFailure::Missing)?;
    let bytes = header.as_bytes();
    const SCHEME: &[u8] = b"bearer ";
    if bytes.len() < SCHEME.len() || !bytes[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return Err(AuthFailure::Missing);
    }
    let token = std::str::from_utf8(&bytes[SCHEME.len()..]).map_err(|_| AuthFailure::Malformed)?;
    Ok(token.trim())
}

/// Which key types a route admits, and the scope it needs of them.
pub trait Permission: 'static {
    fn allows(key_type: KeyType) -> bool;

    /// A plain `resource.action` scope; None: the key type is enough.
    const SCOPE: Option<&'static str> = None;
}

/// Master keys only: creating keys, managing projects.
pub struct MasterOnly;

impl Permission for MasterOnly {
    fn allows(key_type: KeyType) -> bool {
        key_type == KeyType::Master
    }
}

/// Any valid key.
pub struct AnyKey;

impl Permission for AnyKey {
    fn allows(_: KeyType) -> bool {
        true
    }
}

/// Any key holding `keys.read`: listing keys.
pub struct KeysRead;

impl Permission for KeysRead {
    fn allows(_: KeyType) -> bool {
        true
    }

    const SCOPE: Option<&'static str> = Some("keys.read");
}

/// Any key holding `keys.write`: revoking, rolling and updating keys.
pub struct KeysWrite;

impl Permission for KeysWrite {
    fn allows(_: KeyType) -> bool {
        true
    }

    const SCOPE: Option<&'static str> = Some("keys.write");
}

/// An authenticated caller whose key type the route admits. Put it first in a handler's
/// arguments; it is ready at once (the middleware did the work).
pub struct Authenticated<P: Permission> {
    pub identity: Identity,
    permission: PhantomData<P>,
}

impl<P: Permission> FromRequest for Authenticated<P> {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            authorize(req, P::allows, P::SCOPE).map(|identity| Authenticated {
                identity,
                permission: PhantomData,
            }),
        )
    }
}

/// The request's identity, if its key resolved, `allows` admits the key type and the key holds
/// the scope the route `needs`: a pure check of what the middleware found (which also did the
/// counting). In that order, so a key that can't authenticate learns nothing of the route's
/// rules. Routes whose permission is only known at run time (gateway routes) call this
/// directly.
pub fn authorize(
    req: &HttpRequest,
    allows: impl Fn(KeyType) -> bool,
    needs: Option<&str>,
) -> Result<Identity, ApiError> {
    let outcome = req
        .extensions()
        .get::<AuthOutcome>()
        .cloned()
        .ok_or_else(|| {
            ApiError::new(ErrorCode::InternalError, "Unexpected server error").with_cause(
                anyhow::anyhow!("route is not behind the authenticate middleware"),
            )
        })?;
    match outcome.0 {
        Err(failure) => Err(ApiError::from(failure)),
        Ok(identity) if !allows(identity.key_type) => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "A {} key is not allowed to perform this action",
                identity.key_type.as_str()
            ),
        )),
        Ok(identity) => match needs {
            Some(scope) if !identity.scopes.grants(scope) => Err(insufficient_scope(scope)),
            _ => Ok(identity),
        },
    }
}

/// 403 `insufficient_scope`, naming the scope the key lacks.
pub fn insufficient_scope(scope: &str) -> ApiError {
    ApiError::new(
        ErrorCode::InsufficientScope,
        format!("This key lacks the scope {scope}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &[u8]) -> HeaderValue {
        HeaderValue::from_bytes(value).unwrap()
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token(Some(&header(b"Bearer abc"))).unwrap(), "abc");
        assert_eq!(bearer_token(Some(&header(b"bearer abc"))).unwrap(), "abc");
        assert_eq!(bearer_token(Some(&header(b"BEARER  abc "))).unwrap(), "abc");
    }

    #[test]
    fn missing_or_other_schemes_are_missing_credentials() {
        assert!(matches!(bearer_token(None), Err(AuthFailure::Missing)));
        assert!(matches!(
            bearer_token(Some(&header(b"Basic dXNlcjpwYXNz"))),
            Err(AuthFailure::Missing)
        ));
        assert!(matches!(
            bearer_token(Some(&header(b"Bearer"))),
            Err(AuthFailure::Missing)
        ));
    }

    #[test]
    fn non_utf8_tokens_are_malformed() {
        assert!(matches!(
            bearer_token(Some(&header(b"Bearer \xff\xfe"))),
            Err(AuthFailure::Malformed)
        ));
    }
}
