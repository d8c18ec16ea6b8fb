//! Webhooks in Postgres: customers' endpoints (`endpoints`), their deliveries as the API shows
//! them (`deliveries`), and the outbox as the dispatchers drain it (`dispatch`). Deliveries are
//! queued by `store::audit::record_event`, in the transaction of each change.
//!
//! This file only declares and re-exports: the files below import each other directly, never
//! through here.

mod deliveries;
mod dispatch;
mod endpoints;

pub use deliveries::{DeliveryPage, DeliveryRecord, Retried};
pub use dispatch::{AfterAttempt, AttemptRecord, ClaimedDelivery, QueueStats};
pub use endpoints::{CreateEndpointError, EndpointRecord, NewEndpoint, TEST_EVENT_TYPE};
