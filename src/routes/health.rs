//! `/healthz` (the process answers; no database) and `/readyz` (database reachable,
//! migrations applied, invalidation listener up).

use actix_web::{web, HttpResponse};
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};
use crate::metrics::counted_resource;
use crate::request_id::RequestId;
use crate::state::AppState;
use crate::store::migrations_applied;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(counted_resource("/healthz").route(web::get().to(healthz)))
        .service(counted_resource("/readyz").route(web::get().to(readyz)));
}

#[derive(Serialize)]
struct Status {
    status: &'static str,
    request_id: RequestId,
}

async fn healthz(request_id: RequestId) -> HttpResponse {
    HttpResponse::Ok().json(Status {
        status: "ok",
        request_id,
    })
}

async fn readyz(
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let not_ready = |why: &'static str| {
        ApiError::new(ErrorCode::ServiceUnavailable, format!("Not ready: {why}"))
    };
    if state.draining.load(std::sync::atomic::Ordering::Acquire) {
        return Err(not_ready("shutting down"));
    }
    let client = state
        .store
        .pool()
        .get()
        .await
        .map_err(|error| not_ready("database unreachable").with_cause(error))?;
    if !migrations_applied(&client).await {
        return Err(not_ready("migrations not applied"));
    }
    if !state.listener.is_up() {
        return Err(not_ready("invalidation listener down"));
    }
    Ok(HttpResponse::Ok().json(Status {
        status: "ready",
        request_id,
    }))
}
