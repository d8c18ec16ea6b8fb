//! The freshness guard: whether an answer loaded at some epoch may still be served.
//!
//! A global epoch counts invalidations and flushes. A load (or a create) takes a [`LoadEpoch`]
//! *before* its query or transaction starts, and its answer carries it. The answer is fresh
//! unless
//! - its hash was invalidated at a later epoch (the invalidation memory remembers, per hash,
//!   the epoch of its last invalidation), or
//! - it is older than the floor, which flushes raise, and which the memory raises too when it
//!   has to forget an invalidation for lack of room: forgetting must never make a
//!   pre-revocation answer look fresh, so the memory fails closed instead.
//!
//! The memory is bounded by entries and by age. An invalidation older than
//! [`INVALIDATION_MEMORY`] can be forgotten without raising the floor because no load can run
//! that long (`Settings::validate` refuses a lookup deadline that is not shorter); the cache
//! also drops its entry for a forgotten hash, so a stale answer that reached the cache before
//! it was caught can't outlive the memory either. The bound is a setting's bound, so it is
//! defined with the settings.
//!
//! [`INVALIDATION_MEMORY`]: crate::configuration::INVALIDATION_MEMORY

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use crate::domain::KeyHash;

/// At most this many invalidations are remembered; beyond, the oldest is forgotten and the
/// floor raised to its epoch.
pub(super) const INVALIDATION_MEMORY_ENTRIES: usize = 100_000;

/// The epoch at which a load or a create began. Take it before the query or transaction
/// starts: an invalidation after that point is then newer than whatever the query saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LoadEpoch(u64);

pub(super) struct FreshnessGuard {
    epoch: AtomicU64,
    /// Answers loaded before this epoch are stale: raised by flushes and by the memory
    /// forgetting an invalidation for capacity.
    floor: AtomicU64,
    /// The epoch of the newest single-key invalidation: an answer loaded at or after it can't
    /// have been invalidated since, so checking it needs no look at the memory.
    newest_invalidation: AtomicU64,
    /// Read on every hit of an entry older than the newest invalidation; written only by
    /// invalidations, which are rare.
    memory: RwLock<InvalidationMemory>,
}

impl FreshnessGuard {
    pub(super) fn new(max_entries: usize, max_age: Duration) -> FreshnessGuard {
        FreshnessGuard {
            epoch: AtomicU64::new(1),
            floor: AtomicU64::new(0),
            newest_invalidation: AtomicU64::new(0),
            memory: RwLock::new(InvalidationMemory {
                by_hash: HashMap::new(),
                order: VecDeque::new(),
                max_entries: max_entries.max(1),
                max_age,
            }),
        }
    }

    pub(super) fn current(&self) -> LoadEpoch {
        LoadEpoch(self.epoch.load(Ordering::SeqCst))
    }

    /// Records an invalidation of `hash`. Returns the hashes whose invalidations were
    /// forgotten for age: the cache drops their entries.
    pub(super) fn invalidate(&self, hash: KeyHash) -> Vec<KeyHash> {
        let at = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let forgotten = self.write().record(hash, at, Instant::now(), &self.floor);
        // Announced only once remembered, so a reader that sees the new watermark also finds
        // the entry.
        self.newest_invalidation.fetch_max(at, Ordering::SeqCst);
        forgotten
    }

    /// Everything loaded before now is stale.
    pub(super) fn flush(&self) {
        let at = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        self.floor.fetch_max(at, Ordering::SeqCst);
    }

    pub(super) fn is_fresh(&self, hash: &KeyHash, loaded: LoadEpoch) -> bool {
        // The memory before the floor: the memory raises the floor before it forgets an
        // entry, so a reader that no longer finds the entry sees the raised floor.
        !self.invalidated_since(hash, loaded) && loaded.0 >= self.floor.load(Ordering::SeqCst)
    }

    /// Whether `hash` was invalidated after `loaded` (as far as the memory knows).
    pub(super) fn invalidated_since(&self, hash: &KeyHash, loaded: LoadEpoch) -> bool {
        loaded.0 < self.newest_invalidation.load(Ordering::SeqCst)
            && self
                .read()
                .by_hash
                .get(hash)
                .is_some_and(|&at| loaded.0 < at)
    }

