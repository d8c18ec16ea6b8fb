//! [`Metrics`]: the registry, and every family in it as a field, built by the file of the part
//! of the system it watches.

use std::sync::Arc;

use deadpool_postgres::Pool;
use prometheus::{
    Encoder, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::auth::{self, AuthResult, InvalidationLabel};
use super::family::{Families, LabelledCounter};
use super::http;
use super::keys;
use super::live::{LiveCount, LiveState};
use super::rate_limit::{self, RateLimitFallback, RateLimitedBy, RedisRoundTrip};
use super::revocation;
use super::secret_scanning::SecretScanningMetrics;
use super::upstream::{self, UpstreamErrorKind, UpstreamErrors};
use super::usage::{UsageBacklog, UsageLive, UsageMetrics};
use super::webhooks::{self, WebhookOutcome};

pub struct Metrics {
    registry: Registry,
    // http.rs
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    // auth.rs
    auth_requests: LabelledCounter<AuthResult>,
    /// `auth_requests{result="ok"}`, resolved once: the hot path skips the label lookup.
    pub auth_ok: IntCounter,
    pub auth_cache_hits: IntCounter,
    pub auth_cache_misses: IntCounter,
    pub auth_db_lookups: IntCounter,
    pub auth_stale_served: IntCounter,
    cache_invalidations: LabelledCounter<InvalidationLabel>,
    pub last_used_flush_duration: Histogram,
    pub last_used_flush_errors: IntCounter,
    pub last_used_dropped: IntCounter,
    // keys.rs
    pub keys_created: IntCounter,
    pub keys_revoked: IntCounter,
    pub keys_rolled: IntCounter,
    pub keys_updated: IntCounter,
    pub org_actors: IntGauge,
    // revocation.rs
    pub invalidation_listener_up: IntGauge,
    pub listener_reconnects: IntCounter,
    pub revocation_ack_timeouts: IntCounter,
    pub revocation_acks_received: IntCounter,
    // rate_limit.rs
    rate_limited: LabelledCounter<RateLimitedBy>,
    pub rate_limit_redis_up: IntGauge,
    pub rate_limit_redis_errors: IntCounter,
    rate_limit_fallback_decisions: LabelledCounter<RateLimitFallback>,
    rate_limit_redis_round_trips: LabelledCounter<RedisRoundTrip>,
    // upstream.rs
    gateway_upstream_errors: UpstreamErrors,
    // webhooks.rs
    webhook_deliveries: LabelledCounter<WebhookOutcome>,
    pub webhook_attempt_duration: Histogram,
    pub webhook_queue_depth: IntGauge,
    pub webhook_oldest_pending_age: IntGauge,
    // secret_scanning.rs
    pub secret_scanning: SecretScanningMetrics,
    // usage.rs
    pub usage: UsageMetrics,
}

/// `logstitch_build_info{version}`, always 1.
fn build_info(families: &Families) {
    families
        .register(
            IntGaugeVec::new(
                Opts::new("logstitch_build_info", "Build information; always 1"),
                &["version"],
            )
            .expect("valid metric"),
        )
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1);
}

