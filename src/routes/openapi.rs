//! `GET /openapi.json`: the OpenAPI 3.1 description of every route, checked in at the
//! repository root and kept in sync by `tests/api/openapi.rs`.

use actix_web::{web, HttpResponse};

use crate::metrics::counted_resource;

/// The description, compiled into the binary.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(counted_resource("/openapi.json").route(web::get().to(openapi)));
}

async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI_JSON)
}
