//! Every Prometheus metric the gateway exports. The registry belongs to the application state
//! (not a global), so tests running several servers don't share counters. Gauges that mirror
//! other state (pool, cache, backlog) are read at scrape time.
//!
//! One file per part of the system the families watch, each naming its families (name, help,
//! labels) and their label values: `http` (and `route`, which counts each request), `auth`
//! (the hot path, its cache, lastUsedAt), `keys` (the key lifecycle the org actors run),
//! `revocation` (the listener and the acks), `rate_limit` (429s, Redis), `upstream`
//! (forwarding), `webhooks` (attempts and the outbox queue), `secret_scanning` (leak reports), `usage` (usage flushes and their backlog) and `live` (the gauges read when Prometheus scrapes). `registry` composes
//! them into [`Metrics`]; `family` holds what building a family takes. The files below import
//! each other, never this one.

mod auth;
mod family;
mod http;
mod keys;
mod live;
mod rate_limit;
mod registry;
mod revocation;
mod route;
mod secret_scanning;
mod upstream;
mod usage;
mod webhooks;

pub use auth::{AuthResult, InvalidationLabel};
pub use http::UNMATCHED_ROUTE;
pub use live::LiveCount;
pub use rate_limit::{RateLimitFallback, RateLimitedBy, RedisRoundTrip};
pub use registry::Metrics;
pub use route::{counted_resource, observe_unrouted, RouteMetrics};
pub use secret_scanning::{
    KeyFetchOutcome, LeakedKeyType, ReportOutcome, SecretScanningMetrics, TokenLabel,
};
pub use upstream::UpstreamErrorKind;
pub use usage::{UsageBacklog, UsageMetrics};
pub use webhooks::WebhookOutcome;
