//! Webhooks, the outbound side: endpoint secrets and Standard Webhooks signatures
//! (`signing`), where a webhook may go (`target`: URL rules, forbidden addresses, checked
//! resolution), and one delivery attempt over HTTP (`client`).

mod client;
mod signing;
mod target;

pub use client::{Attempt, AttemptOutcome, WebhookClient, MAX_ANSWER_BYTES};
pub use signing::{new_secret, WebhookSecret, SECRET_BYTES, SECRET_PREFIX};
pub use target::{is_forbidden, parse_url, resolve, TargetRefused, TargetUrl, MAX_URL_LEN};
