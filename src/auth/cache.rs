//! The auth cache: SHA-256 of a key → its identity (or "unknown"), in front of Postgres.
//!
//! Staleness rules, in order of strength:
//! - A revocation invalidates the entry on the instance that served it before the DELETE
//!   answers, and on every other instance when the NOTIFY arrives.
//! - A load that began before an invalidation must not resurrect the old answer. Every load
//!   records the epoch at which it began; an invalidation bumps the epoch and remembers, per
//!   hash, the epoch it happened at. An entry (or a coalesced load result) older than its
//!   hash's last invalidation, or older than the last flush, is never served.
//! - While the invalidation listener is down the cache is not trusted: lookups go straight to
//!   Postgres and nothing is inserted, until the listener is back and the cache was flushed.
//! - The TTL is only a safety net; unknown hashes are remembered for a shorter TTL.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moka::Expiry;

use super::Identity;
use crate::domain::KeyHash;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};

/// Longer than any lookup can take (statement and pool timeouts are seconds), so a load that
/// began before an invalidation always still finds that invalidation remembered.
const INVALIDATION_MEMORY: Duration = Duration::from_secs(120);
const INVALIDATION_MEMORY_ENTRIES: u64 = 100_000;
/// After this many stale answers in a row, read Postgres directly instead of the cache.
const STALE_RETRIES: usize = 3;

pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<Identity>, StoreError>> + Send + 'a>>;

/// Where identities come from on a miss: Postgres in the service, a controllable fake in the
/// cache's own unit tests.
pub trait KeyLookup: Send + Sync + 'static {
    fn find_identity<'a>(&'a self, hash: &'a KeyHash) -> LookupFuture<'a>;
}

