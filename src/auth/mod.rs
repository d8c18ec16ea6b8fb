//! Authentication: who a bearer key is (`Identity`), the cache in front of Postgres with its
//! freshness guard, and the lastUsedAt recorder. The middleware that resolves a request's key
//! and the typed extractors handlers use are in `access`, above the application state.
//!
//! The hot path, top to bottom: header → format check → SHA-256 → cache → identity. Only a
//! key without a fresh cached answer meets the failed-auth throttle and, past it, the store.
//! It never goes through an actor mailbox.

mod cache;
mod freshness;
mod inflight;
mod last_used;
mod trust;

pub use cache::{
    cache_settings, AuthCache, CacheSettings, InvalidationSource, KeyLookup, LoadEpoch,
    LookupFuture,
};
pub use last_used::LastUsedRecorder;
