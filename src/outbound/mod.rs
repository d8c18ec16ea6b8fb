//! Calls the service makes outward, on a customer's or a partner's behalf: webhook deliveries
//! and secret-scanning partners' keys documents. Every one is an SSRF risk, so every one goes
//! through here: the URL rules and the addresses never contacted (`target`: forbidden ranges,
//! names resolved and checked at every connection), and one bounded exchange over HTTP/1.1 with
//! rustls (`client`: a timeout over the whole exchange, no redirects, a cap on what is read).

mod client;
mod target;

pub use client::{Attempt, AttemptOutcome, Fetched, OutboundClient, MAX_ANSWER_BYTES};
pub use target::{is_forbidden, parse_url, resolve, TargetRefused, TargetUrl, MAX_URL_LEN};
