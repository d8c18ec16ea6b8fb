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

pub use body::{json_config, BodyReadTimeout};
pub use metrics::configure as configure_metrics;

/// Which optional parts the public listener serves.
#[derive(Debug, Clone, Copy)]
pub struct RouteOptions {
    /// `POST /admin/v1/organizations` exists only when an admin token is set.
    pub admin: bool,
    /// False when `/metrics` has its own listener (`server.metrics_listen`).
    pub metrics: bool,
}

pub fn configure(cfg: &mut web::ServiceConfig, options: RouteOptions) {
    health::configure(cfg);
    if options.metrics {
        metrics::configure(cfg);
    }
    if options.admin {
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
