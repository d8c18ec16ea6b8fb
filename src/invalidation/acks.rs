//! Waiting for every instance to acknowledge a revocation.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

use crate::notice::AckAddress;

#[derive(Default)]
struct Received {
    instances: Mutex<HashSet<String>>,
    changed: Notify,
}

/// Revocations this instance is waiting on, by revocation id.
pub struct RevocationAcks {
    /// Where this instance's acks are addressed: its instance id.
    instance_id: String,
    waiting: Mutex<HashMap<Uuid, Arc<Received>>>,
}

impl RevocationAcks {
    pub fn new(instance_id: String) -> RevocationAcks {
        RevocationAcks {
            instance_id,
            waiting: Mutex::default(),
        }
    }

    /// Starts collecting acks for `id`. Call before the revocation commits, so no ack can
    /// arrive unseen; the returned waiter stops collecting when dropped.
    pub fn expect(self: &Arc<Self>, id: Uuid) -> AckWaiter {
        let received = Arc::new(Received::default());
        self.lock().insert(id, received.clone());
        AckWaiter {
            acks: self.clone(),
            id,
            received,
        }
    }

    /// An ack heard on an ack channel: `<revocation id>:<instance id>`. Acks of revocations
    /// not waited for are ignored. The instance id is the last field: an instance of a version
    /// before addressed acks echoes the whole tail of the notice (`<revocation id>:<revoker>`)
    /// before its own id.
    pub fn record(&self, payload: &str) {
        let (Some((id, _)), Some((_, instance))) =
            (payload.split_once(':'), payload.rsplit_once(':'))
        else {
            return;
        };
        let Ok(id) = Uuid::parse_str(id) else {
            return;
        };
        let received = self.lock().get(&id).cloned();
        if let Some(received) = received {
            received
                .instances
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(instance.to_owned());
            received.changed.notify_waiters();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Arc<Received>>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct AckWaiter {
    acks: Arc<RevocationAcks>,
    id: Uuid,
    received: Arc<Received>,
}

impl AckWaiter {
    /// For the notice: this revocation, acknowledged to this instance.
    pub fn address(&self) -> AckAddress {
        AckAddress {
            revocation: self.id,
            reply_to: self.acks.instance_id.clone(),
        }
    }

    /// Ok once every instance in `expected` has acknowledged; when `timeout` runs out first,
    /// the instances that did not.
    pub async fn wait_for(
        &self,
        expected: &[String],
        timeout: Duration,
    ) -> Result<(), Vec<String>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.received.changed.notified();
            tokio::pin!(changed);
            // Registered before checking, so an ack between the check and the wait wakes us.
            changed.as_mut().enable();
            let missing: Vec<String> = {
                let instances = self
                    .received
                    .instances
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                expected
                    .iter()
                    .filter(|instance| !instances.contains(*instance))
                    .cloned()
                    .collect()
            };
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(missing);
            }
        }
    }
}

impl Drop for AckWaiter {
    fn drop(&mut self) {
        self.acks.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::KeyHash;

    #[tokio::test]
    async fn completes_when_every_expected_instance_acked() {
        let acks = Arc::new(RevocationAcks::new("z".to_owned()));
        let id = Uuid::new_v4();
        let waiter = acks.expect(id);
        let expected = vec!["a".to_owned(), "b".to_owned()];
        acks.record(&format!("{id}:a"));
        let recorder = {
            let acks = acks.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                acks.record(&format!("{id}:b"));
            })
        };
        assert_eq!(
            waiter.wait_for(&expected, Duration::from_secs(5)).await,
            Ok(())
        );
        recorder.await.unwrap();
    }

    #[tokio::test]
    async fn times_out_when_an_instance_never_acks() {
        let acks = Arc::new(RevocationAcks::new("z".to_owned()));
        let id = Uuid::new_v4();
        let waiter = acks.expect(id);
        acks.record(&format!("{id}:a"));
        acks.record(&format!("{}:b", Uuid::new_v4()));
        acks.record("garbage");
        let expected = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(
            waiter.wait_for(&expected, Duration::from_millis(50)).await,
            Err(vec!["b".to_owned()]),
            "the instances that did not answer are named"
        );
    }

    #[tokio::test]
    async fn nothing_expected_completes_at_once_and_drop_unregisters() {
        let acks = Arc::new(RevocationAcks::new("z".to_owned()));
        let waiter = acks.expect(Uuid::new_v4());
        assert_eq!(waiter.wait_for(&[], Duration::ZERO).await, Ok(()));
        drop(waiter);
        assert!(acks.lock().is_empty());
    }

    #[tokio::test]
    async fn an_old_version_echoing_the_whole_notice_tail_is_still_counted() {
        let acks = Arc::new(RevocationAcks::new("z".to_owned()));
        let waiter = acks.expect(Uuid::new_v4());
        let address = waiter.address();
        assert_eq!(address.reply_to, "z");
        // `<revocation id>:<revoker>` as an old listener parsed it, then its own id.
        acks.record(&format!("{}:{}:old", address.revocation, address.reply_to));
        assert_eq!(
            waiter
                .wait_for(&["old".to_owned()], Duration::from_secs(5))
                .await,
            Ok(())
        );
    }

    #[test]
    fn the_notice_names_hash_revocation_and_revoker() {
        let hash = KeyHash::of("ls_proj_anything");
        let address = AckAddress {
            revocation: Uuid::nil(),
            reply_to: "abc123".to_owned(),
        };
        assert_eq!(
            address.notice(hash),
            format!("{}:{}:abc123", hash.to_hex(), Uuid::nil())
        );
    }
}
