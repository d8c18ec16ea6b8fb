//! Hearing acknowledgements without serving: a process that revokes keys but runs no server
//! (the CLI) has no invalidation listener, so it LISTENs on an ack channel of its own, on a
//! dedicated connection, for as long as it waits.
//!
//! The connection never takes a `logstitch-listener-…` name: it hears no revocation notices,
//! so no revoker may count it in its census and wait for it.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};
use uuid::Uuid;

use super::acks::RevocationAcks;
use crate::configuration::DatabaseSettings;
use crate::notice::ack_channel;

/// Acknowledgements addressed to `acks`' instance id, recorded as they arrive. LISTEN is
/// active once [`AckListener::start`] returns, so a waiter registered then, before its
/// revocation commits, sees every ack. Stops listening when dropped.
pub struct AckListener {
    acks: Arc<RevocationAcks>,
    /// Kept: dropping the client would end the connection.
    _client: tokio_postgres::Client,
    driver: tokio::task::JoinHandle<()>,
}

impl AckListener {
    /// Connects with a fresh instance id (short lowercase hex, as a server's) and LISTENs on
    /// its ack channel.
    pub async fn start(database: &DatabaseSettings) -> anyhow::Result<AckListener> {
        let instance_id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let channel = ack_channel(&instance_id).expect("a short hex id names an ack channel");
        let config = database.postgres_config(&format!("logstitch-acks-{instance_id}"))?;
        let (client, mut connection) = config.connect(NoTls).await?;
        let acks = Arc::new(RevocationAcks::new(instance_id));
        let recorder = acks.clone();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(ack)) => recorder.record(ack.payload()),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(error = %error, "the ack listener's connection failed");
                        return;
                    }
                }
            }
        });
        let listening = tokio::time::timeout(
            database.pool_timeout,
            client.batch_execute(&format!("LISTEN {channel}")),
        )
        .await;
        match listening {
            Ok(Ok(())) => Ok(AckListener {
                acks,
                _client: client,
                driver,
            }),
            Ok(Err(error)) => {
                driver.abort();
                Err(error.into())
            }
            Err(_) => {
                driver.abort();
                Err(anyhow::anyhow!(
                    "LISTEN for acknowledgements got no answer in time"
                ))
            }
        }
    }

    /// Where waiters are registered and acks recorded.
    pub fn acks(&self) -> &Arc<RevocationAcks> {
        &self.acks
    }
}

impl Drop for AckListener {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
