//! Gauges that mirror live state (the database pool, the auth cache, the lastUsedAt backlog),
//! read when Prometheus scrapes rather than kept up to date.

use std::sync::Arc;

use deadpool_postgres::Pool;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::IntGauge;

/// A size read at scrape time: the auth cache's entries, the keys waiting for a lastUsedAt
/// flush. Their owners implement it (in src/auth), so metrics imports nothing of theirs.
pub trait LiveCount: Send + Sync {
    fn live_count(&self) -> u64;
}

/// Pool, cache and backlog gauges, read when Prometheus scrapes.
pub(super) struct LiveState {
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
    pub(super) fn new(
        pool: Pool,
        cache: Arc<dyn LiveCount>,
        last_used: Arc<dyn LiveCount>,
    ) -> LiveState {
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
