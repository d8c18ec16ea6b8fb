//! Route table. Each module exports `configure`; this one only mounts them.

mod admin;
mod audit;
mod body;
mod health;
mod keys;
mod metrics;
mod openapi;
mod pages;
mod projects;
mod responses;
mod secret_scanning;
mod usage;
mod verify;
mod webhooks;

use actix_web::middleware::from_fn;
use actix_web::web;

use crate::access::authenticate;

pub use body::{json_config, BodyReadTimeout};
pub use metrics::configure as configure_metrics;
pub use responses::{envelope_bare_405, not_found};
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
    // Before the `/api/v1` scope: a report carries no key, only its signature.
    secret_scanning::configure(cfg);
    cfg.service(
        web::scope("/api/v1")
            .wrap(from_fn(authenticate))
            // First: the hot path, matched before any pattern with a regex (`/keys/{id}`).
            .configure(verify::configure)
            .configure(keys::configure)
            .configure(projects::configure)
            .configure(audit::configure)
            .configure(usage::configure)
            .configure(webhooks::configure),
    );
}
