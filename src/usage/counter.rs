//! The hot path's share of usage counting: one count per request presenting an existing key,
//! in memory, per (key, UTC hour), by outcome. Sixteen shards, each a short mutex over a map
//! whose entries stay for the hour they count: a key already seen this hour costs one lock,
//! one hash of its id and one increment, no allocation. Taking a batch zeroes the counts in
//! place and drops only the entries of past hours.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use rustc_hash::FxBuildHasher;

use crate::domain::{KeyId, UsageCounts, UsageOutcome};
use crate::store::UsageDelta;

const SHARDS: usize = 16;

/// Hours since the Unix epoch: a bucket's key.
pub type HourIndex = u32;

/// Key ids are random in their low bits and only existing keys are counted, so no client
/// chooses what is hashed: FxHash (rustc's), much cheaper than SipHash on the hot path, is
/// enough.
type Shard = HashMap<(KeyId, HourIndex), UsageCounts, FxBuildHasher>;

/// Counts waiting for the next flush.
pub struct UsageCounter {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for UsageCounter {
    fn default() -> Self {
        UsageCounter::new()
    }
}

impl UsageCounter {
    pub fn new() -> UsageCounter {
        UsageCounter {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
        }
    }

    /// Called once per counted request: no I/O, no allocation for a key seen this hour.
    pub fn count(&self, key: KeyId, outcome: UsageOutcome) {
        self.count_at(key, current_hour(), outcome);
    }

    pub fn count_at(&self, key: KeyId, hour: HourIndex, outcome: UsageOutcome) {
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        shard.entry((key, hour)).or_default().add(outcome);
    }

    fn shard(&self, key: KeyId) -> &Mutex<Shard> {
        // The id's last bits are random in both uuid versions keys are made with.
        &self.shards[(key.as_uuid().as_u128() as usize) % SHARDS]
    }

    /// Everything counted since the last batch; the counts are zeroed where they are, and the
    /// entries of hours before `now` are dropped.
    pub fn take(&self, now: HourIndex) -> Vec<UsageDelta> {
        let mut batch = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (&(key, hour), counts) in shard.iter_mut() {
                if !counts.is_zero() {
                    batch.push(UsageDelta {
                        key,
                        hour: hour_start(hour),
                        counts: std::mem::take(counts),
                    });
                }
            }
            shard.retain(|&(_, hour), _| hour >= now);
        }
        batch
    }

    /// Requests counted and not yet taken (read at scrape time).
    pub fn pending(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| {
                let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
                shard.values().map(UsageCounts::total).sum::<u64>()
            })
            .sum()
    }
}

/// The UTC hour now, as hours since the epoch.
pub fn current_hour() -> HourIndex {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    (secs / 3600) as HourIndex
}

/// The instant an hour index starts at.
pub fn hour_start(hour: HourIndex) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(hour) * 3600, 0).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_per_key_hour_and_outcome() {
        let counter = UsageCounter::new();
        let (a, b) = (KeyId::new(), KeyId::new());
        for _ in 0..3 {
            counter.count_at(a, 10, UsageOutcome::Valid);
        }
        counter.count_at(a, 10, UsageOutcome::Revoked);
        counter.count_at(a, 11, UsageOutcome::Valid);
        counter.count_at(b, 11, UsageOutcome::RateLimited);
        assert_eq!(counter.pending(), 6);
        let mut batch = counter.take(11);
        batch.sort_by_key(|row| (row.hour, row.key == b));
        assert_eq!(batch.len(), 3);
        assert_eq!(batch[0].key, a);
        assert_eq!(batch[0].hour, hour_start(10));
        assert_eq!(batch[0].counts.get(UsageOutcome::Valid), 3);
        assert_eq!(batch[0].counts.get(UsageOutcome::Revoked), 1);
        assert_eq!(batch[2].counts.get(UsageOutcome::RateLimited), 1);
        assert_eq!(counter.pending(), 0);
        assert!(counter.take(11).is_empty(), "a batch is taken once");
    }

    #[test]
    fn entries_of_the_current_hour_stay_and_past_hours_go() {
        let counter = UsageCounter::new();
        let key = KeyId::new();
        counter.count_at(key, 10, UsageOutcome::Valid);
        counter.count_at(key, 11, UsageOutcome::Valid);
        counter.take(11);
        let kept: usize = counter.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert_eq!(kept, 1, "the current hour's entry is kept for its next use");
    }
}
