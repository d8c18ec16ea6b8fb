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
use tokio_postgres::{AsyncMessage, Client, NoTls, Statement};

use super::acks::RevocationAcks;
use crate::auth::{AuthCache, InvalidationSource};
use crate::configuration::Settings;
use crate::domain::KeyHash;
use crate::metrics::Metrics;
use crate::notice::{ack_channel, LISTENER_NAME_PREFIX, REVOCATION_CHANNEL, SHARED_ACK_CHANNEL};

/// A connection that stayed up this long resets the reconnect backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// TCP keepalives and user timeout on the listening connection, on both ends. Server side,
/// they make Postgres drop the backend of a listener whose host vanished without closing TCP
/// (power loss, a partition) within 15 s: after idle + interval × count = 11 s of silence, or
/// 10 s of unacknowledged data. Without them the backend stays in `pg_stat_activity` for the
/// kernel's keepalive time (2 h by default), in the census of every revoke, and each revoke
/// waits `listener.ack_timeout_ms` for it. Client side, the same bounds for a vanished server.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_COUNT: u32 = 3;
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// The statements that make a fresh connection a listener, in order: keepalives, no waiting
/// for WAL flushes, LISTEN (the notices, this instance's own acks, the shared ack channel of
/// older versions), and only then the census name.
///
/// `synchronous_commit = off`: Postgres gives every transaction that sends a NOTIFY an XID, so
/// each ack commits a WAL record, and with the default setting waits for it to reach disk —
/// an fsync per instance per revoke, on the revoke's critical path. An ack is worth nothing
/// after a crash (the revoker's wait ends with the connection), so this session doesn't wait.
fn listen_statements(instance_id: &str, own_acks: &str) -> String {
    format!(
        "SET tcp_keepalives_idle = {idle}; SET tcp_keepalives_interval = {interval}; \
         SET tcp_keepalives_count = {KEEPALIVE_COUNT}; SET tcp_user_timeout = {user_timeout}; \
         SET synchronous_commit = off; LISTEN {REVOCATION_CHANNEL}; LISTEN {own_acks}; LISTEN {SHARED_ACK_CHANNEL}; \
         SET application_name = '{name}'",
        idle = KEEPALIVE_IDLE.as_secs(),
        interval = KEEPALIVE_INTERVAL.as_secs(),
        user_timeout = TCP_USER_TIMEOUT.as_millis(),
        name = listener_application_name(instance_id),
    )
}

/// A revocation notice, parsed: `<hex hash>[:<revocation id>[:<revoker's instance id>]]`.
/// Only the hash must be well formed: a notice whose other fields this version can't read
/// (a later version's, say) still evicts its key, and is acknowledged on the shared channel.
#[derive(Debug, PartialEq, Eq)]
struct Notice<'a> {
    hash: KeyHash,
    /// The revocation to acknowledge, and the channel to acknowledge it on; None: no ack.
    ack: Option<(&'a str, String)>,
}

impl<'a> Notice<'a> {
    fn parse(payload: &'a str) -> Option<Notice<'a>> {
        let mut fields = payload.splitn(3, ':');
        let hash = KeyHash::from_hex(fields.next()?)?;
        let revocation = fields.next().filter(|revocation| !revocation.is_empty());
        let reply_to = fields.next().and_then(ack_channel);
        let ack = revocation.map(|revocation| {
            // A revoker of a version before addressed acks (or one whose id this version can't
            // make a channel of) waits on the shared channel, where every instance listens.
            (
                revocation,
                reply_to.unwrap_or_else(|| SHARED_ACK_CHANNEL.to_owned()),
            )
        });
        Some(Notice { hash, ack })
    }
}

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

/// What the listening backend reports about itself once set up, and the acknowledgement
/// statement, prepared once so each ack is a single round trip.
struct ListeningSession {
    ack: Statement,
    backend_pid: i32,
    keepalives_idle: String,
    keepalives_interval: String,
    keepalives_count: String,
    user_timeout: String,
    synchronous_commit: String,
}

pub struct InvalidationListener {
    pub settings: Arc<Settings>,
    /// Also names this instance's ack channel, so it must pass [`ack_channel`]'s check.
    pub instance_id: String,
    pub cache: Arc<AuthCache>,
    pub acks: Arc<RevocationAcks>,
    pub metrics: Arc<Metrics>,
    pub status: ListenerStatus,
}

impl InvalidationListener {
    /// Runs until its task is dropped.
    pub async fn run(self) {
        let min = self.settings.listener.reconnect_min;
        let max = self.settings.listener.reconnect_max;
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
        let mut config = match self.settings.database.postgres_config(&connecting_name) {
            Ok(config) => config,
            Err(error) => return error.into(),
        };
        config
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_COUNT)
            .tcp_user_timeout(TCP_USER_TIMEOUT);
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
        let session = match self.start_listening(&client).await {
            Ok(session) => session,
            Err(error) => {
                driver.abort();
                return error;
            }
        };
        self.cache.flush_and_trust();
        self.status.set(true, &self.metrics);
        // The settings as the backend reports them: what is in force, not what was asked.
        tracing::info!(
            backend_pid = session.backend_pid,
            tcp_keepalives_idle = %session.keepalives_idle,
            tcp_keepalives_interval = %session.keepalives_interval,
            tcp_keepalives_count = %session.keepalives_count,
            tcp_user_timeout = %session.user_timeout,
            synchronous_commit = %session.synchronous_commit,
            "invalidation listener up"
        );

