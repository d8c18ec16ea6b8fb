//! Forwarding to the upstream services (src/gateway): the requests that failed there.

use prometheus::IntCounterVec;

use super::family::{label_values, Families};

label_values! {
    /// `logstitch_gateway_upstream_errors_total{kind}`.
    UpstreamErrorKind {
        Unavailable => "unavailable",
        Timeout => "timeout",
    }
}

/// `logstitch_gateway_upstream_errors_total{route, kind}`. Its routes are the configured
/// prefixes, so their series start at zero only once the settings name them.
pub(super) struct UpstreamErrors(IntCounterVec);

impl UpstreamErrors {
    /// Registers every (route, kind) at zero, for the configured routes.
    pub(super) fn register_routes<'a>(&self, prefixes: impl IntoIterator<Item = &'a str>) {
        for prefix in prefixes {
            for kind in UpstreamErrorKind::ALL {
                self.0.with_label_values(&[prefix, kind.as_str()]);
            }
        }
    }

    pub(super) fn inc(&self, route: &str, kind: UpstreamErrorKind) {
        self.0.with_label_values(&[route, kind.as_str()]).inc();
    }
}

pub(super) fn errors(families: &Families) -> UpstreamErrors {
    UpstreamErrors(families.counter_vec(
        "logstitch_gateway_upstream_errors_total",
        "Forwarded requests that failed upstream, by route prefix and kind (unavailable, timeout)",
        &["route", "kind"],
    ))
}
