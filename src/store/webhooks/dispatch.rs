//! What the dispatchers ask of the outbox: claim due deliveries (one per endpoint, one attempt
//! per endpoint at a time across every instance), record how an attempt went, and how long
//! the queue is.
//!
//! An endpoint's lease (`busy_until`) is taken by one UPDATE that Postgres re-checks on the
//! row it locks, so two instances can never both hold it; the delivery is read afterwards, in
//! a statement of its own, so it sees every outcome committed by the lease's previous holder.
//! An attempt is recorded only if the delivery is still as it was claimed (same attempt
//! count, still pending), and the lease released only if it is still ours: an instance that
//! outlived its lease can't undo what the next holder did.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::store::audit::{event_record, AuditEventRecord};
use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::pool::StoreError;

/// A delivery this instance may now attempt, with everything the attempt needs. Its `Debug`
/// leaves the secret out.
#[derive(Clone)]
pub struct ClaimedDelivery {
    pub id: Uuid,
    pub endpoint_id: Uuid,
    pub url: String,
    /// The endpoint's signing key, raw.
    pub secret: Vec<u8>,
    pub event_type: String,
    /// When it was queued (a test delivery's `timestamp`).
    pub created_at: DateTime<Utc>,
    /// The audit event it delivers; None for a test (or an event pruned since).
    pub event: Option<AuditEventRecord>,
    /// Attempts made before this one.
    pub attempts: i32,
    /// The endpoint's lease, as set by the claim: released by the recorded outcome.
    pub lease: DateTime<Utc>,
}

impl fmt::Debug for ClaimedDelivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClaimedDelivery")
            .field("id", &self.id)
            .field("endpoint_id", &self.endpoint_id)
            .field("url", &self.url)
            .field("secret", &"..")
            .field("event_type", &self.event_type)
            .field("created_at", &self.created_at)
            .field("event", &self.event)
            .field("attempts", &self.attempts)
            .field("lease", &self.lease)
            .finish()
    }
}

/// What becomes of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    Delivered,
    /// Attempted again this long after now.
    RetryAfter(Duration),
    /// No attempt left: failed (a manual retry may queue it again).
    Failed,
}

/// One attempt's outcome, as recorded.
#[derive(Debug, Clone, Copy)]
pub struct AttemptRecord {
    pub started_at: DateTime<Utc>,
    /// The HTTP status, when one came back.
    pub status: Option<u16>,
    pub after: AfterAttempt,
}

/// The queue as the gauges show it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueueStats {
    /// Pending deliveries, due or waiting for a retry.
    pub pending: i64,
    /// How long the oldest due delivery has been due (0 when none is).
    pub oldest_due_secs: f64,
}

