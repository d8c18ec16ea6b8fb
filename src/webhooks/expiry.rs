//! Expiry warnings: every `webhooks.poll_interval_ms`, each instance claims the keys that
//! entered their warning window (`webhooks.expiry_warning_secs` before `expiresAt`) and writes
//! their `key.expiring` events; the store makes sure each key warns once, fleet-wide.

use std::sync::Arc;

use crate::configuration::Settings;
use crate::store::Store;

/// Runs until its task is dropped.
pub async fn warn_of_expiring_keys(store: Store, settings: Arc<Settings>) {
    let webhooks = &settings.webhooks;
    let mut tick = tokio::time::interval(webhooks.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut outage = false;
    loop {
        tick.tick().await;
        match store.warn_expiring_keys(webhooks.expiry_warning).await {
            Ok(warned) => {
                outage = false;
                if warned > 0 {
                    tracing::info!(keys = warned, "key.expiring written");
                }
            }
            Err(error) if !outage => {
                outage = true;
                tracing::warn!(error = ?error, "expiry warnings: cannot reach the database; retrying every poll");
            }
            Err(_) => {}
        }
    }
}
