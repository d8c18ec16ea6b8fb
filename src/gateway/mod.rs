//! The forwarding gateway: authenticated tenant traffic under configured prefixes is
//! rate-limited per key and forwarded to its upstream with identity and forwarding headers.
//! Every request's path is normalised before routing (`normalize_request`), gateway or not.

mod forward;
mod headers;
mod path;
mod rate_limit;
mod shared_limit;
mod upstream;

pub use forward::configure;
pub use path::{normalize, normalize_request, PathError};
pub use rate_limit::{Buckets, FailedAuthThrottle, KeyRateLimits, Limit, RateDecision};
pub use shared_limit::{lease_cap, RedisUnavailable, SharedBuckets};
pub use upstream::Upstreams;
