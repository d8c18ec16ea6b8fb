//! `GET /metrics`: Prometheus text format.

use actix_web::{web, HttpResponse};

use crate::metrics::counted_resource;
use crate::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(counted_resource("/metrics").route(web::get().to(metrics)));
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}
