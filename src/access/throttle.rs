//! The failed-authentication throttle for credentials other than keys (the admin token, a
//! scanning partner's signature): one check, so every credential a client can guess at is
//! refused the same way once its address keeps failing.

use std::net::IpAddr;

use actix_web::HttpRequest;

use super::extract::AuthFailure;
use crate::error::ApiError;
use crate::metrics::RateLimitedBy;
use crate::state::AppState;

/// The client's address (per `server.trusted_proxies`), or a 429 when that address is over
/// its failed-authentication limit. Record a failure with
/// `state.failed_auth.record_failure(ip)` when the credential turns out wrong.
pub fn unthrottled_address(
    req: &HttpRequest,
    state: &AppState,
) -> Result<Option<IpAddr>, ApiError> {
    let ip = state
        .settings
        .server
        .trusted_proxies
        .client_ip(req.peer_addr(), req.headers());
    if let Some(ip) = ip {
        let decision = state.failed_auth.check(ip);
        if !decision.allowed {
            state.metrics.rate_limited(RateLimitedBy::Ip);
            return Err(AuthFailure::Throttled(decision).into());
        }
    }
    Ok(ip)
}
