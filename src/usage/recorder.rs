//! Usage counts from memory to Postgres: every `usage.flush_interval_ms`, on shutdown, and
//! retried after a failure without ever being counted twice.
//!
//! Each instance has its own id and numbers its flushes. A batch, once taken from the
//! counter, keeps its sequence number until Postgres has it: a retry sends the same batch
//! under the same number, and the store applies a number once (`store/usage.rs`), so a flush
//! whose commit succeeded but whose answer was lost adds nothing the second time. Meanwhile
//! new counts wait in the counter, not in the batch. A SIGKILL therefore loses at most the
//! batch being written and the counts accumulating: the last two intervals.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use uuid::Uuid;

use super::counter::{current_hour, UsageCounter};
use crate::domain::{KeyId, UsageOutcome};
use crate::metrics::{Metrics, UsageBacklog};
use crate::store::{Store, StoreError, UsageDelta};

/// Rows deleted per retention statement, and statements per round at most.
const PRUNE_BATCH: i64 = 1000;
const PRUNE_BATCHES_PER_ROUND: usize = 10;
/// How often retention runs, and how long a flush's (instance, seq) record is kept.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const FLUSH_RECORDS_KEPT: chrono::Duration = chrono::Duration::days(2);

pub struct UsageRecorder {
    counter: UsageCounter,
    instance: Uuid,
    flushing: tokio::sync::Mutex<FlushState>,
    /// When a flush last left nothing unwritten.
    settled_at: Mutex<Instant>,
}

struct FlushState {
    next_seq: i64,
    /// A batch taken and not yet known to be in Postgres, with its sequence number.
    unwritten: Option<(i64, Vec<UsageDelta>)>,
}

impl Default for UsageRecorder {
    fn default() -> Self {
        UsageRecorder::new()
    }
}

impl UsageRecorder {
    pub fn new() -> UsageRecorder {
        UsageRecorder {
            counter: UsageCounter::new(),
            instance: Uuid::new_v4(),
            flushing: tokio::sync::Mutex::new(FlushState {
                next_seq: 1,
                unwritten: None,
            }),
            settled_at: Mutex::new(Instant::now()),
        }
    }

    /// The hot path's call: one short lock, no I/O.
    pub fn count(&self, key: KeyId, outcome: UsageOutcome) {
        self.counter.count(key, outcome);
    }

    /// Writes the batch a failed flush left, then what was counted since. Flushes are one at
    /// a time (the timer's and the shutdown's never overlap).
    pub async fn flush(&self, store: &Store, metrics: &Metrics) -> Result<(), StoreError> {
        let mut state = self.flushing.lock().await;
        // After a failure: the batch it left, then what accumulated meanwhile, so the backlog
        // goes out now rather than an interval late.
        let rounds = if state.unwritten.is_some() { 2 } else { 1 };
        for _ in 0..rounds {
            if state.unwritten.is_none() {
                let batch = self.counter.take(current_hour());
                if batch.is_empty() {
                    break;
                }
                let seq = state.next_seq;
                state.next_seq += 1;
                state.unwritten = Some((seq, batch));
            }
            if let Some((seq, batch)) = &state.unwritten {
                self.write(store, metrics, *seq, batch).await?;
            }
            state.unwritten = None;
        }
        *self.settled_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        Ok(())
    }

    async fn write(
        &self,
        store: &Store,
        metrics: &Metrics,
        seq: i64,
        batch: &[UsageDelta],
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = store.apply_usage(self.instance, seq, batch).await;
        metrics
            .usage
            .flush_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(true) => Ok(()),
            Ok(false) => {
                metrics.usage.flush_replays.inc();
                Ok(())
            }
            Err(error) => {
                metrics.usage.flush_errors.inc();
                Err(error)
            }
        }
    }

    /// The background flusher; runs until its task is dropped.
    pub async fn run(&self, store: Store, metrics: Arc<Metrics>, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            if let Err(error) = self.flush(&store, &metrics).await {
                tracing::warn!(error = ?error, "usage flush failed; will retry the same batch");
            }
        }
    }

    /// On shutdown: a few tries, since nothing will retry later.
    pub async fn flush_before_exit(&self, store: &Store, metrics: &Metrics) {
        for attempt in 1..=3 {
            match self.flush(store, metrics).await {
                Ok(()) => return,
                Err(error) if attempt == 3 => {
                    tracing::warn!(error = ?error, "final usage flush failed; counts lost")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

impl UsageBacklog for UsageRecorder {
    fn pending_requests(&self) -> u64 {
        let unwritten = self.flushing.try_lock().map_or(0, |state| {
            state.unwritten.as_ref().map_or(0, |(_, batch)| {
                batch.iter().map(|row| row.counts.total()).sum::<u64>()
            })
        });
        self.counter.pending() + unwritten
    }

    fn flush_lag_seconds(&self) -> f64 {
        self.settled_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            .as_secs_f64()
    }
}

/// Retention: every ten minutes (the first at start), rows of hours older than `retention`
/// go, a thousand per statement and at most ten statements a round, so no instance ever
/// holds a long delete; any instance may do it. Runs until its task is dropped.
pub async fn prune_usage(store: Store, metrics: Arc<Metrics>, retention: chrono::Duration) {
    loop {
        for _ in 0..PRUNE_BATCHES_PER_ROUND {
            let now = Utc::now();
            match store
                .prune_usage(now - retention, now - FLUSH_RECORDS_KEPT, PRUNE_BATCH)
                .await
            {
                Ok(deleted) => {
                    metrics.usage.pruned_rows.inc_by(deleted);
                    if deleted < PRUNE_BATCH as u64 {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(error = ?error, "usage retention failed; will retry");
                    break;
                }
            }
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}