    fn read(&self) -> RwLockReadGuard<'_, InvalidationMemory> {
        self.memory.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, InvalidationMemory> {
        self.memory.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Per hash, the epoch of its last invalidation; and the order they were recorded in, with
/// when, for forgetting the oldest first. A hash invalidated twice is in `order` twice; only
/// its newest record counts.
struct InvalidationMemory {
    by_hash: HashMap<KeyHash, u64>,
    order: VecDeque<(KeyHash, u64, Instant)>,
    max_entries: usize,
    max_age: Duration,
}

impl InvalidationMemory {
    fn record(&mut self, hash: KeyHash, at: u64, now: Instant, floor: &AtomicU64) -> Vec<KeyHash> {
        let mut forgotten = Vec::new();
        while let Some(&(old, old_at, recorded)) = self.order.front() {
            if now.duration_since(recorded) < self.max_age {
                break;
            }
            self.order.pop_front();
            if self.forget(old, old_at) {
                forgotten.push(old);
            }
        }
        while self.order.len() >= self.max_entries {
            let Some((old, old_at, _)) = self.order.pop_front() else {
                break;
            };
            // Fail closed, before the entry goes: whatever was loaded before this
            // invalidation is stale from now on, for every hash.
            floor.fetch_max(old_at, Ordering::SeqCst);
            self.forget(old, old_at);
        }
        self.order.push_back((hash, at, now));
        let newest = self.by_hash.entry(hash).or_insert(at);
        *newest = (*newest).max(at);
        forgotten
    }

    /// Drops `hash`'s record if `at` is its newest; true when it did.
    fn forget(&mut self, hash: KeyHash, at: u64) -> bool {
        if self.by_hash.get(&hash) == Some(&at) {
            self.by_hash.remove(&hash);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::configuration::INVALIDATION_MEMORY;

    fn hash(n: u8) -> KeyHash {
        KeyHash::from_bytes(&[n; 32]).unwrap()
    }

    #[test]
    fn a_load_older_than_its_hash_invalidation_is_stale_and_others_are_not() {
        let guard = FreshnessGuard::new(10, INVALIDATION_MEMORY);
        let before = guard.current();
        guard.invalidate(hash(1));
        assert!(!guard.is_fresh(&hash(1), before));
        assert!(
            guard.is_fresh(&hash(2), before),
            "another hash is untouched"
        );
        assert!(
            guard.is_fresh(&hash(1), guard.current()),
            "a later load is fresh"
        );
    }

    #[test]
    fn a_flush_makes_every_earlier_load_stale() {
        let guard = FreshnessGuard::new(10, INVALIDATION_MEMORY);
        let before = guard.current();
        guard.flush();
        assert!(!guard.is_fresh(&hash(2), before));
        assert!(guard.is_fresh(&hash(2), guard.current()));
    }

    #[test]
    fn evicting_an_invalidation_for_capacity_fails_closed() {
        let guard = FreshnessGuard::new(2, INVALIDATION_MEMORY);
        // A load of hash 1 began before its revocation...
        let pre_revocation = guard.current();
        guard.invalidate(hash(1));
        let between = guard.current();
        // ...and two more invalidations push hash 1's out of a memory of two.
        guard.invalidate(hash(2));
        guard.invalidate(hash(3));
        assert!(!guard.read().by_hash.contains_key(&hash(1)), "evicted");
        assert!(
            !guard.is_fresh(&hash(1), pre_revocation),
            "a pre-revocation load looked fresh once its invalidation was forgotten"
        );
        // The price: unrelated loads older than the evicted invalidation are reloaded too.
        assert!(!guard.is_fresh(&hash(9), pre_revocation));
        // Loads after the evicted invalidation are not affected by the eviction.
        assert!(guard.is_fresh(&hash(9), between));
        assert!(
            !guard.is_fresh(&hash(3), between),
            "hash 3 is still remembered"
        );
    }

    #[test]
    fn invalidations_are_forgotten_after_the_memory_age_and_reported() {
        let guard = FreshnessGuard::new(10, Duration::from_millis(20));
        let pre_revocation = guard.current();
        guard.invalidate(hash(1));
        std::thread::sleep(Duration::from_millis(30));
        let forgotten = guard.invalidate(hash(2));
        assert_eq!(
            forgotten,
            vec![hash(1)],
            "the cache must drop hash 1's entry"
        );
        // No load can be this old (the settings check), so the floor stays where it was.
        assert!(guard.is_fresh(&hash(9), pre_revocation));
        assert!(guard.read().order.len() == 1);
    }

    #[test]
    fn a_hash_invalidated_twice_keeps_its_newest_record() {
        let guard = FreshnessGuard::new(2, INVALIDATION_MEMORY);
        guard.invalidate(hash(1));
        let between = guard.current();
        guard.invalidate(hash(1));
        // The first record of hash 1 is evicted; the second still stands.
        guard.invalidate(hash(2));
        assert!(!guard.is_fresh(&hash(1), between));
        assert_eq!(guard.read().by_hash.len(), 2);
    }
}
