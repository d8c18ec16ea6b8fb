//! The auth cache: SHA-256 of a key → its identity (or "unknown"), in front of Postgres.
//!
//! Staleness rules, in order of strength:
//! - A revocation invalidates the entry on the instance that served it before the DELETE
//!   answers, and on every other instance when the NOTIFY arrives.
//! - A load that began before an invalidation must not resurrect the old answer: the
//!   freshness guard (`freshness.rs`) judges every entry and every load result by the epoch
//!   at which it began. So is a created key's entry: its epoch is taken before the create's
//!   transaction begins.
//! - While the invalidation listener is down the cache is not trusted: lookups go to Postgres
//!   (still one query per hash at a time) and nothing is inserted, until the listener is back
//!   and the cache was flushed.
//! - The TTL is only a safety net; unknown hashes are remembered for a shorter TTL.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt};
use moka::Expiry;

pub use super::freshness::LoadEpoch;
use super::freshness::{FreshnessGuard, INVALIDATION_MEMORY_ENTRIES};
use super::inflight::InFlight;
use super::trust::Trust;
use crate::configuration::INVALIDATION_MEMORY;
use crate::domain::{Identity, KeyHash, KeyState};
use crate::metrics::{InvalidationLabel, LiveCount, Metrics};
use crate::store::{Store, StoreError};

/// After this many stale answers in a row, read Postgres directly instead of the cache.
const STALE_RETRIES: usize = 3;

pub type LookupFuture<'a> = Pin<Box<dyn Future<Output = Result<KeyState, StoreError>> + Send + 'a>>;

/// Where identities come from on a miss: Postgres in the service, a controllable fake in the
/// cache's own unit tests.
pub trait KeyLookup: Send + Sync + 'static {
    fn find_key_state<'a>(&'a self, hash: &'a KeyHash) -> LookupFuture<'a>;
}

