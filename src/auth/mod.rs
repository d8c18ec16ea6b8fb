//! Authentication: who a bearer key is (`Identity`), the cache in front of Postgres, the
//! middleware that resolves the key once per request, and the typed extractor handlers use.
//!
//! The hot path, top to bottom: header → format check → SHA-256 → cache → (miss) store →
//! identity. It never goes through an actor mailbox.

mod cache;
mod extract;
mod identity;
mod last_used;

pub use cache::{
    cache_settings, AuthCache, CacheSettings, InvalidationSource, KeyLookup, LookupFuture,
};
pub use extract::{
    authenticate, authorize, AnyKey, AuthFailure, AuthOutcome, Authenticated, MasterOnly,
    Permission,
};
pub use identity::Identity;
pub use last_used::LastUsedRecorder;