impl KeyLookup for Store {
    fn find_identity<'a>(&'a self, hash: &'a KeyHash) -> LookupFuture<'a> {
        Box::pin(Store::find_identity(self, hash))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidationSource {
    /// This instance revoked the key.
    Local,
    /// Another instance's revocation, heard through LISTEN/NOTIFY.
    Notify,
}

impl InvalidationSource {
    pub fn label(self) -> &'static str {
        match self {
            InvalidationSource::Local => "local",
            InvalidationSource::Notify => "notify",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    loaded_at_epoch: u64,
    identity: Option<Identity>,
}

struct EntryExpiry {
    known: Duration,
    unknown: Duration,
}

impl EntryExpiry {
    fn ttl(&self, entry: &Entry) -> Option<Duration> {
        Some(if entry.identity.is_some() {
            self.known
        } else {
            self.unknown
        })
    }
}

impl Expiry<KeyHash, Entry> for EntryExpiry {
    fn expire_after_create(&self, _: &KeyHash, entry: &Entry, _: Instant) -> Option<Duration> {
        self.ttl(entry)
    }

    fn expire_after_update(
        &self,
        _: &KeyHash,
        entry: &Entry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.ttl(entry)
    }
}

pub struct CacheSettings {
    pub max_entries: u64,
    pub ttl: Duration,
    pub unknown_ttl: Duration,
    /// Zero: fail closed while the listener is down. Otherwise, when Postgres can't answer,
    /// cached valid keys keep working for at most this long after the listener went down.
    pub stale_grace: Duration,
}

pub fn cache_settings(auth: &crate::configuration::AuthSettings) -> CacheSettings {
    CacheSettings {
        max_entries: auth.cache_max_entries,
        ttl: Duration::from_secs(auth.cache_ttl_secs),
        unknown_ttl: Duration::from_secs(auth.negative_ttl_secs),
        stale_grace: Duration::from_secs(auth.stale_grace_secs),
    }
}

pub struct AuthCache {
    entries: moka::future::Cache<KeyHash, Entry>,
    invalidated_at: moka::sync::Cache<KeyHash, u64>,
    epoch: AtomicU64,
    flushed_at: AtomicU64,
    /// The epoch of the newest single-key invalidation: an entry loaded at or after it can't
    /// have been invalidated since, so its hit needs no second lookup.
    newest_invalidation: AtomicU64,
    trusted: AtomicBool,
    /// When the cache stopped being trusted; bounds the opt-in stale grace.
    distrusted_at: Mutex<Option<Instant>>,
    stale_grace: Duration,
    lookup: Arc<dyn KeyLookup>,
    metrics: Arc<Metrics>,
}

impl AuthCache {
    /// Starts untrusted: nothing is cached until the invalidation listener is listening.
    pub fn new(settings: CacheSettings, lookup: Arc<dyn KeyLookup>, metrics: Arc<Metrics>) -> Self {
        let entries = moka::future::Cache::builder()
            .max_capacity(settings.max_entries)
            .expire_after(EntryExpiry {
                known: settings.ttl,
                unknown: settings.unknown_ttl,
            })
            .build();
        let invalidated_at = moka::sync::Cache::builder()
            .max_capacity(INVALIDATION_MEMORY_ENTRIES)
            .time_to_live(INVALIDATION_MEMORY)
            .build();
        AuthCache {
            entries,
            invalidated_at,
            epoch: AtomicU64::new(1),
            flushed_at: AtomicU64::new(0),
            newest_invalidation: AtomicU64::new(0),
            trusted: AtomicBool::new(false),
            distrusted_at: Mutex::new(None),
            stale_grace: settings.stale_grace,
            lookup,
            metrics,
        }
    }

    /// The identity of a key hash, or None when no key has it.
    pub async fn resolve(&self, hash: KeyHash) -> Result<Option<Identity>, Arc<StoreError>> {
        if !self.trusted.load(Ordering::Acquire) {
            self.metrics.auth_cache_misses.inc();
            return match self.load(hash).await {
                Ok(entry) => Ok(entry.identity),
                Err(error) => match self.within_stale_grace(&hash).await {
                    Some(identity) => {
                        self.metrics.auth_stale_served.inc();
                        Ok(Some(identity))
                    }
                    None => Err(Arc::new(error)),
                },
            };
        }
        let mut stale = match self.entries.get(&hash).await {
            Some(entry) if self.is_fresh(&hash, &entry) => {
                self.metrics.auth_cache_hits.inc();
                return Ok(entry.identity);
            }
            Some(_) => true,
            None => false,
        };
        self.metrics.auth_cache_misses.inc();
        for _ in 0..STALE_RETRIES {
            if stale {
                self.entries.invalidate(&hash).await;
            }
            // Concurrent misses for one hash share this load.
            let entry = self.entries.try_get_with(hash, self.load(hash)).await?;
            if self.is_fresh(&hash, &entry) {
                return Ok(entry.identity);
            }
            stale = true;
        }
        Ok(self.load(hash).await?.identity)
    }

    /// A key just created: its first use is then a hit.
    pub async fn insert_created(&self, hash: KeyHash, identity: Identity) {
        let entry = Entry {
            loaded_at_epoch: self.epoch.load(Ordering::SeqCst),
            identity: Some(identity),
        };
        self.entries.insert(hash, entry).await;
    }

    pub async fn invalidate(&self, hash: KeyHash, source: InvalidationSource) {
        let at = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        // Remembered before it is announced in `newest_invalidation`, so a reader that sees
        // the new watermark also finds the entry.
        self.invalidated_at.insert(hash, at);
        self.newest_invalidation.fetch_max(at, Ordering::SeqCst);
        self.entries.invalidate(&hash).await;
        self.metrics
            .cache_invalidations
            .with_label_values(&[source.label()])
            .inc();
    }

    /// The listener lost its connection: notifications may be lost from now on.
    pub fn distrust(&self) {
        self.trusted.store(false, Ordering::Release);
        self.lock_distrusted_at().get_or_insert_with(Instant::now);
        if self.stale_grace.is_zero() {
            self.flush();
        }
    }

    /// The listener is listening again. Flushing *after* LISTEN is active closes the gap in
    /// which a revocation could have been missed.
    pub fn flush_and_trust(&self) {
        self.flush();
        *self.lock_distrusted_at() = None;
        self.trusted.store(true, Ordering::Release);
    }

    fn lock_distrusted_at(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.distrusted_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The opt-in trade: a cached, valid, never-invalidated identity, while the listener has
    /// been down for less than the grace.
    async fn within_stale_grace(&self, hash: &KeyHash) -> Option<Identity> {
        let down_since = (*self.lock_distrusted_at())?;
        if self.stale_grace.is_zero() || down_since.elapsed() >= self.stale_grace {
            return None;
        }
        let entry = self.entries.get(hash).await?;
        let invalidated_since_load = self
            .invalidated_at
            .get(hash)
            .is_some_and(|at| entry.loaded_at_epoch < at);
        entry
            .identity
            .filter(|identity| !identity.revoked && !invalidated_since_load)
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    fn flush(&self) {
        let at = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.flushed_at.fetch_max(at, Ordering::SeqCst);
        self.entries.invalidate_all();
        self.metrics
            .cache_invalidations
            .with_label_values(&["flush"])
            .inc();
    }

    fn is_fresh(&self, hash: &KeyHash, entry: &Entry) -> bool {
        let loaded = entry.loaded_at_epoch;
        loaded >= self.flushed_at.load(Ordering::SeqCst)
            && (loaded >= self.newest_invalidation.load(Ordering::SeqCst)
                || self.invalidated_at.get(hash).is_none_or(|at| loaded >= at))
    }

    async fn load(&self, hash: KeyHash) -> Result<Entry, StoreError> {
        // Read the epoch before the query starts: an invalidation after this point is
        // newer than whatever the query sees.
        let loaded_at_epoch = self.epoch.load(Ordering::SeqCst);
        self.metrics.auth_db_lookups.inc();
        let identity = self.lookup.find_identity(&hash).await?;
        Ok(Entry {
            loaded_at_epoch,
            identity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{KeyId, KeyType, OrgId};
    use tokio::sync::Notify;

    /// A lookup whose answer the test sets, and which can be held mid-query.
    struct FakeLookup {
        answer: Mutex<Option<Identity>>,
        calls: AtomicU64,
        hold: Mutex<Option<Arc<Notify>>>,
        entered: Notify,
    }

    impl FakeLookup {
        fn new(answer: Option<Identity>) -> Arc<Self> {
            Arc::new(FakeLookup {
                answer: Mutex::new(answer),
                calls: AtomicU64::new(0),
                hold: Mutex::new(None),
                entered: Notify::new(),
            })
        }
    }

    impl KeyLookup for FakeLookup {
        fn find_identity<'a>(&'a self, _: &'a KeyHash) -> LookupFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                // The answer is read when the query "runs", before any hold.
                let answer = *self.answer.lock().unwrap();
                let hold = self.hold.lock().unwrap().take();
                if let Some(release) = hold {
                    self.entered.notify_one();
                    release.notified().await;
                }
                Ok(answer)
            })
        }
    }

    fn identity(revoked: bool) -> Identity {
        Identity {
            key_id: KeyId::new(),
            organization_id: OrgId::new(),
            project_id: None,
            key_type: KeyType::Master,
            revoked,
        }
    }

    fn cache(lookup: Arc<FakeLookup>) -> AuthCache {
        let cache = AuthCache::new(
            CacheSettings {
                max_entries: 1000,
                ttl: Duration::from_secs(60),
                unknown_ttl: Duration::from_secs(60),
                stale_grace: Duration::ZERO,
            },
            lookup,
            Arc::new(Metrics::new()),
        );
        cache.flush_and_trust();
        cache
    }

    #[tokio::test]
    async fn a_second_resolve_is_a_hit() {
        let lookup = FakeLookup::new(Some(identity(false)));
        let cache = cache(lookup.clone());
        let hash = KeyHash::of("a");
        cache.resolve(hash).await.unwrap();
        cache.resolve(hash).await.unwrap();
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unknown_hashes_are_cached_too() {
        let lookup = FakeLookup::new(None);
        let cache = cache(lookup.clone());
        let hash = KeyHash::of("junk");
        assert_eq!(cache.resolve(hash).await.unwrap(), None);
        assert_eq!(cache.resolve(hash).await.unwrap(), None);
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_lookup() {
        let lookup = FakeLookup::new(Some(identity(false)));
        let cache = cache(lookup.clone());
        let hash = KeyHash::of("a");
        let all = futures_util::future::join_all((0..32).map(|_| cache.resolve(hash))).await;
        assert!(all.iter().all(|r| r.as_ref().unwrap().is_some()));
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_load_that_began_before_an_invalidation_is_not_served_after_it() {
        let valid = identity(false);
        let lookup = FakeLookup::new(Some(valid));
        let cache = Arc::new(cache(lookup.clone()));
        let hash = KeyHash::of("a");
        let release = Arc::new(Notify::new());
        *lookup.hold.lock().unwrap() = Some(release.clone());

        // A lookup reads "valid" and is held before it can return.
        let early = tokio::spawn({
            let cache = cache.clone();
            async move { cache.resolve(hash).await }
        });
        lookup.entered.notified().await;
        // Meanwhile the key is revoked and invalidated.
        *lookup.answer.lock().unwrap() = Some(Identity {
            revoked: true,
            ..valid
        });
        cache.invalidate(hash, InvalidationSource::Local).await;
        release.notify_one();
        let _ = early.await.unwrap();

        // Whatever the early request saw, every later one sees the revocation.
        let later = cache.resolve(hash).await.unwrap().unwrap();
        assert!(
            later.revoked,
            "stale valid answer served after invalidation"
        );
    }

    #[tokio::test]
    async fn an_untrusted_cache_reads_through_and_a_flush_drops_everything() {
        let lookup = FakeLookup::new(Some(identity(false)));
        let cache = cache(lookup.clone());
        let hash = KeyHash::of("a");
        cache.resolve(hash).await.unwrap();
        cache.distrust();
        cache.resolve(hash).await.unwrap();
        cache.resolve(hash).await.unwrap();
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 3);
        // Revoked while untrusted: once trusted again, the old entry must not come back.
        *lookup.answer.lock().unwrap() = Some(identity(true));
        cache.flush_and_trust();
        assert!(cache.resolve(hash).await.unwrap().unwrap().revoked);
    }

    #[tokio::test]
    async fn a_created_key_is_a_hit_on_first_use() {
        let lookup = FakeLookup::new(None);
        let cache = cache(lookup.clone());
        let hash = KeyHash::of("new");
        cache.insert_created(hash, identity(false)).await;
        assert!(cache.resolve(hash).await.unwrap().is_some());
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 0);
    }
}
