//! Usage counting (src/usage): its flushes (duration, failures, retries found already
//! applied), retention, and the backlog read at scrape time (requests counted and not yet
//! written, and how long ago the last flush left nothing behind).

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, Histogram, IntCounter, IntGauge};

use super::family::Families;

/// What the usage recorder shows at scrape time. Implemented in src/usage, so metrics
/// imports nothing of it.
pub trait UsageBacklog: Send + Sync {
    /// Requests counted in memory and not yet in Postgres.
    fn pending_requests(&self) -> u64;
    /// Seconds since the last flush that left nothing unwritten (since start if none).
    fn flush_lag_seconds(&self) -> f64;
}

/// The usage families updated as things happen.
pub struct UsageMetrics {
    pub flush_duration: Histogram,
    pub flush_errors: IntCounter,
    pub flush_replays: IntCounter,
    pub pruned_rows: IntCounter,
}

impl UsageMetrics {
    pub(super) fn new(families: &Families) -> UsageMetrics {
        UsageMetrics {
            flush_duration: families.histogram(
                "logstitch_usage_flush_duration_seconds",
                "Time to write one batch of usage counts (one transaction)",
            ),
            flush_errors: families.counter(
                "logstitch_usage_flush_errors_total",
                "Usage flushes that failed (the batch is retried as it was, under its sequence number)",
            ),
            flush_replays: families.counter(
                "logstitch_usage_flush_replays_total",
                "Usage flushes retried after a failure that Postgres had in fact committed (applied once, not twice)",
            ),
            pruned_rows: families.counter(
                "logstitch_usage_pruned_rows_total",
                "Hourly usage rows deleted for being older than usage.retention_days",
            ),
        }
    }
}

/// `logstitch_usage_pending_requests` and `logstitch_usage_flush_lag_seconds`.
pub(super) struct UsageLive {
    backlog: Arc<dyn UsageBacklog>,
    pending: IntGauge,
    lag: Gauge,
}

impl UsageLive {
    pub(super) fn new(backlog: Arc<dyn UsageBacklog>) -> UsageLive {
        UsageLive {
            backlog,
            pending: IntGauge::new(
                "logstitch_usage_pending_requests",
                "Requests counted in memory whose usage waits for the next flush",
            )
            .expect("valid metric"),
            lag: Gauge::new(
                "logstitch_usage_flush_lag_seconds",
                "Seconds since a usage flush last left nothing unwritten",
            )
            .expect("valid metric"),
        }
    }
}

impl Collector for UsageLive {
    fn desc(&self) -> Vec<&Desc> {
        self.pending
            .desc()
            .into_iter()
            .chain(self.lag.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.pending
            .set(i64::try_from(self.backlog.pending_requests()).unwrap_or(i64::MAX));
        self.lag.set(self.backlog.flush_lag_seconds());
        self.pending
            .collect()
            .into_iter()
            .chain(self.lag.collect())
            .collect()
    }
}
