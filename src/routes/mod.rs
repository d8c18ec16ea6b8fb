//! Route table. Each module exports `configure`; this one only mounts them.

mod admin;
mod body;
mod health;
mod keys;
mod metrics;
mod projects;
mod timestamp;
mod verify;

use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse, Resource};

use crate::auth::authenticate;
use crate::error::{ApiError, ErrorCode};

pub use body::json_config;

pub fn configure(cfg: &mut web::ServiceConfig, admin_enabled: bool) {
    health::configure(cfg);
    metrics::configure(cfg);
    if admin_enabled {
        admin::configure(cfg);
    }
    cfg.service(
        web::scope("/api/v1")
            .wrap(from_fn(authenticate))
            .configure(keys::configure)
            .configure(projects::configure)
            .configure(verify::configure),
    );
}

/// A resource whose unsupported methods answer 405 in the error envelope.
pub(crate) fn resource(path: &str) -> Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("Method {} is not allowed on this route", req.method()),
    ))
}

/// Unknown routes.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("No such route"))
}
