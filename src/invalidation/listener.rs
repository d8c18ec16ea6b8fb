//! The invalidation listener: a dedicated Postgres connection (not from the pool) that
//! LISTENs for revocations made by any instance, evicts them from this instance's cache, and
//! acknowledges each one.
//!
//! When the connection drops or stops answering its heartbeat, notifications may be lost, so
//! the cache stops being trusted at once (lookups read Postgres) until the listener has
//! reconnected, LISTEN is active again, and the cache has been flushed — in that order, so a
//! revocation made in the gap is read from Postgres rather than from a stale entry.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{RevocationAcks, ACK_CHANNEL, LISTENER_NAME_PREFIX, REVOCATION_CHANNEL};
use crate::auth::{AuthCache, InvalidationSource};
use crate::configuration::Settings;
use crate::domain::KeyHash;
use crate::metrics::Metrics;
use crate::store::postgres_config;

/// A connection that stayed up this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The `application_name` of a listening connection. It takes this name only once LISTEN is
/// active, so a revoker counting listeners never waits for one that can't hear it.
pub fn listener_application_name(instance_id: &str) -> String {
    format!("{LISTENER_NAME_PREFIX}{instance_id}")
}

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
    pub instance_id: String,
    pub cache: Arc<AuthCache>,
    pub acks: Arc<RevocationAcks>,
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
            self.metrics.listener_reconnects.inc();
            tracing::warn!(error = %format!("{error:#}"), "invalidation listener down; cache bypassed until it is back");
            if started.elapsed() >= STABLE_AFTER {
                backoff = min;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(max);
        }
    }

    /// Connects, LISTENs, then handles notices until the connection ends or stops answering.
    async fn listen_until_dropped(&self) -> anyhow::Error {
        let connecting_name = format!("logstitch-connecting-{}", self.instance_id);
        let config = match postgres_config(&self.settings.database, &connecting_name) {
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
                        let _ = notices
                            .send((notice.channel().to_owned(), notice.payload().to_owned()));
                    }
                    Ok(_) => {}
                    Err(error) => return anyhow::Error::from(error),
                }
            }
            anyhow::anyhow!("listener connection closed")
        });
        let listen = format!(
            "LISTEN {REVOCATION_CHANNEL}; LISTEN {ACK_CHANNEL}; SET application_name = '{}'",
            listener_application_name(&self.instance_id)
        );
        if let Err(error) = client.batch_execute(&listen).await {
            driver.abort();
            return error.into();
        }
        self.cache.flush_and_trust();
        self.status.set(true, &self.metrics);
        tracing::info!("invalidation listener up");

        let heartbeat_timeout = self.settings.database.pool_timeout();
        let mut heartbeat =
            tokio::time::interval(Duration::from_millis(self.settings.listener.heartbeat_ms));
        heartbeat.tick().await;
        let failure = loop {
            tokio::select! {
                notice = received.recv() => match notice {
                    Some((channel, payload)) => {
                        if let Err(error) = self.handle(&client, &channel, &payload).await {
                            break error;
                        }
                    }
                    None => break anyhow::anyhow!("listener connection closed"),
                },
                _ = heartbeat.tick() => {
                    // A partitioned connection is not "closed": only a query notices it.
                    match tokio::time::timeout(heartbeat_timeout, client.simple_query("SELECT 1")).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => break error.into(),
                        Err(_) => break anyhow::anyhow!("listener heartbeat got no answer within {heartbeat_timeout:?}"),
                    }
                }
            }
        };
        drop(client);
        driver.abort();
        failure
    }

    async fn handle(&self, client: &Client, channel: &str, payload: &str) -> anyhow::Result<()> {
        if channel == ACK_CHANNEL {
            self.acks.record(payload);
            return Ok(());
        }
        let (hash, revocation) = payload.split_once(':').unwrap_or((payload, ""));
        let Some(hash) = KeyHash::from_hex(hash) else {
            tracing::warn!(
                payload_len = payload.len(),
                "ignored malformed revocation notice"
            );
            return Ok(());
        };
        self.cache
            .invalidate(hash, InvalidationSource::Notify)
            .await;
        if !revocation.is_empty() {
            let ack = format!("{revocation}:{}", self.instance_id);
            let sent = tokio::time::timeout(
                self.settings.database.pool_timeout(),
                client.execute("SELECT pg_notify($1, $2)", &[&ACK_CHANNEL, &ack]),
            )
            .await;
            match sent {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => return Err(error.into()),
                Err(_) => anyhow::bail!("listener could not acknowledge a revocation in time"),
            }
        }
        Ok(())
    }
}
