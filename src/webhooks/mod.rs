//! Webhooks, the outbound side: endpoint secrets and Standard Webhooks signatures
//! (`signing`), where a webhook may go (`target`: URL rules, forbidden addresses, checked
//! resolution), and one delivery attempt over HTTP (`client`).
//!
//! The delivering side: the `dispatcher` that drains the outbox (woken by `wake`), each
//! attempt's body and headers (`message`), and the expiry warnings (`expiry`).

mod client;
mod dispatcher;
mod expiry;
mod message;
mod signing;
mod target;
mod wake;

pub use client::{Attempt, AttemptOutcome, Fetched, WebhookClient, MAX_ANSWER_BYTES};
pub use dispatcher::Dispatcher;
pub use expiry::warn_of_expiring_keys;
pub use signing::{new_secret, WebhookSecret, SECRET_BYTES, SECRET_PREFIX};
pub use target::{is_forbidden, parse_url, resolve, TargetRefused, TargetUrl, MAX_URL_LEN};
