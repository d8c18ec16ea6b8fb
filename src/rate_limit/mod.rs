//! Rate limits: token buckets per key (forwarded traffic) and per client address (failed
//! authentications), in this instance's memory or shared by the fleet through Redis. The local
//! and the shared buckets meet only through `limit` (the limit, the decision).

mod limit;
mod local;
mod shared;

pub use limit::{Limit, RateDecision};
pub use local::{Buckets, FailedAuthThrottle, KeyRateLimits};
pub use shared::{lease_cap, RedisUnavailable, SharedBuckets};
