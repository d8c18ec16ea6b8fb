//! `POST /api/v1/secret-scanning/{provider}`: a scanning partner's leak report. No key: the
//! partner's signature over the raw body is the authentication, and nothing in the body is
//! read before it verifies. Mounted outside the `/api/v1` scope, whose middleware wants a key.

use actix_web::{web, HttpRequest, HttpResponse};

use super::body::raw_body;
use crate::access::unthrottled_address;
use crate::audit::{Actor, AuditContext};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{counted_resource, ReportOutcome};
use crate::request_id::RequestId;
use crate::secret_scanning::{act_on, parse_report, Handles, NotAuthentic};
use crate::state::AppState;

/// The largest report read: 1 MiB.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        counted_resource("/api/v1/secret-scanning/{provider}").route(web::post().to(report)),
    );
}

async fn report(
    req: HttpRequest,
    provider: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let Some(provider) = state.scanning_providers.get(&provider) else {
        return Err(ApiError::not_found(
            "No secret-scanning provider of that name is configured",
        ));
    };
    let reports = &state.metrics.secret_scanning.reports;
    let counted = |outcome: ReportOutcome| reports.inc(&provider.name, outcome);
    // Forged reports count against the address like bad keys: a sender that keeps failing
    // is refused before its body is read or a signature checked.
    let ip = unthrottled_address(&req, &state)?;
    let body = raw_body(&req, payload, MAX_REPORT_BYTES)
        .await
        .inspect_err(|error| {
            if error.code() == ErrorCode::PayloadTooLarge {
                counted(ReportOutcome::TooLarge);
            }
        })?;
    if let Err(refusal) = provider
        .authenticate(req.headers(), &body, &state.metrics)
        .await
    {
        counted(refusal.outcome());
        if refusal == NotAuthentic::KeysUnavailable {
            return Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                provider.explain(refusal),
            ));
        }
        if let Some(ip) = ip {
            state.failed_auth.record_failure(ip);
        }
        return Err(ApiError::new(
            ErrorCode::InvalidSignature,
            provider.explain(refusal),
        ));
    }
    let tokens = parse_report(&body).inspect_err(|_| counted(ReportOutcome::InvalidBody))?;
    let actor = Actor::SecretScanning {
        provider: provider.name.clone(),
    };
    let context = AuditContext::of_request(
        actor,
        &req,
        &state.settings.server.trusted_proxies,
        request_id,
    );
    let handles = Handles {
        store: &state.store,
        actors: &state.org_actors,
        metrics: &state.metrics,
    };
    let feedback = act_on(&tokens, &provider.name, &context, handles)
        .await
        .inspect_err(|_| counted(ReportOutcome::Failed))?;
    counted(ReportOutcome::Verified);
    Ok(HttpResponse::Ok().json(feedback))
}