        let heartbeat_timeout = self.settings.database.pool_timeout;
        let mut heartbeat = tokio::time::interval(self.settings.listener.heartbeat);
        heartbeat.tick().await;
        let failure = loop {
            tokio::select! {
                notice = received.recv() => match notice {
                    Some((channel, payload)) => {
                        if let Err(error) = self.handle(&client, &session.ack, &channel, &payload).await {
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

    /// Keepalives, LISTEN and the census name (within the connect timeout), then the
    /// session's settings read back.
    async fn start_listening(&self, client: &Client) -> Result<ListeningSession, anyhow::Error> {
        let own_acks = self.own_ack_channel()?;
        let setup = async {
            client
                .batch_execute(&listen_statements(&self.instance_id, &own_acks))
                .await?;
            let row = client
                .query_one(
                    "SELECT pg_backend_pid(), current_setting('tcp_keepalives_idle'),
                            current_setting('tcp_keepalives_interval'),
                            current_setting('tcp_keepalives_count'),
                            current_setting('tcp_user_timeout'),
                            current_setting('synchronous_commit')",
                    &[],
                )
                .await?;
            let ack = client.prepare("SELECT pg_notify($1, $2)").await?;
            Ok::<_, tokio_postgres::Error>(ListeningSession {
                ack,
                backend_pid: row.get(0),
                keepalives_idle: row.get(1),
                keepalives_interval: row.get(2),
                keepalives_count: row.get(3),
                user_timeout: row.get(4),
                synchronous_commit: row.get(5),
            })
        };
        match tokio::time::timeout(self.settings.database.pool_timeout, setup).await {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(anyhow::anyhow!(
                "the listener's setup got no answer in time"
            )),
        }
    }

    fn own_ack_channel(&self) -> anyhow::Result<String> {
        ack_channel(&self.instance_id).ok_or_else(|| {
            anyhow::anyhow!(
                "instance id {:?} can't name an ack channel",
                self.instance_id
            )
        })
    }

    async fn handle(
        &self,
        client: &Client,
        ack_statement: &Statement,
        channel: &str,
        payload: &str,
    ) -> anyhow::Result<()> {
        if channel != REVOCATION_CHANNEL {
            // Only this instance's own ack channel and the shared one are listened to.
            self.metrics.revocation_acks_received.inc();
            self.acks.record(payload);
            return Ok(());
        }
        let Some(notice) = Notice::parse(payload) else {
            tracing::warn!(
                payload_len = payload.len(),
                "ignored malformed revocation notice"
            );
            return Ok(());
        };
        self.cache
            .invalidate(notice.hash, InvalidationSource::Notify)
            .await;
        if let Some((revocation, channel)) = notice.ack {
            let ack = format!("{revocation}:{}", self.instance_id);
            let sent = tokio::time::timeout(
                self.settings.database.pool_timeout,
                client.execute(ack_statement, &[&channel, &ack]),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_acknowledged_to_its_revoker_only() {
        let hash = KeyHash::of("ls_proj_anything");
        let payload = format!("{}:rev-1:abc123", hash.to_hex());
        assert_eq!(
            Notice::parse(&payload),
            Some(Notice {
                hash,
                ack: Some(("rev-1", "logstitch_ack_abc123".to_owned())),
            })
        );
    }

    #[test]
    fn older_notices_are_acknowledged_on_the_shared_channel_or_not_at_all() {
        let hash = KeyHash::of("ls_proj_anything");
        let old = format!("{}:rev-1", hash.to_hex());
        assert_eq!(
            Notice::parse(&old).and_then(|notice| notice.ack),
            Some(("rev-1", SHARED_ACK_CHANNEL.to_owned()))
        );
        let bare = hash.to_hex();
        assert_eq!(Notice::parse(&bare), Some(Notice { hash, ack: None }));
    }

    #[test]
    fn a_notice_with_a_malformed_hash_is_refused() {
        for payload in ["not-a-hash:rev:abc", "", ":rev:abc"] {
            assert_eq!(Notice::parse(payload), None, "{payload}");
        }
    }

    #[test]
    fn a_notice_with_fields_this_version_cant_read_still_evicts_and_acks_on_the_shared_channel() {
        let hash = KeyHash::of("ls_proj_anything");
        for tail in [
            "rev:Robert'); DROP TABLE",
            "rev:",
            "rev:abc123:a-later-field",
            &format!("rev:{}", "a".repeat(33)),
        ] {
            let payload = format!("{}:{tail}", hash.to_hex());
            assert_eq!(
                Notice::parse(&payload),
                Some(Notice {
                    hash,
                    ack: Some(("rev", SHARED_ACK_CHANNEL.to_owned())),
                }),
                "{payload}"
            );
        }
    }

    #[test]
    fn a_listener_listens_on_its_own_ack_channel_before_it_takes_its_name() {
        let statements = listen_statements("abc123", "logstitch_ack_abc123");
        let listen = statements.find("LISTEN logstitch_ack_abc123").unwrap();
        let named = statements.find("SET application_name").unwrap();
        assert!(listen < named, "{statements}");
    }
}
