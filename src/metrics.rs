//! Every Prometheus metric the gateway exports, in one place. The registry belongs to the
//! application state (not a global), so tests running several servers don't share counters.
//! Gauges that mirror other state (pool, cache, backlog) are read at scrape time.

use std::sync::Arc;

use deadpool_postgres::Pool;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

mod route;

pub use route::{observe_unrouted, RouteMetrics};

/// Seconds, from 100 µs: the auth hot path answers in well under a millisecond.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The `route` label of requests that matched no route: one value, so cardinality is bounded.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// A metric label's values as an enum with an `ALL` list, so every value can be registered at
/// zero at start-up (a dashboard shows 0, never "no data", for a counter that hasn't fired).
macro_rules! label_values {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($variant),*
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),*
                }
            }
        }
    };
}

label_values! {
    /// `logstitch_auth_requests_total{result}`.
    AuthResult {
        Ok => "ok",
        Missing => "missing",
        Invalid => "invalid",
        Revoked => "revoked",
        Expired => "expired",
        Throttled => "throttled",
        Unavailable => "unavailable",
    }
}

label_values! {
    /// `logstitch_cache_invalidations_total{source}`.
    InvalidationLabel {
        Local => "local",
        Notify => "notify",
        Flush => "flush",
    }
}

label_values! {
    /// `logstitch_rate_limited_total{kind}`.
    RateLimitedBy {
        Key => "key",
        Ip => "ip",
    }
}

label_values! {
    /// `logstitch_gateway_upstream_errors_total{kind}`.
    UpstreamErrorKind {
        Unavailable => "unavailable",
        Timeout => "timeout",
    }
}

label_values! {
    /// `logstitch_rate_limit_fallback_decisions_total{mode}`.
    RateLimitFallback {
        Local => "local",
        Deny => "deny",
    }
}

