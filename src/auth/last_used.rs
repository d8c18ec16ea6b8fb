//! lastUsedAt without a database write per request: uses are remembered in memory and
//! written in one statement per flush (every `last_used.flush_interval_ms`, early when
//! `max_pending` distinct keys are waiting, and on shutdown). lastUsedAt may lag by one
//! interval; memory is bounded by `max_pending` entries. A use is stamped with the monotonic
//! clock (half the cost of a wall-clock read on the hot path) and turned into wall time when
//! its batch is written.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::domain::KeyId;
use crate::metrics::{LiveCount, Metrics};
use crate::store::{Store, StoreError};

pub struct LastUsedRecorder {
    pending: Mutex<HashMap<KeyId, Instant>>,
    max_pending: usize,
    full: Notify,
}

impl LastUsedRecorder {
    pub fn new(max_pending: usize) -> LastUsedRecorder {
        LastUsedRecorder {
            pending: Mutex::new(HashMap::new()),
            max_pending,
            full: Notify::new(),
        }
    }

    /// Called on every authenticated request: one short lock, no I/O.
    /// Returns false when the use was dropped because the buffer is full.
    pub fn record(&self, key: KeyId) -> bool {
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= self.max_pending && !pending.contains_key(&key) {
            // Over the bound: this use is dropped (lastUsedAt lags one flush more), and the
            // flusher is woken to make room.
            self.full.notify_one();
            return false;
        }
        pending.insert(key, now);
        if pending.len() >= self.max_pending {
            self.full.notify_one();
        }
        true
    }

    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Writes what is pending. On failure the batch is put back (newest time wins), so a
    /// database outage delays lastUsedAt but does not lose it.
    pub async fn flush(&self, store: &Store, metrics: &Metrics) -> Result<usize, StoreError> {
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if batch.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let wall_now = Utc::now();
        let (ids, times): (Vec<_>, Vec<_>) = batch
            .iter()
            .map(|(id, at)| (id.as_uuid(), wall_time(*at, started, wall_now)))
            .unzip();
        let result = store.record_last_used(&ids, &times).await;
        metrics
            .last_used_flush_duration
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = result {
            metrics.last_used_flush_errors.inc();
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for (id, at) in batch {
                if pending.len() >= self.max_pending {
                    break;
                }
                let slot = pending.entry(id).or_insert(at);
                *slot = (*slot).max(at);
            }
            return Err(error);
        }
        Ok(batch.len())
    }

    /// The background flusher; runs until its task is dropped.
    pub async fn run(&self, store: Store, metrics: std::sync::Arc<Metrics>, interval: Duration) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = self.full.notified() => {}
            }
            if let Err(error) = self.flush(&store, &metrics).await {
                tracing::warn!(error = ?error, "lastUsedAt flush failed; will retry");
            }
        }
    }
}

/// `logstitch_last_used_pending`, read at scrape time.
impl LiveCount for LastUsedRecorder {
    fn live_count(&self) -> u64 {
        self.pending() as u64
    }
}

/// The wall time of the monotonic instant `at`, given one reading of both clocks.
fn wall_time(at: Instant, now: Instant, wall_now: DateTime<Utc>) -> DateTime<Utc> {
    let ago = now.saturating_duration_since(at);
    wall_now - chrono::Duration::from_std(ago).unwrap_or(chrono::Duration::zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_use_is_written_at_the_wall_time_it_happened() {
        let now = Instant::now();
        let wall_now = Utc::now();
        let at = now - Duration::from_millis(1500);
        assert_eq!(
            wall_time(at, now, wall_now),
            wall_now - chrono::Duration::milliseconds(1500)
        );
        // A use stamped after the reading (a race with the flush) is "now", never the future.
        assert_eq!(
            wall_time(now + Duration::from_secs(1), now, wall_now),
            wall_now
        );
    }

    #[test]
    fn repeated_uses_of_one_key_take_one_slot() {
        let recorder = LastUsedRecorder::new(10);
        let key = KeyId::new();
        for _ in 0..100 {
            recorder.record(key);
        }
        assert_eq!(recorder.pending(), 1);
    }

    #[test]
    fn memory_is_bounded() {
        let recorder = LastUsedRecorder::new(5);
        for _ in 0..50 {
            recorder.record(KeyId::new());
        }
        assert_eq!(recorder.pending(), 5);
    }
}
