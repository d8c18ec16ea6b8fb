//! Postgres: the pool, migrations, and the queries, grouped by what they touch.
//!
//! Create, revoke and roll are single transactions that take the organization's advisory lock, so
//! instances sharing one database agree on the order of key changes.
//!
//! This file only declares and re-exports: the files below import each other directly, never
//! through here.

mod audit;
mod cached;
mod event_view;
mod handle;
mod keys;
mod migrations;
mod orgs;
mod pool;
mod usage;
mod webhooks;

pub use audit::{AuditEventRecord, EventPage, EventQuery, PagePosition};
pub use event_view::EventView;
pub use handle::Store;
pub use keys::{
    Announced, Caller, CallerRefusal, Ceiling, CreateKeyError, KeyPatch, KeyRecord, LeakSite,
    MasterKeyRoll, MasterKeyRollError, NewKey, NotRollable, ReportedKey, RevokeError,
    RevokeOutcome, RevokedMasterKey, RollError, RollOutcome, RollRequest, UpdateError,
    UpdateOutcome, UpdateRequest,
};
pub use migrations::{migrations_applied, run_migrations};
pub use orgs::{NewOrganization, OrganizationRecord, ProjectRecord};
pub use pool::{connect_pool, StoreError};
pub use usage::{UsageDelta, UsageScope};
pub use webhooks::{
    AfterAttempt, AttemptRecord, ClaimedDelivery, CreateEndpointError, DeliveryPage,
    DeliveryRecord, EndpointRecord, NewEndpoint, QueueStats, Retried, TEST_EVENT_TYPE,
};
