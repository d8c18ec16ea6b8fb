//! Webhooks: endpoint secrets and Standard Webhooks signatures (`signing`); where a webhook may
//! go and how it is sent is `crate::outbound`'s (shared with secret scanning's key fetches).
//!
//! The delivering side: the `dispatcher` that drains the outbox (woken by `wake`), each
//! attempt's body and headers (`message`), and the expiry warnings (`expiry`).

mod dispatcher;
mod expiry;
mod message;
mod signing;
mod wake;

pub use dispatcher::Dispatcher;
pub use expiry::warn_of_expiring_keys;
pub use signing::{new_secret, WebhookSecret, SECRET_BYTES, SECRET_PREFIX};
