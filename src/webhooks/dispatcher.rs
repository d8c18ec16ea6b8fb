//! The dispatcher: one per instance, it drains the outbox together with every other
//! instance's. Each round claims due deliveries (at most `webhooks.concurrency` attempts in
//! flight here; one per endpoint across the fleet, the endpoint's oldest due first), attempts
//! them, and records each outcome: delivered, retried after the schedule's next delay, or
//! failed once the attempts run out. Rounds start when a commit queues deliveries (NOTIFY, see
//! `wake`), when an attempt ends, when a retry here falls due, and every
//! `webhooks.poll_interval_ms` (which also refreshes the queue gauges).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::message::message;
use super::wake::listen_for_work;
use crate::configuration::{Settings, WebhookSettings};
use crate::metrics::{Metrics, WebhookOutcome};
use crate::outbound::parse_url;
use crate::outbound::{Attempt, AttemptOutcome, OutboundClient};
use crate::store::{AfterAttempt, AttemptRecord, ClaimedDelivery, Store};

/// A retry falls due on the database's clock; the local timer waits this much longer.
const RETRY_SLACK: Duration = Duration::from_millis(20);
/// An attempt is over this long before its endpoint's lease, at the latest.
const LEASE_MARGIN: Duration = Duration::from_millis(500);

pub struct Dispatcher {
    pub store: Store,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
}

/// What one attempt needs besides its delivery; shared by the attempts in flight.
struct Attempter {
    store: Store,
    client: OutboundClient,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// Runs until its task is dropped (attempts in flight are dropped with it: their leases
    /// expire and another round, here or elsewhere, attempts them again).
    pub async fn run(self) {
        let webhooks = &self.settings.webhooks;
        let wake = Arc::new(Notify::new());
        let _listener = AbortOnDrop(tokio::spawn(listen_for_work(
            self.settings.database.clone(),
            wake.clone(),
        )));
        let attempter = Arc::new(Attempter {
            store: self.store.clone(),
            client: OutboundClient::new(webhooks.timeout, webhooks.allow_private_targets),
            settings: self.settings.clone(),
            metrics: self.metrics.clone(),
        });
        let mut in_flight: JoinSet<Option<Instant>> = JoinSet::new();
        // When retries scheduled here fall due, soonest first.
        let mut retries: BinaryHeap<Reverse<Instant>> = BinaryHeap::new();
        let mut next_stats = Instant::now();
        let mut outage = false;
        loop {
            let room = webhooks.concurrency.get() - in_flight.len();
            if room > 0 {
                // The leases begin on the database's clock, after this instant: whatever the
                // clocks say, a lease taken now ends no sooner than `claimed_at + lease`.
                let claimed_at = Instant::now();
                match self
                    .store
                    .claim_webhook_deliveries(room, webhooks.lease())
                    .await
                {
                    Ok(claimed) => {
                        outage = false;
                        let lease_ends = claimed_at + webhooks.lease();
                        for delivery in claimed {
                            in_flight.spawn(attempter.clone().attempt(delivery, lease_ends));
                        }
                    }
                    Err(error) if !outage => {
                        outage = true;
                        tracing::warn!(error = ?error, "webhook dispatcher cannot claim deliveries; retrying every poll");
                    }
                    Err(_) => {}
                }
            }
            let now = Instant::now();
            while retries.peek().is_some_and(|Reverse(at)| *at <= now) {
                retries.pop();
            }
            if next_stats <= now {
                next_stats = now + webhooks.poll_interval;
                self.refresh_gauges().await;
            }
            let poll = now + webhooks.poll_interval;
            let until = retries.peek().map_or(poll, |Reverse(at)| (*at).min(poll));
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep_until(until) => {}
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Ok(Some(retry_at)) = done {
                        retries.push(Reverse(retry_at));
                    }
                }
            }
        }
    }

    async fn refresh_gauges(&self) {
        if let Ok(stats) = self.store.webhook_queue_stats().await {
            self.metrics.webhook_queue_depth.set(stats.pending);
            self.metrics
                .webhook_oldest_pending_age
                .set(stats.oldest_due_secs as i64);
        }
    }
}

