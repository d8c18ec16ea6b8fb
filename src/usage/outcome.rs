//! Which outcome an answer counts as, read from the answer itself once the route has decided:
//! the refusals are the error codes the deciding code gave it (`access` for the key's state,
//! type and scope, the gateway's and verify's checks, the rate limiter), so each outcome is
//! decided in one place and counted in one place, after the route answered.

use actix_web::http::StatusCode;

use crate::domain::UsageOutcome;
use crate::error::ErrorCode;

/// The outcome of a request whose key exists, given its answer's status and, when the answer
/// is one of our errors, its code. None: not counted (5xx, the service's own failure). A
/// refusal for the request's input (400, 404, 409), and any answer an upstream gave, is
/// `valid`: the key went through.
pub fn outcome_of_answer(status: StatusCode, code: Option<ErrorCode>) -> Option<UsageOutcome> {
    if status.is_server_error() {
        return None;
    }
    Some(match code {
        Some(ErrorCode::RateLimited) => UsageOutcome::RateLimited,
        Some(ErrorCode::InsufficientScope) => UsageOutcome::InsufficientScope,
        Some(ErrorCode::Forbidden) => UsageOutcome::Forbidden,
        Some(ErrorCode::KeyRevoked) => UsageOutcome::Revoked,
        Some(ErrorCode::KeyExpired) => UsageOutcome::Expired,
        Some(ErrorCode::KeyDisabled) => UsageOutcome::Disabled,
        _ => UsageOutcome::Valid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_count_as_their_outcome_and_input_errors_as_valid() {
        let of = |status: u16, code| outcome_of_answer(StatusCode::from_u16(status).unwrap(), code);
        assert_eq!(of(200, None), Some(UsageOutcome::Valid));
        assert_eq!(
            of(400, Some(ErrorCode::ValidationError)),
            Some(UsageOutcome::Valid)
        );
        assert_eq!(
            of(404, Some(ErrorCode::NotFound)),
            Some(UsageOutcome::Valid)
        );
        assert_eq!(
            of(409, Some(ErrorCode::Conflict)),
            Some(UsageOutcome::Valid)
        );
        assert_eq!(
            of(429, Some(ErrorCode::RateLimited)),
            Some(UsageOutcome::RateLimited)
        );
        assert_eq!(
            of(403, Some(ErrorCode::InsufficientScope)),
            Some(UsageOutcome::InsufficientScope)
        );
        assert_eq!(
            of(403, Some(ErrorCode::Forbidden)),
            Some(UsageOutcome::Forbidden)
        );
        assert_eq!(
            of(401, Some(ErrorCode::KeyRevoked)),
            Some(UsageOutcome::Revoked)
        );
        assert_eq!(
            of(401, Some(ErrorCode::KeyExpired)),
            Some(UsageOutcome::Expired)
        );
        assert_eq!(
            of(401, Some(ErrorCode::KeyDisabled)),
            Some(UsageOutcome::Disabled)
        );
        // An upstream's own 403 or 429 went through our checks: valid.
        assert_eq!(of(403, None), Some(UsageOutcome::Valid));
        assert_eq!(of(429, None), Some(UsageOutcome::Valid));
        assert_eq!(of(500, Some(ErrorCode::InternalError)), None);
        assert_eq!(of(503, Some(ErrorCode::ServiceUnavailable)), None);
        assert_eq!(of(502, None), None);
    }
}
