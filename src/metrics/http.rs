//! Requests as the HTTP layer sees them: counts by method, matched route pattern and status,
//! and latency by route. `route.rs` counts each request into these families.

use prometheus::{HistogramVec, IntCounterVec};

use super::family::Families;

/// The `route` label of requests that matched no route: one value, so cardinality is bounded.
pub const UNMATCHED_ROUTE: &str = "unmatched";

pub(super) fn requests(families: &Families) -> IntCounterVec {
    families.counter_vec(
        "logstitch_http_requests_total",
        "HTTP requests by method, matched route pattern and status",
        &["method", "route", "status"],
    )
}

pub(super) fn request_duration(families: &Families) -> HistogramVec {
    families.histogram_vec(
        "logstitch_http_request_duration_seconds",
        "HTTP request latency by matched route pattern",
        &["route"],
    )
}
