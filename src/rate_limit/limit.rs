//! The vocabulary the local and the shared buckets speak: a limit, and the decision of taking
//! a token under it (with the `RateLimit-*` headers it reports). Both bucket kinds import this;
//! neither imports the other.

use actix_web::http::header::{HeaderName, HeaderValue, RETRY_AFTER};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub per_second: f64,
    pub burst: u32,
}

/// The longest wait a decision reports, in seconds (a year): a key's own limit may be as slow
/// as it likes (any rate above 0), and its waits must still be numbers headers can carry.
pub const LONGEST_WAIT_SECS: f64 = 31_536_000.0;

/// Whole seconds for a header: rounded up, at least `at_least`, at most [`LONGEST_WAIT_SECS`].
pub fn header_secs(seconds: f64, at_least: f64) -> u64 {
    seconds.ceil().max(at_least).min(LONGEST_WAIT_SECS) as u64
}

/// The outcome of taking (or peeking at) a token, with what the RateLimit headers report.
#[derive(Debug, Clone, Copy)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds until one token is available (0 when allowed).
    pub retry_after_secs: u64,
}

impl RateDecision {
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`, and `Retry-After` when refused.
    pub fn headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = vec![
            (
                HeaderName::from_static("ratelimit-limit"),
                self.limit.into(),
            ),
            (
                HeaderName::from_static("ratelimit-remaining"),
                self.remaining.into(),
            ),
            (
                HeaderName::from_static("ratelimit-reset"),
                self.reset_secs.into(),
            ),
        ];
        if !self.allowed {
            headers.push((RETRY_AFTER, self.retry_after_secs.into()));
        }
        headers
    }
}
