//! Token buckets in memory, per instance: one per key for forwarded traffic, one per client
//! IP for failed authentications. Buckets idle for a while are evicted, so memory follows the
//! set of active clients, not every client ever seen.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::limit::{header_secs, Limit, RateDecision};
use super::shared::{RedisUnavailable, SharedBuckets};
use crate::configuration::{OnRedisError, RateLimitSettings, RateLimitStore};
use crate::domain::{Identity, KeyId, KeyRateLimit, ProjectId};
use crate::metrics::{Metrics, RateLimitFallback};

const IDLE_EVICTION: Duration = Duration::from_secs(600);
const MAX_BUCKETS: u64 = 1_000_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub struct Buckets<K> {
    buckets: moka::sync::Cache<K, Arc<Mutex<Bucket>>>,
}

impl<K: Hash + Eq + Send + Sync + Clone + 'static> Buckets<K> {
    pub fn new() -> Self {
        Buckets {
            buckets: moka::sync::Cache::builder()
                .max_capacity(MAX_BUCKETS)
                .time_to_idle(IDLE_EVICTION)
                .build(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&self, key: &K, limit: Limit) -> RateDecision {
        self.with_bucket(key, limit, true)
    }

    /// Reports whether a token is available without taking it. A key with no bucket has a
    /// full one: nothing is created, so the common case (no failures) costs one lookup.
    pub fn peek(&self, key: &K, limit: Limit) -> RateDecision {
        if !self.buckets.contains_key(key) {
            return RateDecision {
                allowed: true,
                limit: limit.burst,
                remaining: limit.burst,
                reset_secs: 0,
                retry_after_secs: 0,
            };
        }
        self.with_bucket(key, limit, false)
    }

    /// Sets the key's bucket to `tokens` as of now: the fallback buckets follow the fleet's
    /// count, so a fallback starts from where the fleet was, not from a full burst.
    pub fn mirror(&self, key: &K, limit: Limit, tokens: u32) {
        let bucket = self.buckets.get_with_by_ref(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: 0.0,
                updated: Instant::now(),
            }))
        });
        let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
        bucket.tokens = f64::from(tokens.min(limit.burst));
        bucket.updated = Instant::now();
    }

    fn with_bucket(&self, key: &K, limit: Limit, take: bool) -> RateDecision {
        let bucket = self.buckets.get_with_by_ref(key, || {
            Arc::new(Mutex::new(Bucket {
                tokens: f64::from(limit.burst),
                updated: Instant::now(),
            }))
        });
        let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let capacity = f64::from(limit.burst);
        let refilled = now.duration_since(bucket.updated).as_secs_f64() * limit.per_second;
        bucket.tokens = (bucket.tokens + refilled).min(capacity);
        bucket.updated = now;
        let allowed = bucket.tokens >= 1.0;
        if allowed && take {
            bucket.tokens -= 1.0;
        }
        let missing_for_one = (1.0 - bucket.tokens).max(0.0);
        RateDecision {
            allowed,
            limit: limit.burst,
            remaining: bucket.tokens.floor() as u32,
            reset_secs: header_secs((capacity - bucket.tokens) / limit.per_second, 0.0),
            retry_after_secs: header_secs(missing_for_one / limit.per_second, 1.0),
        }
    }
}

impl<K: Hash + Eq + Send + Sync + Clone + 'static> Default for Buckets<K> {
    fn default() -> Self {
        Buckets::new()
    }
}

/// Per-key limits for forwarded traffic, with per-project overrides: this instance's buckets,
/// or the fleet's in Redis with this instance's as the fallback (`rate_limit.store`).
pub struct KeyRateLimits {
    buckets: Buckets<KeyId>,
    shared: Option<Arc<SharedBuckets>>,
    on_redis_error: OnRedisError,
    metrics: Arc<Metrics>,
    default: Limit,
    overrides: HashMap<ProjectId, Limit>,
}

impl KeyRateLimits {
    pub fn new(settings: &RateLimitSettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let shared = match settings.store {
            RateLimitStore::Local => None,
            RateLimitStore::Redis => Some(Arc::new(SharedBuckets::new(settings, metrics.clone())?)),
        };
        Ok(KeyRateLimits {
            buckets: Buckets::new(),
            shared,
            on_redis_error: settings.on_redis_error,
            metrics,
            default: Limit {
                per_second: settings.requests_per_second,
                burst: settings.burst.get(),
            },
            overrides: settings
                .overrides
                .iter()
                .map(|o| {
                    let limit = Limit {
                        per_second: o.requests_per_second,
                        burst: o.burst.get(),
                    };
                    (o.project_id, limit)
                })
                .collect(),
        })
    }

    /// The shared store, when there is one (its probe runs in the background).
    pub fn shared(&self) -> Option<Arc<SharedBuckets>> {
        self.shared.clone()
    }

    /// The limit a key runs under: its own, else its project's override, else the default.
    pub fn limit_of(&self, project: Option<ProjectId>, own: Option<KeyRateLimit>) -> Limit {
        match own {
            Some(own) => Limit {
                per_second: own.requests_per_second,
                burst: own.burst,
            },
            None => project
                .and_then(|project| self.overrides.get(&project))
                .copied()
                .unwrap_or(self.default),
        }
    }

