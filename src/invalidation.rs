//! The invalidation listener: a dedicated Postgres connection (not from the pool) that
//! LISTENs for revocations made by any instance and evicts them from this instance's cache.
//!
//! When the connection drops, notifications may be lost, so the cache stops being trusted at
//! once (lookups read Postgres) until the listener has reconnected, LISTEN is active again,
//! and the cache has been flushed — in that order, so a revocation made in the gap is read
//! from Postgres rather than from a stale entry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::auth::{AuthCache, InvalidationSource};
use crate::configuration::Settings;
use crate::domain::KeyHash;
use crate::metrics::Metrics;
use crate::store::postgres_config;
use crate::store::REVOCATION_CHANNEL;

/// A connection that stayed up this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// Whether the listener is currently listening; `/readyz` reports it.
#[derive(Clone, Default)]
pub struct ListenerStatus(Arc<AtomicBool>);

impl ListenerStatus {
    pub fn is_up(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, up: bool, metrics: &Metrics) {
        self.0.store(up, Ordering::Release);
        metrics.invalidation_listener_up.set(i64::from(up));
    }
}

pub struct InvalidationListener {
    pub settings: Arc<Settings>,
    /// Shows up as `application_name` in pg_stat_activity, so operators (and tests) can find it.
    pub application_name: String,
    pub cache: Arc<AuthCache>,
    pub metrics: Arc<Metrics>,
    pub status: ListenerStatus,
}

impl InvalidationListener {
    /// Runs until its task is dropped.
    pub async fn run(self) {
        let min = Duration::from_millis(self.settings.listener.reconnect_min_ms);
        let max = Duration::from_millis(self.settings.listener.reconnect_max_ms);
        let mut backoff = min;
        loop {
            let started = Instant::now();
            let error = self.listen_until_dropped().await;
            self.status.set(false, &self.metrics);
            self.cache.distrust();
            tracing::warn!(error = %format!("{error:#}"), "invalidation listener down; cache bypassed until it is back");
            if started.elapsed() >= STABLE_AFTER {
                backoff = min;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(max);
        }
    }

    /// Connects, LISTENs, then invalidates on each notification until the connection ends.
    async fn listen_until_dropped(&self) -> anyhow::Error {
        let config = match postgres_config(&self.settings.database, &self.application_name) {
            Ok(config) => config,
            Err(error) => return error.into(),
        };
        let (client, mut connection) = match config.connect(NoTls).await {
            Ok(pair) => pair,
            Err(error) => return error.into(),
        };
        let (notices, mut received) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(notice)) => {
                        let _ = notices.send(notice.payload().to_owned());
                    }
                    Ok(_) => {}
                    Err(error) => return anyhow::Error::from(error),
                }
            }
            anyhow::anyhow!("listener connection closed")
        });
        if let Err(error) = client
            .batch_execute(&format!("LISTEN {REVOCATION_CHANNEL}"))
            .await
        {
            driver.abort();
            return error.into();
        }
        self.cache.flush_and_trust();
        self.status.set(true, &self.metrics);
        tracing::info!("invalidation listener up");
        while let Some(payload) = received.recv().await {
            match KeyHash::from_hex(&payload) {
                Some(hash) => {
                    self.cache
                        .invalidate(hash, InvalidationSource::Notify)
                        .await
                }
                None => tracing::warn!(
                    payload_len = payload.len(),
                    "ignored malformed revocation notice"
                ),
            }
        }
        drop(client);
        match driver.await {
            Ok(error) => error,
            Err(join_error) => join_error.into(),
        }
    }
}
