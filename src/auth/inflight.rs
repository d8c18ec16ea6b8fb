//! One query per key hash at a time: concurrent misses for a hash share the load already
//! running, whether the cache is trusted or not (while the listener is down, every request
//! is a miss, so this is what keeps a burst for one key from becoming a burst of queries).
//!
//! A load ends for everyone once its first finished waiter lets go of its [`Loaded`] answer
//! (after caching it), so a miss arriving between the answer and the cache insert joins the
//! finished load instead of starting a second query; the next miss after that starts a new
//! one (its answer is then judged by the freshness guard like any other). A load whose every
//! waiter gave up is dropped, so it holds no pooled connection for nobody.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use crate::domain::KeyHash;

pub(super) struct InFlight<T: Clone> {
    pending: Mutex<HashMap<KeyHash, Pending<T>>>,
}

struct Pending<T: Clone> {
    load: Shared<BoxFuture<'static, T>>,
    waiters: usize,
}

impl<T: Clone + Send + Sync + 'static> InFlight<T> {
    pub(super) fn new() -> Self {
        InFlight {
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The result of the load running for `hash`, or of one `start` begins now. The load
    /// stays joinable until the returned [`Loaded`] is dropped: cache its value first.
    pub(super) async fn share(
        &self,
        hash: KeyHash,
        start: impl FnOnce() -> BoxFuture<'static, T>,
    ) -> Loaded<'_, T> {
        let load = {
            let mut pending = self.lock();
            let entry = pending.entry(hash).or_insert_with(|| Pending {
                load: start().shared(),
                waiters: 0,
            });
            entry.waiters += 1;
            entry.load.clone()
        };
        let mut waiter = Waiter {
            inflight: self,
            hash,
            load: load.clone(),
            finished: false,
        };
        let value = load.await;
        waiter.finished = true;
        Loaded {
            value,
            _waiter: waiter,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<KeyHash, Pending<T>>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A finished load's answer; dropping it ends the load for everyone.
pub(super) struct Loaded<'a, T: Clone + Send + Sync + 'static> {
    pub(super) value: T,
    _waiter: Waiter<'a, T>,
}

/// One requester of a shared load; on drop (finished or given up) it leaves the load.
struct Waiter<'a, T: Clone + Send + Sync + 'static> {
    inflight: &'a InFlight<T>,
    hash: KeyHash,
    load: Shared<BoxFuture<'static, T>>,
    finished: bool,
}

impl<T: Clone + Send + Sync + 'static> Drop for Waiter<'_, T> {
    fn drop(&mut self) {
        let mut pending = self.inflight.lock();
        let Some(entry) = pending.get_mut(&self.hash) else {
            return;
        };
        // Another load may have replaced ours already.
        if !entry.load.ptr_eq(&self.load) {
            return;
        }
        entry.waiters -= 1;
        if self.finished || entry.waiters == 0 {
            pending.remove(&self.hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn waiters_share_a_load_and_the_next_miss_starts_a_new_one() {
        let inflight = InFlight::<u32>::new();
        let started = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let released = released.shared();
        let start = || {
            let (started, released) = (started.clone(), released.clone());
            move || {
                started.fetch_add(1, Ordering::SeqCst);
                async move {
                    let _ = released.await;
                    7
                }
                .boxed()
            }
        };
        let hash = KeyHash::of("a");
        let all = futures_util::future::join_all(
            (0..8).map(|_| async { inflight.share(hash, start()).await.value }),
        );
        let releaser = async {
            tokio::task::yield_now().await;
            let _ = release.send(());
        };
        let (answers, ()) = futures_util::join!(all, releaser);
        assert_eq!(answers, vec![7; 8]);
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert_eq!(inflight.len(), 0, "a finished load is forgotten");
        assert_eq!(inflight.share(hash, start()).await.value, 7);
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_miss_while_an_answer_is_being_cached_joins_the_finished_load() {
        let inflight = InFlight::<u32>::new();
        let started = Arc::new(AtomicUsize::new(0));
        let start = || {
            let started = started.clone();
            move || {
                started.fetch_add(1, Ordering::SeqCst);
                async { 7 }.boxed()
            }
        };
        let hash = KeyHash::of("a");
        let first = inflight.share(hash, start()).await;
        let second = inflight.share(hash, start()).await;
        assert_eq!((first.value, second.value), (7, 7));
        assert_eq!(started.load(Ordering::SeqCst), 1);
        drop((first, second));
        assert_eq!(inflight.len(), 0);
        assert_eq!(inflight.share(hash, start()).await.value, 7);
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_load_everyone_gave_up_on_is_dropped() {
        let inflight = InFlight::<u32>::new();
        let hash = KeyHash::of("a");
        let never = || futures_util::future::pending::<u32>().boxed();
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            inflight.share(hash, never),
        )
        .await;
        assert!(gave_up.is_err());
        assert_eq!(inflight.len(), 0);
    }
}
