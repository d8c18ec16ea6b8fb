//! The authentication hot path (src/auth): results, the cache in front of Postgres, and the
//! lastUsedAt recorder that batches key uses.

use prometheus::{Histogram, IntCounter};

use super::family::{label_values, Families, LabelledCounter};

label_values! {
    /// `logstitch_auth_requests_total{result}`.
    AuthResult {
        Ok => "ok",
        Missing => "missing",
        Invalid => "invalid",
        Revoked => "revoked",
        Expired => "expired",
        Disabled => "disabled",
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

pub(super) fn requests(families: &Families) -> LabelledCounter<AuthResult> {
    families.labelled(
        "logstitch_auth_requests_total",
        "Authentication results, once per request: ok, missing, invalid, revoked, expired, disabled, throttled, unavailable (a key type or scope a route refuses is ok here and 403 in logstitch_http_requests_total)",
        "result",
    )
}

pub(super) fn cache_hits(families: &Families) -> IntCounter {
    families.counter(
        "logstitch_auth_cache_hits_total",
        "Auth lookups answered from the cache",
    )
}

pub(super) fn cache_misses(families: &Families) -> IntCounter {
    families.counter(
        "logstitch_auth_cache_misses_total",
        "Auth lookups not answered from the cache",
    )
}

pub(super) fn db_lookups(families: &Families) -> IntCounter {
    families.counter(
        "logstitch_auth_db_lookups_total",
        "Key lookups sent to Postgres (coalesced misses count once)",
    )
}

pub(super) fn stale_served(families: &Families) -> IntCounter {
    families.counter(
        "logstitch_auth_stale_served_total",
        "Identities served from the cache during the opt-in stale grace (listener and Postgres down)",
    )
}

pub(super) fn cache_invalidations(families: &Families) -> LabelledCounter<InvalidationLabel> {
    families.labelled(
        "logstitch_cache_invalidations_total",
        "Auth cache invalidations by source: local, notify, flush",
        "source",
    )
}

pub(super) fn last_used_flush_duration(families: &Families) -> Histogram {
    families.histogram(
        "logstitch_last_used_flush_duration_seconds",
        "Time to write one batch of lastUsedAt updates",
    )
}

pub(super) fn last_used_flush_errors(families: &Families) -> IntCounter {
    families.counter(
        "logstitch_last_used_flush_errors_total",
        "lastUsedAt flushes that failed (the batch is kept for the next one)",
    )
}

pub(super) fn last_used_dropped(families: &Families) -> IntCounter {
    families.counter(
        "logstitch_last_used_dropped_total",
        "Key uses not recorded because last_used.max_pending keys were already waiting",
    )
}
