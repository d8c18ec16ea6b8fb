//! Webhook endpoints: created under the organization's lock and its endpoint limit, listed,
//! deleted (with the deliveries not yet made to them), and sent a test event. Creation and
//! deletion are audited in their own transaction.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::audit::{Action, AuditContext, TargetType};
use crate::domain::OrgId;
use crate::notice::WEBHOOK_CHANNEL;
use crate::store::audit::{record_event, Change};
use crate::store::cached::CachedStatements;
use crate::store::handle::Store;
use crate::store::keys::org_lock_id;
use crate::store::pool::StoreError;

/// The event type of a test delivery (`POST …/{id}/test`): sent to that endpoint only,
/// whatever it subscribes to.
pub const TEST_EVENT_TYPE: &str = "webhook.test";

/// An endpoint as the API shows it (never its secret).
#[derive(Debug, Clone)]
pub struct EndpointRecord {
    pub id: Uuid,
    pub url: String,
    /// As subscribed: event types, or `["*"]`.
    pub events: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// What a create writes: the URL and events already checked, and the secret's raw bytes.
pub struct NewEndpoint<'a> {
    pub organization_id: OrgId,
    pub url: &'a str,
    pub events: &'a [String],
    pub secret: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum CreateEndpointError {
    #[error("the organization has reached its limit of {0} webhook endpoints")]
    LimitReached(u32),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    pub async fn create_webhook_endpoint(
        &self,
        new: NewEndpoint<'_>,
        max_endpoints: u32,
        context: &AuditContext,
    ) -> Result<EndpointRecord, CreateEndpointError> {
        self.within_deadline(async {
            let mut client = self.pool.get().await.map_err(StoreError::from)?;
            let tx = client.transaction().await.map_err(StoreError::from)?;
            let org = new.organization_id;
            lock_organization(&tx, org).await?;
            let count: i64 = tx
                .query_one_cached(
                    "SELECT count(*) FROM webhook_endpoints WHERE organization_id = $1",
                    &[&org.as_uuid()],
                )
                .await
                .map_err(StoreError::from)?
                .get(0);
            if count >= i64::from(max_endpoints) {
                return Err(CreateEndpointError::LimitReached(max_endpoints));
            }
            let row = tx
                .query_one_cached(
                    "INSERT INTO webhook_endpoints (id, organization_id, url, events, secret)
                     VALUES ($1, $2, $3, $4, $5)
                     RETURNING id, url, events, created_at",
                    &[
                        &Uuid::now_v7(),
                        &org.as_uuid(),
                        &new.url,
                        &new.events,
                        &new.secret,
                    ],
                )
                .await
                .map_err(StoreError::from)?;
            let record = endpoint_record(&row);
            let change = endpoint_change(Action::WebhookEndpointCreated, org, record.id);
            record_event(&tx, &change, context).await?;
            tx.commit().await.map_err(StoreError::from)?;
            Ok(record)
        })
        .await
    }

    /// An organization's endpoints, newest first.
    pub async fn list_webhook_endpoints(
        &self,
        org: OrgId,
    ) -> Result<Vec<EndpointRecord>, StoreError> {
        self.within_deadline(async {
            let client = self.pool.get().await?;
            let newest_first = "SELECT id, url, events, created_at FROM webhook_endpoints
                                WHERE organization_id = $1 ORDER BY created_at DESC, id DESC";
            let rows = client.query_cached(newest_first, &[&org.as_uuid()]).await?;
            Ok(rows.iter().map(endpoint_record).collect())
        })
        .await
    }

    /// Deletes an endpoint of `org` and every delivery to it (those not yet made are never
    /// made); false when it is not one of `org`'s.
    pub async fn delete_webhook_endpoint(
        &self,
        org: OrgId,
        endpoint: Uuid,
        context: &AuditContext,
    ) -> Result<bool, StoreError> {
        self.within_deadline(async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            lock_organization(&tx, org).await?;
            let deleted = tx
                .execute_cached(
                    "DELETE FROM webhook_endpoints WHERE id = $1 AND organization_id = $2",
                    &[&endpoint, &org.as_uuid()],
                )
                .await?;
            if deleted == 0 {
                return Ok(false);
            }
            let change = endpoint_change(Action::WebhookEndpointDeleted, org, endpoint);
            record_event(&tx, &change, context).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }

    /// Queues a `webhook.test` delivery to an endpoint of `org` (under the organization's lock,
    /// like every delivery, so it takes its place in commit order) and wakes the dispatchers;
    /// false when the endpoint is not one of `org`'s.
    pub async fn queue_webhook_test(&self, org: OrgId, endpoint: Uuid) -> Result<bool, StoreError> {
        self.within_deadline(async {
            let mut client = self.pool.get().await?;
            let tx = client.transaction().await?;
            lock_organization(&tx, org).await?;
            let queued = tx
                .execute_cached(
                    "INSERT INTO webhook_deliveries (id, endpoint_id, organization_id, event_type)
                     SELECT logstitch_uuid_v7(), id, organization_id, $3 FROM webhook_endpoints
                     WHERE id = $1 AND organization_id = $2",
                    &[&endpoint, &org.as_uuid(), &TEST_EVENT_TYPE],
                )
                .await?;
            if queued == 0 {
                return Ok(false);
            }
            wake_dispatchers(&tx).await?;
            tx.commit().await?;
            Ok(true)
        })
        .await
    }
}

/// Every writer of an organization's events and deliveries holds this lock: events commit in
/// occurredAt order, deliveries in commit order, and the endpoint count can't be raced.
pub(super) async fn lock_organization(
    tx: &deadpool_postgres::Transaction<'_>,
    org: OrgId,
) -> Result<(), StoreError> {
    tx.execute_cached("SELECT pg_advisory_xact_lock($1)", &[&org_lock_id(org)])
        .await?;
    Ok(())
}

/// A NOTIFY that wakes every instance's dispatcher when `tx` commits.
pub(super) async fn wake_dispatchers(
    tx: &deadpool_postgres::Transaction<'_>,
) -> Result<(), StoreError> {
    tx.execute_cached("SELECT pg_notify($1, '')", &[&WEBHOOK_CHANNEL])
        .await?;
    Ok(())
}

fn endpoint_change(action: Action, org: OrgId, endpoint: Uuid) -> Change {
    Change::new(org, action, TargetType::WebhookEndpoint, endpoint, None)
}

fn endpoint_record(row: &tokio_postgres::Row) -> EndpointRecord {
    EndpointRecord {
        id: row.get(0),
        url: row.get(1),
        events: row.get(2),
        created_at: row.get(3),
    }
}
