//! Authentication: who a bearer key is (`Identity`), the cache in front of Postgres with its
//! freshness guard, the middleware that resolves the key once per request, and the typed
//! extractor handlers use.
//!
//! The hot path, top to bottom: header → format check → SHA-256 → cache → identity. Only a
//! key without a fresh cached answer meets the failed-auth throttle and, past it, the store.
//! It never goes through an actor mailbox.

mod cache;
mod extract;
mod freshness;
mod identity;
mod inflight;
mod last_used;
mod trust;

pub use cache::{
    cache_settings, AuthCache, CacheSettings, InvalidationSource, KeyLookup, LoadEpoch,
    LookupFuture,
};
pub(crate) use extract::bearer_token;
pub use extract::{
    authenticate, authorize, AnyKey, AuthFailure, AuthOutcome, Authenticated, MasterOnly,
    Permission,
};
pub use identity::{Identity, KeyState};
pub use last_used::LastUsedRecorder;