impl Store {
    /// Leases up to `limit` endpoints that have a due delivery (oldest commit first) for
    /// `lease`, and returns each one's oldest due delivery. An endpoint leased whose delivery
    /// went meanwhile is released at once.
    pub async fn claim_webhook_deliveries(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let leased = client
                .query_cached(
                    "UPDATE webhook_endpoints endpoint
                     SET busy_until = now() + $2::bigint::double precision * interval '1 millisecond'
                     FROM (SELECT candidate.id FROM webhook_endpoints candidate
                           JOIN (SELECT endpoint_id, min(commit_order) AS first
                                 FROM webhook_deliveries
                                 WHERE status = 'pending' AND next_attempt_at <= now()
                                 GROUP BY endpoint_id) due ON due.endpoint_id = candidate.id
                           WHERE candidate.busy_until IS NULL OR candidate.busy_until <= now()
                           ORDER BY due.first
                           LIMIT $1
                           FOR UPDATE OF candidate SKIP LOCKED) chosen
                     WHERE endpoint.id = chosen.id
                       AND (endpoint.busy_until IS NULL OR endpoint.busy_until <= now())
                     RETURNING endpoint.id, endpoint.busy_until",
                    &[&(limit as i64), &(lease.as_millis() as i64)],
                )
                .await?;
            if leased.is_empty() {
                return Ok(Vec::new());
            }
            let endpoints: Vec<Uuid> = leased.iter().map(|row| row.get(0)).collect();
            let leases: Vec<DateTime<Utc>> = leased.iter().map(|row| row.get(1)).collect();
            let rows = client
                .query_cached(
                    "SELECT DISTINCT ON (delivery.endpoint_id)
                            event.id, event.action, event.occurred_at, event.actor_type,
                            event.actor_key_id, event.actor_prefix, event.target_type,
                            event.target_id, event.project_id, event.ip, event.user_agent,
                            event.request_id, event.changes, event.actor_provider, event.details,
                            delivery.id, delivery.endpoint_id, endpoint.url, endpoint.secret,
                            delivery.event_type, delivery.created_at, delivery.attempts
                     FROM webhook_deliveries delivery
                     JOIN webhook_endpoints endpoint ON endpoint.id = delivery.endpoint_id
                     LEFT JOIN audit_events event ON event.id = delivery.event_id
                     WHERE delivery.endpoint_id = ANY ($1) AND delivery.status = 'pending'
                       AND delivery.next_attempt_at <= now()
                     ORDER BY delivery.endpoint_id, delivery.commit_order",
                    &[&endpoints],
                )
                .await?;
            let lease_of = |endpoint: Uuid| {
                let at = endpoints.iter().position(|id| *id == endpoint);
                leases[at.expect("claimed deliveries are of leased endpoints")]
            };
            let claimed: Vec<ClaimedDelivery> = rows
                .iter()
                .map(|row| ClaimedDelivery {
                    // The audit event's columns come first; all null for a test delivery.
                    event: row.get::<_, Option<Uuid>>(0).map(|_| event_record(row)),
                    id: row.get(15),
                    endpoint_id: row.get(16),
                    url: row.get(17),
                    secret: row.get(18),
                    event_type: row.get(19),
                    created_at: row.get(20),
                    attempts: row.get(21),
                    lease: lease_of(row.get(16)),
                })
                .collect();
            let idle: Vec<usize> = (0..endpoints.len())
                .filter(|at| claimed.iter().all(|c| c.endpoint_id != endpoints[*at]))
                .collect();
            if !idle.is_empty() {
                let ids: Vec<Uuid> = idle.iter().map(|at| endpoints[*at]).collect();
                let held: Vec<DateTime<Utc>> = idle.iter().map(|at| leases[*at]).collect();
                release(&client, &ids, &held).await?;
            }
            Ok(claimed)
        })
        .await
    }

    /// Records `attempt` of `claimed` and releases its endpoint's lease, if both are still as
    /// the claim left them.
    pub async fn record_webhook_attempt(
        &self,
        claimed: &ClaimedDelivery,
        attempt: AttemptRecord,
    ) -> Result<(), StoreError> {
        let (status, retry_ms) = match attempt.after {
            AfterAttempt::Delivered => ("delivered", None),
            AfterAttempt::RetryAfter(delay) => ("pending", Some(delay.as_millis() as i64)),
            AfterAttempt::Failed => ("failed", None),
        };
        self.within_deadline(async {
            let client = self.pool.get().await?;
            client
                .execute_cached(
                    "WITH recorded AS (
                         UPDATE webhook_deliveries
                         SET attempts = attempts + 1, last_attempt_at = $3, last_status = $4,
                             status = $5,
                             next_attempt_at = clock_timestamp()
                                 + $6::bigint::double precision * interval '1 millisecond'
                         WHERE id = $1 AND attempts = $2 AND status = 'pending'
                         RETURNING 1
                     )
                     UPDATE webhook_endpoints SET busy_until = NULL
                     WHERE id = $7 AND busy_until = $8",
                    &[
                        &claimed.id,
                        &claimed.attempts,
                        &attempt.started_at,
                        &attempt.status.map(i32::from),
                        &status,
                        &retry_ms,
                        &claimed.endpoint_id,
                        &claimed.lease,
                    ],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Pending deliveries, and how long the oldest due one has waited.
    pub async fn webhook_queue_stats(&self) -> Result<QueueStats, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let row = client
                .query_one_cached(
                    "SELECT count(*),
                            coalesce(extract(epoch FROM now() - min(next_attempt_at)
                                     FILTER (WHERE next_attempt_at <= now())), 0)::double precision
                     FROM webhook_deliveries WHERE status = 'pending'",
                    &[],
                )
                .await?;
            Ok(QueueStats {
                pending: row.get(0),
                oldest_due_secs: row.get(1),
            })
        })
        .await
    }
}

/// Gives up leases this instance holds without using them.
async fn release(
    client: &deadpool_postgres::Object,
    endpoints: &[Uuid],
    leases: &[DateTime<Utc>],
) -> Result<(), StoreError> {
    client
        .execute_cached(
            "UPDATE webhook_endpoints endpoint SET busy_until = NULL
             FROM unnest($1::uuid[], $2::timestamptz[]) AS held(id, lease)
             WHERE endpoint.id = held.id AND endpoint.busy_until = held.lease",
            &[&endpoints, &leases],
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let claimed = ClaimedDelivery {
            id: Uuid::nil(),
            endpoint_id: Uuid::nil(),
            url: "https://example.com/hook".to_owned(),
            secret: vec![0xAB; 32],
            event_type: "webhook.test".to_owned(),
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            event: None,
            attempts: 0,
            lease: DateTime::<Utc>::UNIX_EPOCH,
        };
        let shown = format!("{claimed:?}");
        assert!(shown.contains("secret: \"..\""), "{shown}");
        assert!(!shown.contains("171, 171"), "{shown}");
    }
}
