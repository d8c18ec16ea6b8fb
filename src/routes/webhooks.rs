//! `/api/v1/webhook-endpoints`: an organization's webhook endpoints (create, list, delete, send
//! a test) and their deliveries (list, retry a failed one). Master key only: a project key is
//! refused 403 on every one of these routes.

mod caller;
mod deliveries;
mod endpoints;
mod events;

use actix_web::web;

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
