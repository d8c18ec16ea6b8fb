//! Route table. Each module exports `configure`; this one only mounts them.

mod admin;
mod audit;
mod body;
mod health;
mod keys;
mod metrics;
mod openapi;
mod projects;
mod timestamp;
mod verify;

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::{header, StatusCode};
use actix_web::middleware::from_fn;
use actix_web::{web, HttpResponse, Resource, ResponseError};

use crate::auth::authenticate;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::RouteMetrics;

pub use body::{json_config, BodyReadTimeout};
pub use metrics::configure as configure_metrics;
// Defined below settings and routes alike (settings check gateway prefixes against it); named
// here too for the API tests that compare it with openapi.json.
pub use crate::reserved_paths::{overlaps, BUILT_IN_PATHS};

/// Which optional parts the public listener serves.
#[derive(Debug, Clone, Copy)]
pub struct RouteOptions {
    /// `POST /admin/v1/organizations` exists only when an admin token is set.
    pub admin: bool,
    /// False when `/metrics` has its own listener (`server.metrics_listen`).
    pub metrics: bool,
}

/// The whole route table, in the one order that works: actix tries services in registration
/// order and a scope does not fall through, so gateway prefixes (some under `/api/v1`) come
/// before the `/api/v1` scope, longest prefix first so a nested prefix wins over its parent.
/// Gateway prefixes never overlap the built-in routes (checked with the settings).
pub fn configure(
    cfg: &mut web::ServiceConfig,
    options: RouteOptions,
    gateway_routes: &[crate::configuration::GatewayRoute],
) {
    let mut by_specificity: Vec<_> = gateway_routes.iter().collect();
    by_specificity.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
    crate::gateway::configure(cfg, by_specificity);
    health::configure(cfg);
    openapi::configure(cfg);
    if options.metrics {
        metrics::configure(cfg);
    }
    if options.admin {
        admin::configure(cfg);
    }
    cfg.service(
        web::scope("/api/v1")
            .wrap(from_fn(authenticate))
            // First: the hot path, matched before any pattern with a regex (`/keys/{id}`).
            .configure(verify::configure)
            .configure(keys::configure)
            .configure(projects::configure)
            .configure(audit::configure),
    );
}

/// A 200 list answer, `{"<field>": [...], "request_id": "req_…"}`: one shape for every list.
pub(crate) fn listed<V: serde::Serialize>(
    field: &'static str,
    items: Vec<V>,
    request_id: crate::request_id::RequestId,
) -> HttpResponse {
    struct Listed<V> {
        field: &'static str,
        items: Vec<V>,
        request_id: crate::request_id::RequestId,
    }
    impl<V: serde::Serialize> serde::Serialize for Listed<V> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(2))?;
            map.serialize_entry(self.field, &self.items)?;
            map.serialize_entry("request_id", &self.request_id)?;
            map.end()
        }
    }
    HttpResponse::Ok().json(Listed {
        field,
        items,
        request_id,
    })
}

/// A resource. Its unsupported methods get actix's 405 with an `Allow` header, which
/// [`envelope_bare_405`] dresses in the error envelope. Its requests are counted through
/// its own [`RouteMetrics`].
pub(crate) fn resource(path: &str) -> Resource {
    web::resource(path).app_data(RouteMetrics::new())
}

/// A 405 that the router made (no body, `Allow` listing the route's methods) gets the error
/// envelope too, keeping its headers (`Allow` above all) — so every answer has one.
pub fn envelope_bare_405<B>(response: ServiceResponse<B>) -> ServiceResponse<EitherBody<B>>
where
    B: MessageBody,
{
    let bare = response.status() == StatusCode::METHOD_NOT_ALLOWED
        && matches!(
            response.response().body().size(),
            BodySize::None | BodySize::Sized(0)
        );
    if !bare {
        return response.map_into_left_body();
    }
    let error = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "Method {} is not allowed on this route",
            response.request().method()
        ),
    );
    let (request, bare) = response.into_parts();
    let mut enveloped = error.error_response();
    // Its headers but those that describe a body: the envelope is JSON, so a bare 405's
    // `Content-Type` or `Content-Encoding` (an upstream's, say) would lie about it.
    let describes_body = |name: &header::HeaderName| {
        name.as_str().starts_with("content-") || name == header::TRANSFER_ENCODING
    };
    for (name, value) in bare.headers() {
        if !describes_body(name) {
            enveloped.headers_mut().append(name.clone(), value.clone());
        }
    }
    ServiceResponse::new(request, enveloped).map_into_right_body()
}

/// Unknown routes.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("No such route"))
}