    /// Takes a token for this key. `Err` only with `on_redis_error = "deny"` while Redis
    /// can't answer; never waits longer than `redis_timeout_ms`.
    pub async fn take(&self, identity: &Identity) -> Result<RateDecision, RedisUnavailable> {
        let limit = self.limit_of(identity.project_id, identity.rate_limit);
        let Some(shared) = &self.shared else {
            return Ok(self.buckets.take(&identity.key_id, limit));
        };
        match shared.take(identity.key_id, limit).await {
            Ok(decision) => {
                self.buckets
                    .mirror(&identity.key_id, limit, decision.remaining);
                Ok(decision)
            }
            Err(unavailable) => match self.on_redis_error {
                OnRedisError::Local => {
                    self.metrics.rate_limit_fallback(RateLimitFallback::Local);
                    Ok(self.buckets.take(&identity.key_id, limit))
                }
                OnRedisError::Deny => {
                    self.metrics.rate_limit_fallback(RateLimitFallback::Deny);
                    Err(unavailable)
                }
            },
        }
    }
}

/// Failed authentications per client IP.
pub struct FailedAuthThrottle {
    buckets: Buckets<IpAddr>,
    limit: Limit,
}

impl FailedAuthThrottle {
    pub fn new(settings: &RateLimitSettings) -> FailedAuthThrottle {
        FailedAuthThrottle {
            buckets: Buckets::new(),
            limit: Limit {
                per_second: settings.failed_auth_per_second,
                burst: settings.failed_auth_burst.get(),
            },
        }
    }

    /// Refused when this IP has used up its failures: checked before any lookup.
    pub fn check(&self, ip: IpAddr) -> RateDecision {
        self.buckets.peek(&bucket_of(ip), self.limit)
    }

    pub fn record_failure(&self, ip: IpAddr) {
        self.buckets.take(&bucket_of(ip), self.limit);
    }
}

/// One bucket per IPv4 address, and per IPv6 /64: a single host is routinely handed a whole
/// /64, so per-/128 buckets would give one attacker 2^64 of them.
fn bucket_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(network.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::RETRY_AFTER;

    const LIMIT: Limit = Limit {
        per_second: 1.0,
        burst: 3,
    };

    #[test]
    fn allows_the_burst_then_refuses() {
        let buckets = Buckets::new();
        for remaining in [2, 1, 0] {
            let decision = buckets.take(&"k", LIMIT);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, remaining);
        }
        let refused = buckets.take(&"k", LIMIT);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, 1);
        assert!(refused
            .headers()
            .iter()
            .any(|(name, _)| name == RETRY_AFTER));
    }

    #[test]
    fn keys_are_independent() {
        let buckets = Buckets::new();
        for _ in 0..3 {
            buckets.take(&"a", LIMIT);
        }
        assert!(!buckets.take(&"a", LIMIT).allowed);
        assert!(buckets.take(&"b", LIMIT).allowed);
    }

    #[test]
    fn peeking_takes_nothing() {
        let buckets = Buckets::new();
        for _ in 0..10 {
            assert!(buckets.peek(&"k", LIMIT).allowed);
        }
        assert_eq!(buckets.take(&"k", LIMIT).remaining, 2);
    }

    #[test]
    fn failed_auths_share_a_bucket_per_ipv6_64_and_per_ipv4_address() {
        let throttle = FailedAuthThrottle {
            buckets: Buckets::new(),
            limit: LIMIT,
        };
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"] {
            throttle.record_failure(host.parse().unwrap());
        }
        assert!(!throttle.check("2001:db8:1:2::77".parse().unwrap()).allowed);
        assert!(throttle.check("2001:db8:1:3::1".parse().unwrap()).allowed);
        for _ in 0..3 {
            throttle.record_failure("192.0.2.1".parse().unwrap());
        }
        assert!(!throttle.check("192.0.2.1".parse().unwrap()).allowed);
        assert!(throttle.check("192.0.2.2".parse().unwrap()).allowed);
    }

    #[test]
    fn a_mirrored_bucket_starts_from_the_count_given() {
        let buckets = Buckets::new();
        buckets.mirror(&"k", LIMIT, 1);
        assert!(buckets.take(&"k", LIMIT).allowed);
        assert!(
            !buckets.take(&"k", LIMIT).allowed,
            "one token, not the burst"
        );
        buckets.mirror(&"k", LIMIT, 99);
        assert_eq!(
            buckets.peek(&"k", LIMIT).remaining,
            3,
            "capped at the burst"
        );
    }

    #[test]
    fn tokens_refill_over_time() {
        let buckets = Buckets::new();
        let fast = Limit {
            per_second: 1000.0,
            burst: 1,
        };
        assert!(buckets.take(&"k", fast).allowed);
        std::thread::sleep(Duration::from_millis(5));
        assert!(buckets.take(&"k", fast).allowed);
    }
}
