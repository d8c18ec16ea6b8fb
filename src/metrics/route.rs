//! Per-route request metrics without a per-request lookup. Each resource carries a
//! [`RouteMetrics`] in its app data (one per worker: the app factory runs on each), which
//! resolves its label and metric handles on first use and from then on counts with plain
//! atomic increments: no allocation, lock or label hashing per request. A request that
//! matched no resource is counted through the labelled lookup under [`UNMATCHED_ROUTE`].

use std::cell::{OnceCell, RefCell};
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, HttpRequest, Resource};
use prometheus::{Histogram, IntCounter};

use super::http::UNMATCHED_ROUTE;
use super::registry::Metrics;

/// (method, status) counters remembered per route and worker; past this, the labelled lookup
/// (correct, only slower). A route answers a handful of statuses to a handful of methods.
const REMEMBERED: usize = 32;

/// A resource counted through its own [`RouteMetrics`]: every route of the service and of the
/// gateway is made with this. Its unsupported methods get actix's 405 with an `Allow` header,
/// which the edge dresses in the error envelope.
pub fn counted_resource(path: &str) -> Resource {
    web::resource(path).app_data(RouteMetrics::new())
}

#[derive(Default)]
pub struct RouteMetrics {
    /// The matched pattern, as `HttpRequest::match_pattern` gives it (scopes included).
    label: OnceCell<String>,
    duration: OnceCell<Histogram>,
    counts: RefCell<Vec<(&'static str, StatusCode, IntCounter)>>,
}

impl RouteMetrics {
    pub fn new() -> RouteMetrics {
        RouteMetrics::default()
    }

    /// The route's label; the first call reads it off the request.
    pub fn label(&self, request: &HttpRequest) -> &str {
        self.label.get_or_init(|| {
            request
                .match_pattern()
                .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned())
        })
    }

    pub fn observe(
        &self,
        metrics: &Metrics,
        request: &HttpRequest,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let method = method_label(request.method());
        let label = self.label(request);
        self.duration
            .get_or_init(|| metrics.http_request_duration.with_label_values(&[label]))
            .observe(elapsed.as_secs_f64());
        let mut counts = self.counts.borrow_mut();
        if let Some((_, _, counter)) = counts.iter().find(|(m, s, _)| *s == status && *m == method)
        {
            counter.inc();
            return;
        }
        let counter = metrics
            .http_requests
            .with_label_values(&[method, label, status.as_str()]);
        counter.inc();
        if counts.len() < REMEMBERED {
            counts.push((method, status, counter));
        }
    }
}

/// Observes a request served by no resource (a 404, or a refusal before routing) under
/// `route` (its matched pattern, else [`UNMATCHED_ROUTE`]): the labelled lookup, once per
/// request.
pub fn observe_unrouted(
    metrics: &Metrics,
    request: &HttpRequest,
    route: &str,
    status: StatusCode,
    elapsed: Duration,
) {
    metrics
        .http_requests
        .with_label_values(&[method_label(request.method()), route, status.as_str()])
        .inc();
    metrics
        .http_request_duration
        .with_label_values(&[route])
        .observe(elapsed.as_secs_f64());
}

/// The `method` label: the standard methods by name, any other as `OTHER`, so a client
/// inventing methods can't create series without bound.
pub fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "OTHER",
    }
}