impl Metrics {
    /// Every family, with its known label values at zero, so dashboards show 0 rather than
    /// "no data".
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let families = Families::new(&registry);
        build_info(&families);
        let auth_requests = auth::requests(&families);
        Metrics {
            http_requests: http::requests(&families),
            http_request_duration: http::request_duration(&families),
            auth_ok: auth_requests.counter(AuthResult::Ok),
            auth_requests,
            auth_cache_hits: auth::cache_hits(&families),
            auth_cache_misses: auth::cache_misses(&families),
            auth_db_lookups: auth::db_lookups(&families),
            auth_stale_served: auth::stale_served(&families),
            cache_invalidations: auth::cache_invalidations(&families),
            last_used_flush_duration: auth::last_used_flush_duration(&families),
            last_used_flush_errors: auth::last_used_flush_errors(&families),
            last_used_dropped: auth::last_used_dropped(&families),
            keys_created: keys::created(&families),
            keys_revoked: keys::revoked(&families),
            keys_rolled: keys::rolled(&families),
            keys_updated: keys::updated(&families),
            org_actors: keys::org_actors(&families),
            invalidation_listener_up: revocation::listener_up(&families),
            listener_reconnects: revocation::listener_reconnects(&families),
            revocation_ack_timeouts: revocation::ack_timeouts(&families),
            revocation_acks_received: revocation::acks_received(&families),
            rate_limited: rate_limit::rate_limited(&families),
            rate_limit_redis_up: rate_limit::redis_up(&families),
            rate_limit_redis_errors: rate_limit::redis_errors(&families),
            rate_limit_fallback_decisions: rate_limit::fallback_decisions(&families),
            rate_limit_redis_round_trips: rate_limit::redis_round_trips(&families),
            gateway_upstream_errors: upstream::errors(&families),
            webhook_deliveries: webhooks::deliveries(&families),
            webhook_attempt_duration: webhooks::attempt_duration(&families),
            webhook_queue_depth: webhooks::queue_depth(&families),
            webhook_oldest_pending_age: webhooks::oldest_pending_age(&families),
            secret_scanning: SecretScanningMetrics::new(&families),
            usage: UsageMetrics::new(&families),
            registry,
        }
    }

    /// Registers every (route, kind) of upstream errors at zero, for the configured routes.
    pub fn register_gateway_routes<'a>(&self, prefixes: impl IntoIterator<Item = &'a str>) {
        self.gateway_upstream_errors.register_routes(prefixes);
    }

    pub fn auth_result(&self, result: AuthResult) {
        self.auth_requests.inc(result);
    }

    pub fn cache_invalidated(&self, source: InvalidationLabel) {
        self.cache_invalidations.inc(source);
    }

    pub fn rate_limited(&self, by: RateLimitedBy) {
        self.rate_limited.inc(by);
    }

    pub fn rate_limit_fallback(&self, mode: RateLimitFallback) {
        self.rate_limit_fallback_decisions.inc(mode);
    }

    pub fn redis_round_trip(&self, kind: RedisRoundTrip) {
        self.rate_limit_redis_round_trips.inc(kind);
    }

    pub fn upstream_error(&self, route: &str, kind: UpstreamErrorKind) {
        self.gateway_upstream_errors.inc(route, kind);
    }

    pub fn webhook_attempt(&self, outcome: WebhookOutcome) {
        self.webhook_deliveries.inc(outcome);
    }

    /// Adds the gauges read at scrape time from live state: the pool's, the auth cache's
    /// entries, the keys whose lastUsedAt waits for a flush.
    pub fn watch(&self, pool: Pool, cache: Arc<dyn LiveCount>, last_used: Arc<dyn LiveCount>) {
        self.registry
            .register(Box::new(LiveState::new(pool, cache, last_used)))
            .expect("live-state metric names are unique");
    }

    /// Adds the usage backlog gauges, read at scrape time.
    pub fn watch_usage(&self, backlog: Arc<dyn UsageBacklog>) {
        self.registry
            .register(Box::new(UsageLive::new(backlog)))
            .expect("usage metric names are unique");
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding into memory does not fail");
        String::from_utf8(buffer).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::family::LabelValue;

    /// `metric{label="value"} 0` for every value of `L`.
    fn at_zero<L: LabelValue>(metric: &str, label: &str) -> Vec<String> {
        L::ALL
            .iter()
            .map(|value| format!("{metric}{{{label}=\"{}\"}} 0", value.as_str()))
            .collect()
    }

    #[test]
    fn every_label_value_is_exported_at_zero_from_the_start() {
        let metrics = Metrics::new();
        metrics.register_gateway_routes(["/api/v1/events"]);
        let text = metrics.render();
        let mut expected = [
            at_zero::<AuthResult>("logstitch_auth_requests_total", "result"),
            at_zero::<InvalidationLabel>("logstitch_cache_invalidations_total", "source"),
            at_zero::<RateLimitedBy>("logstitch_rate_limited_total", "kind"),
            at_zero::<RateLimitFallback>("logstitch_rate_limit_fallback_decisions_total", "mode"),
            at_zero::<RedisRoundTrip>("logstitch_rate_limit_redis_round_trips_total", "kind"),
            at_zero::<WebhookOutcome>("logstitch_webhook_deliveries_total", "outcome"),
        ]
        .concat();
        expected.extend(UpstreamErrorKind::ALL.iter().map(|kind| {
            format!(
                "logstitch_gateway_upstream_errors_total{{kind=\"{}\",route=\"/api/v1/events\"}} 0",
                kind.as_str()
            )
        }));
        for line in expected {
            assert!(text.lines().any(|l| l == line), "{line}");
        }
    }

    #[test]
    fn registries_are_independent() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.keys_created.inc();
        assert_eq!(a.keys_created.get(), 1);
        assert_eq!(b.keys_created.get(), 0);
        assert!(a.render().contains("logstitch_build_info"));
    }
}
