//! An endpoint's deliveries as its owner sees them: listed newest first a page at a time, and
//! a failed one queued again.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::endpoints::wake_dispatchers;
use crate::domain::OrgId;
use crate::store::audit::PagePosition;
use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::pool::StoreError;

/// A delivery: one event (or test) to one endpoint, and how its attempts went.
#[derive(Debug, Clone)]
pub struct DeliveryRecord {
    pub id: Uuid,
    /// The audit event delivered; None for `webhook.test`.
    pub event_id: Option<Uuid>,
    pub event_type: String,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: i32,
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last attempt; None when none came back.
    pub last_status: Option<i32>,
    /// When a pending delivery is next attempted; None once delivered or failed.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryRecord>,
    /// Where the next page starts; None on the last page.
    pub next: Option<PagePosition>,
}

/// What asking to retry a delivery came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// It was failed; it is pending again, due now.
    Requeued,
    /// It is pending or delivered: nothing to retry.
    NotFailed,
    /// No such delivery to this endpoint of the organization.
    NotFound,
}

impl Store {
    /// Deliveries to an endpoint of `org`, newest first (by creation, then id), from `after`
    /// on; None when the endpoint is not one of `org`'s.
    pub async fn list_webhook_deliveries(
        &self,
        org: OrgId,
        endpoint: Uuid,
        after: Option<PagePosition>,
        limit: u16,
    ) -> Result<Option<DeliveryPage>, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let owned = client
                .query_opt_cached(
                    "SELECT 1 FROM webhook_endpoints WHERE id = $1 AND organization_id = $2",
                    &[&endpoint, &org.as_uuid()],
                )
                .await?;
            if owned.is_none() {
                return Ok(None);
            }
            // One more than asked: whether it exists says whether there is a next page.
            let fetch = i64::from(limit) + 1;
            let rows = client
                .query_cached(
                    "SELECT id, event_id, event_type, status, attempts, last_attempt_at,
                            last_status, next_attempt_at, created_at
                     FROM webhook_deliveries
                     WHERE endpoint_id = $1
                       AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
                     ORDER BY created_at DESC, id DESC
                     LIMIT $4",
                    &[
                        &endpoint,
                        &after.map(|after| after.at),
                        &after.map(|after| after.id),
                        &fetch,
                    ],
                )
                .await?;
            let mut deliveries: Vec<DeliveryRecord> = rows.iter().map(delivery_record).collect();
            let more = deliveries.len() > usize::from(limit);
            deliveries.truncate(usize::from(limit));
            let next = deliveries.last().filter(|_| more).map(|last| PagePosition {
                at: last.created_at,
                id: last.id,
            });
            Ok(Some(DeliveryPage { deliveries, next }))
        })
        .await
    }

    /// Queues a failed delivery to an endpoint of `org` again, due now (its attempts keep
    /// counting: a retry after the schedule ran out is one more attempt).
    pub async fn retry_webhook_delivery(
        &self,
        org: OrgId,
        endpoint: Uuid,
        delivery: Uuid,
    ) -> Result<Retried, StoreError> {
        self.within_deadline(async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            let status = tx
                .query_opt_cached(
                    "SELECT delivery.status FROM webhook_deliveries delivery
                     JOIN webhook_endpoints endpoint ON endpoint.id = delivery.endpoint_id
                     WHERE delivery.id = $1 AND delivery.endpoint_id = $2
                       AND endpoint.organization_id = $3
                     FOR UPDATE OF delivery",
                    &[&delivery, &endpoint, &org.as_uuid()],
                )
                .await?
                .map(|row| row.get::<_, String>(0));
            match status.as_deref() {
                None => return Ok(Retried::NotFound),
                Some("failed") => {}
                Some(_) => return Ok(Retried::NotFailed),
            }
            tx.execute_cached(
                "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = clock_timestamp()
                 WHERE id = $1",
                &[&delivery],
            )
            .await?;
            wake_dispatchers(&tx).await?;
            tx.commit().await?;
            Ok(Retried::Requeued)
        })
        .await
    }
}

fn delivery_record(row: &tokio_postgres::Row) -> DeliveryRecord {
    DeliveryRecord {
        id: row.get(0),
        event_id: row.get(1),
        event_type: row.get(2),
        status: row.get(3),
        attempts: row.get(4),
        last_attempt_at: row.get(5),
        last_status: row.get(6),
        next_attempt_at: row.get(7),
        created_at: row.get(8),
    }
}
