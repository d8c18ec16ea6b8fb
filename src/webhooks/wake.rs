//! The dispatcher's alarm clock: a Postgres connection of its own that LISTENs on
//! `logstitch_webhooks` and wakes the dispatcher at each notice (a commit that queued
//! deliveries), so a first attempt starts within a second of the commit whatever the poll
//! interval. Only a wake-up: while it is down the poll finds the work (a little later), and
//! each (re)connection wakes the dispatcher once, for what was queued meanwhile.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::configuration::DatabaseSettings;
use crate::notice::WEBHOOK_CHANNEL;

const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// Runs until its task is dropped: listens, rings `wake` at every notice, reconnects.
pub async fn listen_for_work(database: DatabaseSettings, wake: Arc<Notify>) {
    let mut down_logged = false;
    loop {
        match listen_until_dropped(&database, &wake).await {
            Ok(()) => down_logged = false,
            Err(error) if !down_logged => {
                down_logged = true;
                tracing::warn!(error = %format!("{error:#}"), "webhook wake-up connection down; deliveries go out at the next poll until it is back");
            }
            Err(_) => {}
        }
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// Ok when a connection that was listening ended; Err when none could be set up.
async fn listen_until_dropped(database: &DatabaseSettings, wake: &Notify) -> anyhow::Result<()> {
    let config = database.postgres_config("logstitch-webhooks")?;
    let (client, mut connection) = config.connect(NoTls).await?;
    let (notices, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(_) = message {
                let _ = notices.send(());
            }
        }
    });
    if let Err(error) = client
        .batch_execute(&format!("LISTEN {WEBHOOK_CHANNEL}"))
        .await
    {
        driver.abort();
        return Err(error.into());
    }
    // Whatever was queued while this connection was being made.
    wake.notify_one();
    while heard.recv().await.is_some() {
        wake.notify_one();
    }
    drop(client);
    Ok(())
}