label_values! {
    /// `logstitch_rate_limit_redis_round_trips_total{kind}`.
    RedisRoundTrip {
        Sync => "sync",
        Prefetch => "prefetch",
    }
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    auth_requests: IntCounterVec,
    /// `auth_requests{result="ok"}`, resolved once: the hot path skips the label lookup.
    pub auth_ok: IntCounter,
    pub auth_cache_hits: IntCounter,
    pub auth_cache_misses: IntCounter,
    pub auth_db_lookups: IntCounter,
    pub auth_stale_served: IntCounter,
    cache_invalidations: IntCounterVec,
    pub invalidation_listener_up: IntGauge,
    pub keys_created: IntCounter,
    pub keys_revoked: IntCounter,
    pub keys_rolled: IntCounter,
    pub revocation_ack_timeouts: IntCounter,
    pub revocation_acks_received: IntCounter,
    pub org_actors: IntGauge,
    pub last_used_flush_duration: Histogram,
    pub last_used_flush_errors: IntCounter,
    pub last_used_dropped: IntCounter,
    pub listener_reconnects: IntCounter,
    rate_limited: IntCounterVec,
    gateway_upstream_errors: IntCounterVec,
    pub rate_limit_redis_up: IntGauge,
    pub rate_limit_redis_errors: IntCounter,
    rate_limit_fallback_decisions: IntCounterVec,
    rate_limit_redis_round_trips: IntCounterVec,
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    registry
        .register(Box::new(collector.clone()))
        .expect("metric names are unique");
    collector
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            register(
                &registry,
                IntCounter::new(name, help).expect("valid metric"),
            )
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
            )
        };
        let gauge = |name: &str, help: &str| {
            register(&registry, IntGauge::new(name, help).expect("valid metric"))
        };
        let histogram = |name: &str, help: &str| {
            register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                )
                .expect("valid metric"),
            )
        };

        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new("logstitch_build_info", "Build information; always 1"),
                &["version"],
            )
            .expect("valid metric"),
        );
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        let auth_requests = counter_vec(
            "logstitch_auth_requests_total",
            "Authentication results, once per request: ok, missing, invalid, revoked, throttled, unavailable (a key type a route refuses is ok here and 403 in logstitch_http_requests_total)",
            &["result"],
        );
        let metrics = Metrics {
            auth_ok: auth_requests.with_label_values(&["ok"]),
            auth_requests,
            http_requests: counter_vec(
                "logstitch_http_requests_total",
                "HTTP requests by method, matched route pattern and status",
                &["method", "route", "status"],
            ),
            http_request_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "logstitch_http_request_duration_seconds",
                        "HTTP request latency by matched route pattern",
                    )
                    .buckets(LATENCY_BUCKETS.to_vec()),
                    &["route"],
                )
                .expect("valid metric"),
            ),
            auth_cache_hits: counter(
                "logstitch_auth_cache_hits_total",
                "Auth lookups answered from the cache",
            ),
            auth_cache_misses: counter(
                "logstitch_auth_cache_misses_total",
                "Auth lookups not answered from the cache",
            ),
            auth_db_lookups: counter(
                "logstitch_auth_db_lookups_total",
                "Key lookups sent to Postgres (coalesced misses count once)",
            ),
            auth_stale_served: counter(
                "logstitch_auth_stale_served_total",
                "Identities served from the cache during the opt-in stale grace (listener and Postgres down)",
            ),
            cache_invalidations: counter_vec(
                "logstitch_cache_invalidations_total",
                "Auth cache invalidations by source: local, notify, flush",
                &["source"],
            ),
            invalidation_listener_up: gauge(
                "logstitch_invalidation_listener_up",
                "1 while the LISTEN connection for revocations is active",
            ),
            keys_created: counter("logstitch_keys_created_total", "Project keys created"),
            keys_revoked: counter("logstitch_keys_revoked_total", "Keys revoked"),
            keys_rolled: counter(
                "logstitch_keys_rolled_total",
                "Keys rolled (each also counts a created key)",
            ),
            revocation_ack_timeouts: counter(
                "logstitch_revocation_ack_timeouts_total",
                "Revocations answered before every listening instance acknowledged (ack timeout)",
            ),
            revocation_acks_received: counter(
                "logstitch_revocation_acks_received_total",
                "Acknowledgements of revocations heard by this instance: those of its own revocations, plus, while instances of a version before addressed acks run, every ack on the shared channel",
            ),
            org_actors: gauge(
                "logstitch_org_actors",
                "Organization actors currently running",
            ),
            last_used_flush_duration: histogram(
                "logstitch_last_used_flush_duration_seconds",
                "Time to write one batch of lastUsedAt updates",
            ),
            last_used_flush_errors: counter(
                "logstitch_last_used_flush_errors_total",
                "lastUsedAt flushes that failed (the batch is kept for the next one)",
            ),
            last_used_dropped: counter(
                "logstitch_last_used_dropped_total",
                "Key uses not recorded because last_used.max_pending keys were already waiting",
            ),
            listener_reconnects: counter(
                "logstitch_invalidation_listener_reconnects_total",
                "Times the invalidation listener lost its connection and reconnected",
            ),
            rate_limited: counter_vec(
                "logstitch_rate_limited_total",
                "Requests refused with 429, by kind: key (per-key limit), ip (failed auths)",
                &["kind"],
            ),
            gateway_upstream_errors: counter_vec(
                "logstitch_gateway_upstream_errors_total",
                "Forwarded requests that failed upstream, by route prefix and kind (unavailable, timeout)",
                &["route", "kind"],
            ),
            rate_limit_redis_up: gauge(
                "logstitch_rate_limit_redis_up",
                "1 while key rate limits are counted in Redis for the fleet (0: store local, or Redis not answering)",
            ),
            rate_limit_redis_errors: counter(
                "logstitch_rate_limit_redis_errors_total",
                "Redis calls for key rate limits that failed or passed rate_limit.redis_timeout_ms (probes during an outage included)",
            ),
            rate_limit_fallback_decisions: counter_vec(
                "logstitch_rate_limit_fallback_decisions_total",
                "Key rate-limit decisions taken without Redis, by rate_limit.on_redis_error mode: local (per-instance bucket), deny (503)",
                &["mode"],
            ),
            rate_limit_redis_round_trips: counter_vec(
                "logstitch_rate_limit_redis_round_trips_total",
                "Token leases asked of Redis: sync (a request waited for it), prefetch (in the background)",
                &["kind"],
            ),
            registry,
        };
        // Known label values start at 0, so dashboards show 0 rather than "no data".
        for result in AuthResult::ALL {
            metrics.auth_requests.with_label_values(&[result.as_str()]);
        }
        for source in InvalidationLabel::ALL {
            metrics
                .cache_invalidations
                .with_label_values(&[source.as_str()]);
        }
        for kind in RateLimitedBy::ALL {
            metrics.rate_limited.with_label_values(&[kind.as_str()]);
        }
        for mode in RateLimitFallback::ALL {
            metrics
                .rate_limit_fallback_decisions
                .with_label_values(&[mode.as_str()]);
        }
        for kind in RedisRoundTrip::ALL {
            metrics
                .rate_limit_redis_round_trips
                .with_label_values(&[kind.as_str()]);
        }
        metrics
    }

    /// Registers every (route, kind) of upstream errors at zero, for the configured routes.
    pub fn register_gateway_routes<'a>(&self, prefixes: impl IntoIterator<Item = &'a str>) {
        for prefix in prefixes {
            for kind in UpstreamErrorKind::ALL {
                self.gateway_upstream_errors
                    .with_label_values(&[prefix, kind.as_str()]);
            }
        }
    }

    pub fn auth_result(&self, result: AuthResult) {
        self.auth_requests
            .with_label_values(&[result.as_str()])
            .inc();
    }

    pub fn cache_invalidated(&self, source: InvalidationLabel) {
        self.cache_invalidations
            .with_label_values(&[source.as_str()])
            .inc();
    }

    pub fn rate_limited(&self, by: RateLimitedBy) {
        self.rate_limited.with_label_values(&[by.as_str()]).inc();
    }

    pub fn rate_limit_fallback(&self, mode: RateLimitFallback) {
        self.rate_limit_fallback_decisions
            .with_label_values(&[mode.as_str()])
            .inc();
    }

    pub fn redis_round_trip(&self, kind: RedisRoundTrip) {
        self.rate_limit_redis_round_trips
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    pub fn upstream_error(&self, route: &str, kind: UpstreamErrorKind) {
        self.gateway_upstream_errors
            .with_label_values(&[route, kind.as_str()])
            .inc();
    }

    /// Adds the gauges read at scrape time from live state: the pool's, the auth cache's
    /// entries, the keys whose lastUsedAt waits for a flush.
    pub fn watch(&self, pool: Pool, cache: Arc<dyn LiveCount>, last_used: Arc<dyn LiveCount>) {
        self.registry
            .register(Box::new(LiveState::new(pool, cache, last_used)))
            .expect("live-state metric names are unique");
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

/// A size read at scrape time: the auth cache's entries, the keys waiting for a lastUsedAt
/// flush. Their owners implement it (in src/auth), so metrics imports nothing of theirs.
pub trait LiveCount: Send + Sync {
    fn live_count(&self) -> u64;
}

/// Pool, cache and backlog gauges, read when Prometheus scrapes.
struct LiveState {
    pool: Pool,
    cache: Arc<dyn LiveCount>,
    last_used: Arc<dyn LiveCount>,
    pool_size: IntGauge,
    pool_max_size: IntGauge,
    pool_available: IntGauge,
    pool_waiting: IntGauge,
    cache_entries: IntGauge,
    last_used_pending: IntGauge,
}

impl LiveState {
    fn new(pool: Pool, cache: Arc<dyn LiveCount>, last_used: Arc<dyn LiveCount>) -> LiveState {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid metric");
        LiveState {
            pool,
            cache,
            last_used,
            pool_size: gauge("logstitch_db_pool_size", "Connections open in the pool"),
            pool_max_size: gauge(
                "logstitch_db_pool_max_size",
                "Connections the pool may open (database.pool_max_size)",
            ),
            pool_available: gauge(
                "logstitch_db_pool_available",
                "Idle connections ready in the pool",
            ),
            pool_waiting: gauge(
                "logstitch_db_pool_waiting",
                "Requests waiting for a pool connection",
            ),
            cache_entries: gauge(
                "logstitch_auth_cache_entries",
                "Entries in the auth cache (approximate)",
            ),
            last_used_pending: gauge(
                "logstitch_last_used_pending",
                "Keys whose lastUsedAt waits for the next flush",
            ),
        }
    }

    fn gauges(&self) -> [&IntGauge; 6] {
        [
            &self.pool_size,
            &self.pool_max_size,
            &self.pool_available,
            &self.pool_waiting,
            &self.cache_entries,
            &self.last_used_pending,
        ]
    }
}

impl Collector for LiveState {
    fn desc(&self) -> Vec<&Desc> {
        self.gauges().into_iter().flat_map(|g| g.desc()).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let status = self.pool.status();
        self.pool_size.set(status.size as i64);
        self.pool_max_size.set(status.max_size as i64);
        self.pool_available.set(status.available as i64);
        self.pool_waiting.set(status.waiting as i64);
        self.cache_entries.set(self.cache.live_count() as i64);
        self.last_used_pending
            .set(self.last_used.live_count() as i64);
        self.gauges()
            .into_iter()
            .flat_map(|g| g.collect())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_value_is_exported_at_zero_from_the_start() {
        let metrics = Metrics::new();
        metrics.register_gateway_routes(["/api/v1/events"]);
        let text = metrics.render();
        let mut expected = Vec::new();
        let series = |metric: &str, label: &str, values: Vec<&str>| {
            values
                .into_iter()
                .map(|value| format!("{metric}{{{label}=\"{value}\"}} 0"))
                .collect::<Vec<_>>()
        };
        expected.extend(series(
            "logstitch_auth_requests_total",
            "result",
            AuthResult::ALL.iter().map(|v| v.as_str()).collect(),
        ));
        expected.extend(series(
            "logstitch_cache_invalidations_total",
            "source",
            InvalidationLabel::ALL.iter().map(|v| v.as_str()).collect(),
        ));
        expected.extend(series(
            "logstitch_rate_limited_total",
            "kind",
            RateLimitedBy::ALL.iter().map(|v| v.as_str()).collect(),
        ));
        expected.extend(series(
            "logstitch_rate_limit_fallback_decisions_total",
            "mode",
            RateLimitFallback::ALL.iter().map(|v| v.as_str()).collect(),
        ));
        expected.extend(series(
            "logstitch_rate_limit_redis_round_trips_total",
            "kind",
            RedisRoundTrip::ALL.iter().map(|v| v.as_str()).collect(),
        ));
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
