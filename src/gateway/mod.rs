//! The forwarding gateway: authenticated tenant traffic under configured prefixes is
//! rate-limited per key and forwarded to its upstream with identity headers.

mod forward;
mod rate_limit;

pub use forward::{configure, Upstreams};
pub use rate_limit::{Buckets, FailedAuthThrottle, KeyRateLimits, Limit, RateDecision};