impl Attempter {
    /// One attempt, counted and recorded; when the delivery is retried, when (locally).
    ///
    /// The attempt ends before the endpoint's lease does (`lease_ends`, as this instance can
    /// bound it), however long the claim took: once the lease is over another instance may
    /// claim the same delivery, and it must not find this attempt still sending. With no time
    /// left nothing is sent: the lease runs out and the delivery is claimed again.
    async fn attempt(
        self: Arc<Self>,
        delivery: ClaimedDelivery,
        lease_ends: Instant,
    ) -> Option<Instant> {
        let webhooks = &self.settings.webhooks;
        let started = Instant::now();
        let started_at = Utc::now();
        let must_end = (started + webhooks.timeout).min(lease_ends - LEASE_MARGIN);
        if must_end <= started {
            tracing::warn!(delivery_id = %delivery.id, endpoint_id = %delivery.endpoint_id, "webhook claim took the whole lease; the delivery is attempted once the lease is over");
            return None;
        }
        let attempt = match parse_url(&delivery.url, webhooks.allow_http) {
            Ok(url) => {
                let sent = message(&delivery, started_at.timestamp());
                let client = &self.client;
                client
                    .post_until(&url, &sent.headers, sent.body, must_end)
                    .await
            }
            // Stored when it was valid; the settings have changed since (allow_http).
            Err(problem) => Attempt {
                status: None,
                outcome: AttemptOutcome::Refused,
                detail: format!("the URL is no longer allowed: {problem}"),
            },
        };
        self.metrics
            .webhook_attempt_duration
            .observe(started.elapsed().as_secs_f64());
        let after = after_attempt(&attempt, delivery.attempts, webhooks);
        self.metrics.webhook_attempt(counted_as(&attempt, after));
        tracing::info!(
            delivery_id = %delivery.id,
            endpoint_id = %delivery.endpoint_id,
            event_type = %delivery.event_type,
            attempt = delivery.attempts + 1,
            status = attempt.status,
            outcome = ?attempt.outcome,
            detail = %attempt.detail,
            after = ?after,
            "webhook attempt"
        );
        let record = AttemptRecord {
            started_at,
            status: attempt.status,
            after,
        };
        if let Err(error) = self.store.record_webhook_attempt(&delivery, record).await {
            // The lease runs out and the delivery is attempted again: at least once.
            tracing::warn!(delivery_id = %delivery.id, error = ?error, "webhook attempt not recorded; it will be attempted again");
        }
        match after {
            AfterAttempt::RetryAfter(delay) => Some(Instant::now() + delay + RETRY_SLACK),
            AfterAttempt::Delivered | AfterAttempt::Failed => None,
        }
    }
}

/// Delivered on a 2xx; else retried after the schedule's next delay while attempts remain
/// (`previous` were made before this one), else failed.
fn after_attempt(attempt: &Attempt, previous: i32, webhooks: &WebhookSettings) -> AfterAttempt {
    if attempt.outcome == AttemptOutcome::Delivered {
        return AfterAttempt::Delivered;
    }
    let made = usize::try_from(previous).unwrap_or(0) + 1;
    if made >= webhooks.max_attempts() {
        return AfterAttempt::Failed;
    }
    AfterAttempt::RetryAfter(webhooks.retry_schedule[made - 1])
}

fn counted_as(attempt: &Attempt, after: AfterAttempt) -> WebhookOutcome {
    match (after, attempt.outcome) {
        (AfterAttempt::Delivered, _) => WebhookOutcome::Delivered,
        (AfterAttempt::Failed, _) => WebhookOutcome::Failed,
        (AfterAttempt::RetryAfter(_), AttemptOutcome::Refused) => WebhookOutcome::Refused,
        (AfterAttempt::RetryAfter(_), _) => WebhookOutcome::FailedAttempt,
    }
}

/// A task that ends with its owner.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(outcome: AttemptOutcome) -> Attempt {
        Attempt {
            status: None,
            outcome,
            detail: String::new(),
        }
    }

    #[test]
    fn attempts_follow_the_schedule_then_fail() {
        let mut webhooks = Settings::defaults().unwrap().webhooks;
        webhooks.retry_schedule = vec![Duration::from_millis(200), Duration::from_millis(700)];
        let timeout = failed(AttemptOutcome::Timeout);
        let after = |previous| after_attempt(&timeout, previous, &webhooks);
        assert_eq!(
            after(0),
            AfterAttempt::RetryAfter(Duration::from_millis(200))
        );
        assert_eq!(
            after(1),
            AfterAttempt::RetryAfter(Duration::from_millis(700))
        );
        assert_eq!(after(2), AfterAttempt::Failed);
        // A manual retry after the schedule ran out is one more attempt.
        assert_eq!(after(3), AfterAttempt::Failed);
        let delivered = Attempt {
            status: Some(204),
            outcome: AttemptOutcome::Delivered,
            detail: String::new(),
        };
        assert_eq!(
            after_attempt(&delivered, 2, &webhooks),
            AfterAttempt::Delivered
        );
        let refused = failed(AttemptOutcome::Refused);
        let retried = after_attempt(&refused, 0, &webhooks);
        assert_eq!(counted_as(&refused, retried), WebhookOutcome::Refused);
        assert_eq!(
            counted_as(&refused, AfterAttempt::Failed),
            WebhookOutcome::Failed
        );
    }
}
