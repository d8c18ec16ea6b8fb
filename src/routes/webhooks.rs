//! `/api/v1/webhook-endpoints`: an organization's webhook endpoints (create, list, delete, send
//! a test) and their deliveries (list, retry a failed one). Master key only: a project key is
//! refused 403 on every one of these routes.

mod deliveries;
mod endpoints;
mod events;

use actix_web::{web, HttpRequest};
use uuid::Uuid;

use crate::error::{ApiError, FieldError};
use crate::metrics::counted_resource;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        counted_resource("/webhook-endpoints")
            .route(web::post().to(endpoints::create_endpoint))
            .route(web::get().to(endpoints::list_endpoints)),
    )
    .service(
        counted_resource("/webhook-endpoints/{id}")
            .route(web::delete().to(endpoints::delete_endpoint)),
    )
    .service(
        counted_resource("/webhook-endpoints/{id}/test")
            .route(web::post().to(endpoints::test_endpoint)),
    )
    .service(
        counted_resource("/webhook-endpoints/{id}/deliveries")
            .route(web::get().to(deliveries::list_deliveries)),
    )
    .service(
        counted_resource("/webhook-endpoints/{id}/deliveries/{delivery_id}/retry")
            .route(web::post().to(deliveries::retry_delivery)),
    );
}

/// A uuid in the path (hyphenated), or 400 naming the parameter.
fn path_id(req: &HttpRequest, name: &'static str) -> Result<Uuid, ApiError> {
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
fn endpoint_not_found() -> ApiError {
    ApiError::not_found("Webhook endpoint not found")
}
