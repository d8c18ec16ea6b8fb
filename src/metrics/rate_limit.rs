//! Rate limits (src/gateway, and the failed-auth throttle): requests refused with 429, and the
//! Redis store that counts key limits for the fleet.

use prometheus::{IntCounter, IntGauge};

use super::family::{label_values, Families, LabelledCounter};

label_values! {
    /// `logstitch_rate_limited_total{kind}`.
    RateLimitedBy {
        Key => "key",
        Ip => "ip",
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

pub(super) fn rate_limited(families: &Families) -> LabelledCounter<RateLimitedBy> {
    families.labelled(
        "logstitch_rate_limited_total",
        "Requests refused with 429, by kind: key (per-key limit), ip (failed auths)",
        "kind",
    )
}

pub(super) fn redis_up(families: &Families) -> IntGauge {
    families.gauge(
        "logstitch_rate_limit_redis_up",
        "1 while key rate limits are counted in Redis for the fleet (0: store local, or Redis not answering)",
    )
}

pub(super) fn redis_errors(families: &Families) -> IntCounter {
    families.counter(
        "logstitch_rate_limit_redis_errors_total",
        "Redis calls for key rate limits that failed or passed rate_limit.redis_timeout_ms (probes during an outage included)",
    )
}

pub(super) fn fallback_decisions(families: &Families) -> LabelledCounter<RateLimitFallback> {
    families.labelled(
        "logstitch_rate_limit_fallback_decisions_total",
        "Key rate-limit decisions taken without Redis, by rate_limit.on_redis_error mode: local (per-instance bucket), deny (503)",
        "mode",
    )
}

pub(super) fn redis_round_trips(families: &Families) -> LabelledCounter<RedisRoundTrip> {
    families.labelled(
        "logstitch_rate_limit_redis_round_trips_total",
        "Token leases asked of Redis: sync (a request waited for it), prefetch (in the background)",
        "kind",
    )
}
