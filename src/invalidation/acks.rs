//! Waiting for every instance to acknowledge a revocation.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use uuid::Uuid;

#[derive(Default)]
struct Received {
    instances: Mutex<HashSet<String>>,
    changed: Notify,
}

/// Revocations this instance is waiting on, by revocation id.
#[derive(Default)]
pub struct RevocationAcks {
    waiting: Mutex<HashMap<Uuid, Arc<Received>>>,
}

impl RevocationAcks {
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

    /// An ack heard on the channel: `<revocation id>:<instance id>`. Others' acks are ignored.
    pub fn record(&self, payload: &str) {
        let Some((id, instance)) = payload.split_once(':') else {
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
    pub fn id(&self) -> Uuid {
        self.id
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

    #[tokio::test]
    async fn completes_when_every_expected_instance_acked() {
        let acks = Arc::new(RevocationAcks::default());
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
        let acks = Arc::new(RevocationAcks::default());
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
        let acks = Arc::new(RevocationAcks::default());
        let waiter = acks.expect(Uuid::new_v4());
        assert_eq!(waiter.wait_for(&[], Duration::ZERO).await, Ok(()));
        drop(waiter);
        assert!(acks.lock().is_empty());
    }
}