impl KeyLookup for Store {
    fn find_key_state<'a>(&'a self, hash: &'a KeyHash) -> LookupFuture<'a> {
        Box::pin(Store::find_key_state(self, hash))
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
    pub fn label(self) -> InvalidationLabel {
        match self {
            InvalidationSource::Local => InvalidationLabel::Local,
            InvalidationSource::Notify => InvalidationLabel::Notify,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    loaded_at: LoadEpoch,
    state: KeyState,
}

struct EntryExpiry {
    known: Duration,
    unknown: Duration,
}

impl EntryExpiry {
    fn ttl(&self, entry: &Entry) -> Option<Duration> {
        Some(match entry.state {
            KeyState::Active(_) | KeyState::Revoked(_) => self.known,
            KeyState::Unknown => self.unknown,
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
        max_entries: auth.cache_max_entries.get(),
        ttl: auth.cache_ttl,
        unknown_ttl: auth.negative_ttl,
        stale_grace: auth.stale_grace,
    }
}

pub struct AuthCache {
    entries: moka::future::Cache<KeyHash, Entry>,
    guard: FreshnessGuard,
    loads: InFlight<Result<Entry, Arc<StoreError>>>,
    trust: Trust,
    lookup: Arc<dyn KeyLookup>,
    metrics: Arc<Metrics>,
}

impl AuthCache {
    /// Starts untrusted: nothing is cached until the invalidation listener is listening.
    pub fn new(settings: CacheSettings, lookup: Arc<dyn KeyLookup>, metrics: Arc<Metrics>) -> Self {
        AuthCache::with_guard(
            settings,
            FreshnessGuard::new(INVALIDATION_MEMORY_ENTRIES, INVALIDATION_MEMORY),
            lookup,
            metrics,
        )
    }

    fn with_guard(
        settings: CacheSettings,
        guard: FreshnessGuard,
        lookup: Arc<dyn KeyLookup>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let entries = moka::future::Cache::builder()
            .max_capacity(settings.max_entries)
            .expire_after(EntryExpiry {
                known: settings.ttl,
                unknown: settings.unknown_ttl,
            })
            .build();
        AuthCache {
            entries,
            guard,
            loads: InFlight::new(),
            trust: Trust::new(settings.stale_grace),
            lookup,
            metrics,
        }
    }

    /// What a key hash is: the cached answer when there is a fresh one, else Postgres's.
    pub async fn resolve(&self, hash: KeyHash) -> Result<KeyState, Arc<StoreError>> {
        match self.peek(&hash).await {
            Some(answer) => Ok(answer),
            None => self.fetch(hash).await,
        }
    }

    /// The fresh cached answer for a hash, if there is one. Never a lookup; None while the
    /// cache is not trusted.
    pub async fn peek(&self, hash: &KeyHash) -> Option<KeyState> {
        let state = self.cached(hash).await?;
        self.metrics.auth_cache_hits.inc();
        Some(state)
    }

    /// A fresh cached answer, when the cache is trusted; counts nothing.
    async fn cached(&self, hash: &KeyHash) -> Option<KeyState> {
        if !self.trust.is_trusted() {
            return None;
        }
        let entry = self.entries.get(hash).await?;
        self.guard
            .is_fresh(hash, entry.loaded_at)
            .then_some(entry.state)
    }

    /// Postgres's answer for a hash (shared with concurrent lookups of the same hash), cached
    /// when the cache is trusted and the answer fresh.
    pub async fn fetch(&self, hash: KeyHash) -> Result<KeyState, Arc<StoreError>> {
        self.metrics.auth_cache_misses.inc();
        for _ in 0..STALE_RETRIES {
            // A load that another worker finished and cached since this request's miss
            // answers it: checked just before joining or starting a load (nothing awaits in
            // between), so concurrent first uses of a key make one query, not two.
            if let Some(state) = self.cached(&hash).await {
                return Ok(state);
            }
            // Held until the answer is cached, so no miss in between starts a second query.
            let loaded = self.loads.share(hash, || self.start_load(hash)).await;
            let entry = match &loaded.value {
                Ok(entry) => entry.clone(),
                Err(error) => {
                    let error = error.clone();
                    drop(loaded);
                    return self.stale_grace_or(hash, error).await;
                }
            };
            if self.guard.is_fresh(&hash, entry.loaded_at) {
                let state = entry.state.clone();
                if self.trust.is_trusted() {
                    self.entries.insert(hash, entry).await;
                }
                return Ok(state);
            }
        }
        // Invalidations keep overtaking the shared loads: one of our own, served as it is.
        match self.start_load(hash).await {
            Ok(entry) => Ok(entry.state),
            Err(error) => self.stale_grace_or(hash, error).await,
        }
    }

    /// The epoch to hand to [`AuthCache::insert_created`]: take it before the create's
    /// transaction begins.
    pub fn epoch(&self) -> LoadEpoch {
        self.guard.current()
    }

    /// A key just created, so that its first use is a hit. `began` is the epoch taken before
    /// the create's transaction began: a revocation of the key heard since (from another
    /// instance, between commit and now) makes the entry stale, so it is not inserted.
    pub async fn insert_created(&self, hash: KeyHash, identity: Identity, began: LoadEpoch) {
        if !self.trust.is_trusted() || !self.guard.is_fresh(&hash, began) {
            return;
        }
        let entry = Entry {
            loaded_at: began,
            state: KeyState::Active(identity),
        };
        self.entries.insert(hash, entry).await;
    }

    pub async fn invalidate(&self, hash: KeyHash, source: InvalidationSource) {
        let forgotten = self.guard.invalidate(hash);
        self.entries.invalidate(&hash).await;
        // The memory no longer catches a stale answer for these: none may stay cached.
        for hash in forgotten {
            self.entries.invalidate(&hash).await;
        }
        self.metrics.cache_invalidated(source.label());
    }

    /// The listener lost its connection: notifications may be lost from now on.
    pub fn distrust(&self) {
        self.trust.distrust();
        if self.trust.grace().is_zero() {
            self.flush();
        }
    }

    /// The listener is listening again. Flushing *after* LISTEN is active closes the gap in
    /// which a revocation could have been missed.
    pub fn flush_and_trust(&self) {
        self.flush();
        self.trust.trust();
    }

    /// Postgres could not answer: the opt-in stale grace may still serve a cached valid key.
    async fn stale_grace_or(
        &self,
        hash: KeyHash,
        error: Arc<StoreError>,
    ) -> Result<KeyState, Arc<StoreError>> {
        match self.within_stale_grace(&hash).await {
            Some(identity) => {
                self.metrics.auth_stale_served.inc();
                Ok(KeyState::Active(identity))
            }
            None => Err(error),
        }
    }

    /// The opt-in trade: a cached, valid, never-invalidated identity, while the listener has
    /// been down for less than the grace.
    async fn within_stale_grace(&self, hash: &KeyHash) -> Option<Identity> {
        if !self.trust.within_grace() {
            return None;
        }
        let entry = self.entries.get(hash).await?;
        let invalidated_since_load = self.guard.invalidated_since(hash, entry.loaded_at);
        match entry.state {
            KeyState::Active(identity) if !invalidated_since_load => Some(identity),
            _ => None,
        }
    }

    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    fn flush(&self) {
        self.guard.flush();
        self.entries.invalidate_all();
        self.metrics.cache_invalidated(InvalidationLabel::Flush);
    }

    /// A query for `hash`, stamped with the epoch read before it starts: an invalidation
    /// after this point is newer than whatever the query sees.
    fn start_load(&self, hash: KeyHash) -> BoxFuture<'static, Result<Entry, Arc<StoreError>>> {
        let loaded_at = self.guard.current();
        self.metrics.auth_db_lookups.inc();
        let lookup = self.lookup.clone();
        async move {
            let state = lookup.find_key_state(&hash).await.map_err(Arc::new)?;
            Ok(Entry { loaded_at, state })
        }
        .boxed()
    }
}

/// `logstitch_auth_cache_entries`, read at scrape time.
impl LiveCount for AuthCache {
    fn live_count(&self) -> u64 {
        self.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{KeyId, KeyType, OrgId};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Mutex;
    use tokio::sync::Notify;

    /// The id a revoked answer carries in these tests.
    const REVOKED: KeyId = KeyId::nil();

    /// A lookup whose answer the test sets, and which can be held mid-query.
    struct FakeLookup {
        answer: Mutex<KeyState>,
        calls: AtomicU64,
        hold: Mutex<Option<Arc<Notify>>>,
        entered: Notify,
    }

    impl FakeLookup {
        fn new(answer: KeyState) -> Arc<Self> {
            Arc::new(FakeLookup {
                answer: Mutex::new(answer),
                calls: AtomicU64::new(0),
                hold: Mutex::new(None),
                entered: Notify::new(),
            })
        }
    }

    impl KeyLookup for FakeLookup {
        fn find_key_state<'a>(&'a self, _: &'a KeyHash) -> LookupFuture<'a> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                // The answer is read when the query "runs", before any hold.
                let answer = self.answer.lock().unwrap().clone();
                let hold = self.hold.lock().unwrap().take();
                if let Some(release) = hold {
                    self.entered.notify_one();
                    release.notified().await;
                }
                Ok(answer)
            })
        }
    }

    fn identity() -> Identity {
        Identity {
            key_id: KeyId::new(),
            organization_id: OrgId::new(),
            project_id: None,
            key_type: KeyType::Master,
            expires_at: None,
            scopes: crate::domain::Scopes::All,
            enabled: true,
            rate_limit: None,
        }
    }

    fn settings() -> CacheSettings {
        CacheSettings {
            max_entries: 1000,
            ttl: Duration::from_secs(60),
            unknown_ttl: Duration::from_secs(60),
            stale_grace: Duration::ZERO,
        }
    }

    /// A trusted cache whose invalidation memory holds `entries` for `age`.
    fn cache_remembering(lookup: Arc<FakeLookup>, entries: usize, age: Duration) -> AuthCache {
        let guard = FreshnessGuard::new(entries, age);
        let cache = AuthCache::with_guard(settings(), guard, lookup, Arc::new(Metrics::new()));
        cache.flush_and_trust();
        cache
    }

    /// A trusted cache in front of a lookup that knows one active key, and that key's hash.
    fn one_active_key() -> (Arc<FakeLookup>, AuthCache, KeyHash) {
        let lookup = FakeLookup::new(KeyState::Active(identity()));
        let cache = cache(lookup.clone());
        (lookup, cache, KeyHash::of("a"))
    }

    fn cache(lookup: Arc<FakeLookup>) -> AuthCache {
        let cache = AuthCache::new(settings(), lookup, Arc::new(Metrics::new()));
        cache.flush_and_trust();
        cache
    }

    #[tokio::test]
    async fn a_second_resolve_is_a_hit() {
        let (lookup, cache, hash) = one_active_key();
        cache.resolve(hash).await.unwrap();
        cache.resolve(hash).await.unwrap();
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unknown_hashes_are_cached_too() {
        let lookup = FakeLookup::new(KeyState::Unknown);
        let cache = cache(lookup.clone());
        let hash = KeyHash::of("junk");
        assert_eq!(cache.resolve(hash).await.unwrap(), KeyState::Unknown);
        assert_eq!(cache.resolve(hash).await.unwrap(), KeyState::Unknown);
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_lookup() {
        let (lookup, cache, hash) = one_active_key();
        let all = futures_util::future::join_all((0..32).map(|_| cache.resolve(hash))).await;
        assert!(all
            .iter()
            .all(|r| matches!(r.as_ref().unwrap(), KeyState::Active(_))));
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_load_that_began_before_an_invalidation_is_not_served_after_it() {
        let valid = identity();
        let lookup = FakeLookup::new(KeyState::Active(valid.clone()));
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
        *lookup.answer.lock().unwrap() = KeyState::Revoked(REVOKED);
        cache.invalidate(hash, InvalidationSource::Local).await;
        release.notify_one();
        let _ = early.await.unwrap();

        // Whatever the early request saw, every later one sees the revocation.
        let later = cache.resolve(hash).await.unwrap();
        assert_eq!(
            later,
            KeyState::Revoked(REVOKED),
            "stale valid answer served after invalidation"
        );
    }

    #[tokio::test]
    async fn an_untrusted_cache_reads_through_and_a_flush_drops_everything() {
        let (lookup, cache, hash) = one_active_key();
        cache.resolve(hash).await.unwrap();
        cache.distrust();
        cache.resolve(hash).await.unwrap();
        cache.resolve(hash).await.unwrap();
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 3);
        // Revoked while untrusted: once trusted again, the old entry must not come back.
        *lookup.answer.lock().unwrap() = KeyState::Revoked(REVOKED);
        cache.flush_and_trust();
        assert_eq!(
            cache.resolve(hash).await.unwrap(),
            KeyState::Revoked(REVOKED)
        );
    }

    #[tokio::test]
    async fn a_created_key_is_a_hit_on_first_use() {
        let lookup = FakeLookup::new(KeyState::Unknown);
        let cache = cache(lookup.clone());
        let hash = KeyHash::of("new");
        cache.insert_created(hash, identity(), cache.epoch()).await;
        assert!(matches!(
            cache.resolve(hash).await.unwrap(),
            KeyState::Active(_)
        ));
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 0);
    }

    /// Create vs revoke: the epoch is taken, the create commits, another instance revokes the
    /// key and this instance hears it, and only then does the create insert its entry.
    #[tokio::test]
    async fn a_revocation_heard_between_commit_and_insert_is_not_undone_by_the_insert() {
        let created = identity();
        let lookup = FakeLookup::new(KeyState::Unknown);
        let cache = cache(lookup.clone());
        let hash = KeyHash::of("new");
        let began = cache.epoch();
        // (The create's transaction commits.) The revoke commits elsewhere: Postgres now
        // says revoked, and the notice arrives here before the create's insert.
        *lookup.answer.lock().unwrap() = KeyState::Revoked(REVOKED);
        cache.invalidate(hash, InvalidationSource::Notify).await;
        cache.insert_created(hash, created, began).await;
        let seen = cache.resolve(hash).await.unwrap();
        assert_eq!(
            seen,
            KeyState::Revoked(REVOKED),
            "the created key is active here after its revocation"
        );
    }

    #[tokio::test]
    async fn concurrent_misses_while_distrusted_make_one_lookup_and_are_not_kept() {
        let lookup = FakeLookup::new(KeyState::Active(identity()));
        let cache = Arc::new(cache(lookup.clone()));
        cache.distrust();
        let hash = KeyHash::of("a");
        let release = Arc::new(Notify::new());
        *lookup.hold.lock().unwrap() = Some(release.clone());
        let all = tokio::spawn({
            let cache = cache.clone();
            async move { futures_util::future::join_all((0..32).map(|_| cache.resolve(hash))).await }
        });
        // The first resolve holds the query; the other 31 were polled in the same round.
        lookup.entered.notified().await;
        release.notify_one();
        let all = all.await.unwrap();
        assert!(all
            .iter()
            .all(|r| matches!(r.as_ref().unwrap(), KeyState::Active(_))));
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 1);
        // Nothing from the distrusted load is served once trusted again.
        *lookup.answer.lock().unwrap() = KeyState::Revoked(REVOKED);
        cache.flush_and_trust();
        assert_eq!(
            cache.resolve(hash).await.unwrap(),
            KeyState::Revoked(REVOKED)
        );
        assert_eq!(lookup.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_full_invalidation_memory_never_lets_a_pre_revocation_load_look_fresh() {
        let valid = identity();
        let lookup = FakeLookup::new(KeyState::Active(valid.clone()));
        let cache = cache_remembering(lookup.clone(), 2, INVALIDATION_MEMORY);
        let hash = KeyHash::of("a");
        let began = cache.epoch();
        // Revoked (and invalidated) while a create of that key was between its epoch and
        // its insert; then two more invalidations push that one out of a memory of two.
        *lookup.answer.lock().unwrap() = KeyState::Revoked(REVOKED);
        cache.invalidate(hash, InvalidationSource::Notify).await;
        cache
            .invalidate(KeyHash::of("b"), InvalidationSource::Notify)
            .await;
        cache
            .invalidate(KeyHash::of("c"), InvalidationSource::Notify)
            .await;
        cache.insert_created(hash, valid, began).await;
        assert_eq!(
            cache.resolve(hash).await.unwrap(),
            KeyState::Revoked(REVOKED)
        );
    }

    #[tokio::test]
    async fn a_stale_entry_is_dropped_when_its_invalidation_is_forgotten() {
        let valid = identity();
        let lookup = FakeLookup::new(KeyState::Active(valid.clone()));
        let cache = cache_remembering(lookup.clone(), 10, Duration::from_millis(20));
        let hash = KeyHash::of("a");
        // A stale answer in the cache (as a load racing the invalidation could leave it).
        let began = cache.epoch();
        cache.invalidate(hash, InvalidationSource::Notify).await;
        cache
            .entries
            .insert(
                hash,
                Entry {
                    loaded_at: began,
                    state: KeyState::Active(valid),
                },
            )
            .await;
        std::thread::sleep(Duration::from_millis(30));
        // The next invalidation forgets the first one, and the stale entry with it.
        cache
            .invalidate(KeyHash::of("b"), InvalidationSource::Notify)
            .await;
        *lookup.answer.lock().unwrap() = KeyState::Revoked(REVOKED);
        assert_eq!(
            cache.resolve(hash).await.unwrap(),
            KeyState::Revoked(REVOKED)
        );
    }
}
