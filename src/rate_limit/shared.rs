//! Per-key limits counted once for the whole fleet (`rate_limit.store = "redis"`).
//!
//! Redis holds one token bucket per key and decides in one step (a Lua script: refill, take
//! up to the tokens asked for, store), so concurrent instances can never both spend the same
//! token. An instance leases a small batch of a key's tokens and spends them locally: most
//! requests make no round trip. A lease grows (doubling, up to `lease_cap`) only while this
//! instance empties its leases quickly, and is one token otherwise, so tokens seldom sit
//! unspent here while another instance is refused. A refusal from Redis is remembered until
//! the next token is due, so a flood over the limit costs one round trip per token, not per
//! request. See docs/architecture.md for the accuracy bound and the failure modes.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::ExposeSecret;

use super::limit::{header_secs, Limit, RateDecision};
use crate::configuration::RateLimitSettings;
use crate::domain::KeyId;
use crate::metrics::{Metrics, RedisRoundTrip};

/// Refill, take up to ARGV[3] whole tokens, store; the clock is Redis's own (`TIME`), so the
/// instances' clocks never matter. Returns {granted, tokens left (string: Lua would truncate
/// a number), milliseconds until the next whole token when less than one is left}.
const LEASE_SCRIPT: &str = r#"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local state = redis.call('HMGET', KEYS[1], 't', 'n')
local tokens = burst
if state[1] and state[2] then
  local elapsed = math.max(0, now - tonumber(state[1]))
  tokens = math.min(burst, tonumber(state[2]) + elapsed * rate / 1000000)
end
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 't', string.format('%d', now), 'n', string.format('%.6f', tokens))
-- Waits are capped at a year (in ms): a key's own rate may be tiny, and Redis takes only
-- integers (a huge float is refused, which would read as an outage).
local longest = 31536000000
-- Gone once it would be full again: an absent bucket is a full one.
redis.call('PEXPIRE', KEYS[1], math.min(math.ceil((burst - tokens) / rate * 1000) + 1000, longest))
-- Exhausted: when the next whole token is due, so nobody asks again before then.
local wait_ms = 0
if tokens < 1 then
  wait_ms = math.min(math.ceil((1 - tokens) / rate * 1000), longest)
end
return {granted, string.format('%.6f', tokens), wait_ms}
"#;

/// A lease is doubled only when the previous one was emptied within this time.
const FAST_SPENDING: Duration = Duration::from_millis(50);
/// The largest lease, whatever the limit.
const MAX_LEASE: u32 = 32;
/// How often an outage is re-checked.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// Consecutive failed calls that mark Redis down (one slow answer on a loaded box falls back
/// for its own request only).
const FAILURES_FOR_AN_OUTAGE: u32 = 3;
/// Consecutive failed probes after which the connection is replaced by a new one.
const PROBES_BEFORE_NEW_CONNECTION: u32 = 5;

/// The most tokens one instance may hold for a key: at most 1/16 of the burst, so the
/// tokens a fleet can hold unspent stay a small share of what the key may use.
pub fn lease_cap(limit: Limit) -> u32 {
    (limit.burst / 16).clamp(1, MAX_LEASE)
}

/// Redis could not answer in time; the caller applies `on_redis_error`.
#[derive(Debug)]
pub struct RedisUnavailable;

pub struct SharedBuckets {
    client: redis::Client,
    connection: RwLock<ConnectionManager>,
    script: redis::Script,
    prefix: String,
    timeout: Duration,
    leases: moka::sync::Cache<KeyId, Arc<KeyLease>>,
    /// False from the first failure until a probe gets an answer: requests don't wait on a
    /// Redis known to be down.
    healthy: AtomicBool,
    consecutive_failures: AtomicU32,
    metrics: Arc<Metrics>,
}

/// This instance's lease on one key's tokens.
struct KeyLease {
    state: Mutex<LeaseState>,
    /// One round trip per key at a time; others wait for its answer.
    fetching: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct LeaseState {
    /// Leased and not yet spent.
    tokens: u32,
    /// What the next round trip asks for.
    next_size: u32,
    fetched_at: Option<Instant>,
    /// Tokens left in Redis after our last round trip (for RateLimit-Remaining).
    shared_remaining: f64,
    /// Redis refused: no token before then.
    denied_until: Option<Instant>,
    /// The limit the lease was taken under.
    limit: Option<Limit>,
}

impl LeaseState {
    /// Spends a leased token, or refuses while Redis's last refusal holds; None when only a
    /// round trip can tell.
    fn spend(&mut self, limit: Limit, now: Instant) -> Option<RateDecision> {
        if self.limit != Some(limit) {
            // The key's limit changed (a key update): what was leased under the old one is
            // given up, so the key never holds more than its new burst.
            if self.limit.is_some() {
                self.tokens = 0;
                self.next_size = 1;
                self.denied_until = None;
            }
            self.limit = Some(limit);
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            return Some(self.decision(limit, true, now));
        }
        match self.denied_until {
            Some(until) if until > now => Some(self.decision(limit, false, now)),
            _ => None,
        }
    }

    fn decision(&self, limit: Limit, allowed: bool, now: Instant) -> RateDecision {
        let available =
            (self.shared_remaining + f64::from(self.tokens)).min(f64::from(limit.burst));
        let until_next = self.denied_until.map_or(0.0, |until| {
            until.saturating_duration_since(now).as_secs_f64()
        });
        RateDecision {
            allowed,
            limit: limit.burst,
            remaining: available.floor() as u32,
            reset_secs: header_secs((f64::from(limit.burst) - available) / limit.per_second, 0.0),
            retry_after_secs: header_secs(until_next, 1.0),
        }
    }

    /// The size of the next lease: doubled while leases are emptied fast, else one token.
    fn grow_or_shrink(&mut self, limit: Limit, now: Instant) {
        let fast = self
            .fetched_at
            .is_some_and(|at| now.duration_since(at) < FAST_SPENDING);
        self.next_size = if fast {
            (self.next_size * 2).clamp(1, lease_cap(limit))
        } else {
            1
        };
        self.fetched_at = Some(now);
    }

    fn granted(
        &mut self,
        limit: Limit,
        granted: u32,
        remaining: f64,
        wait: Duration,
        now: Instant,
    ) {
        // Taken under a limit the key no longer has (updated meanwhile): given up, as `spend`
        // gives up what was leased before the change.
        if self.limit.is_some_and(|current| current != limit) {
            return;
        }
        self.tokens += granted;
        self.shared_remaining = remaining;
        // Redis is out of tokens: the requests queued behind this round trip are refused
        // here rather than each asking again for a token that isn't there.
        self.denied_until = (!wait.is_zero()).then(|| now + wait);
    }
}

impl SharedBuckets {
    pub fn new(
        settings: &RateLimitSettings,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<SharedBuckets> {
        let client = redis::Client::open(settings.redis_url.expose_secret())
            .map_err(|_| anyhow::anyhow!("rate_limit.redis_url is not a valid Redis URL"))?;
        let connection = connect(&client, settings.redis_timeout)?;
        metrics.rate_limit_redis_up.set(1);
        Ok(SharedBuckets {
            client,
            connection: RwLock::new(connection),
            script: redis::Script::new(LEASE_SCRIPT),
            prefix: settings.redis_key_prefix.clone(),
            timeout: settings.redis_timeout,
            leases: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            // Optimistic: the first request finds out, within the timeout.
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            metrics,
        })
    }

    /// Takes one of the key's fleet-wide tokens. Waits at most `redis_timeout_ms`.
    pub async fn take(
        self: &Arc<Self>,
        key: KeyId,
        limit: Limit,
    ) -> Result<RateDecision, RedisUnavailable> {
        if !self.healthy.load(Ordering::Acquire) {
            return Err(RedisUnavailable);
        }
        let lease = self.leases.get_with(key, || {
            Arc::new(KeyLease {
                state: Mutex::new(LeaseState::default()),
                fetching: Arc::new(tokio::sync::Mutex::new(())),
            })
        });
        let spent = lock(&lease.state).spend(limit, Instant::now());
        if let Some(decision) = spent {
            if decision.allowed {
                self.prefetch_if_low(&lease, key, limit);
            }
            return Ok(decision);
        }
        self.fetch_and_take(&lease, key, limit).await
    }

    /// The synchronous path: the lease is empty. The whole of it, queueing behind this key's
    /// round trip in flight included, stays within `redis_timeout_ms`; only Redis's own
    /// slowness counts toward an outage, not time spent queueing on a busy key.
    async fn fetch_and_take(
        &self,
        lease: &KeyLease,
        key: KeyId,
        limit: Limit,
    ) -> Result<RateDecision, RedisUnavailable> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let Ok(_one_at_a_time) = tokio::time::timeout_at(deadline, lease.fetching.lock()).await
        else {
            return Err(RedisUnavailable);
        };
        // Whoever held the lock before may have brought tokens (or a refusal) for us too.
        let want = {
            let mut state = lock(&lease.state);
            let now = Instant::now();
            if let Some(decision) = state.spend(limit, now) {
                return Ok(decision);
            }
            state.grow_or_shrink(limit, now);
            state.next_size
        };
        let budget = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.metrics.redis_round_trip(RedisRoundTrip::Sync);
        let (granted, remaining, wait) =
            match tokio::time::timeout_at(deadline, self.lease(key, limit, want)).await {
                Ok(Ok(answer)) => {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    answer
                }
                Ok(Err(error)) => return Err(self.failed(&error)),
                // Redis had less than half its time: the queue, not Redis, was slow.
                Err(_) if budget < self.timeout / 2 => return Err(RedisUnavailable),
                Err(_) => return Err(self.failed(&"no answer within rate_limit.redis_timeout_ms")),
            };
        let mut state = lock(&lease.state);
        let now = Instant::now();
        state.granted(limit, granted, remaining, wait, now);
        Ok(state
            .spend(limit, now)
            .unwrap_or_else(|| state.decision(limit, false, now)))
    }

    /// Asks for the next lease in the background once half of a multi-token lease is spent,
    /// so a busy key's requests don't wait for Redis.
    fn prefetch_if_low(self: &Arc<Self>, lease: &Arc<KeyLease>, key: KeyId, limit: Limit) {
        let want = {
            let state = lock(&lease.state);
            if state.next_size < 2 || state.tokens > state.next_size / 2 {
                return;
            }
            state.next_size
        };
        let Ok(gate) = lease.fetching.clone().try_lock_owned() else {
            return; // a round trip is already under way
        };
        let (this, lease) = (self.clone(), lease.clone());
        tokio::spawn(async move {
            let _gate = gate;
            this.metrics.redis_round_trip(RedisRoundTrip::Prefetch);
            match tokio::time::timeout(this.timeout, this.lease(key, limit, want)).await {
                Ok(Ok((granted, remaining, wait))) => {
                    this.consecutive_failures.store(0, Ordering::Relaxed);
                    let mut state = lock(&lease.state);
                    let now = Instant::now();
                    state.fetched_at = Some(now);
                    state.granted(limit, granted, remaining, wait, now);
                }
                Ok(Err(error)) => {
                    this.failed(&error);
                }
                Err(_) => {
                    this.failed(&"no answer within rate_limit.redis_timeout_ms");
                }
            }
        });
    }

    /// One atomic decide-and-count in Redis: (tokens granted, tokens left there, wait).
    async fn lease(
        &self,
        key: KeyId,
        limit: Limit,
        want: u32,
    ) -> redis::RedisResult<(u32, f64, Duration)> {
        let mut connection = self.connection();
        let (granted, remaining, wait_ms): (u32, String, u64) = self
            .script
            .key(format!("{}{}", self.prefix, key))
            .arg(limit.per_second)
            .arg(limit.burst)
            .arg(want)
            .invoke_async(&mut connection)
            .await?;
        Ok((
            granted,
            remaining.parse().unwrap_or(0.0),
            Duration::from_millis(wait_ms),
        ))
    }

    fn connection(&self) -> ConnectionManager {
        self.connection
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts the failure; `FAILURES_FOR_AN_OUTAGE` in a row make an outage, logged once,
    /// during which no request waits on Redis until the probe sees it answer again.
    fn failed(&self, error: &dyn Display) -> RedisUnavailable {
        self.metrics.rate_limit_redis_errors.inc();
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= FAILURES_FOR_AN_OUTAGE && self.healthy.swap(false, Ordering::AcqRel) {
            self.metrics.rate_limit_redis_up.set(0);
            tracing::warn!(
                error = %error,
                "Redis does not answer: key rate limits follow rate_limit.on_redis_error until it does"
            );
        }
        RedisUnavailable
    }

    /// Runs for the application's life: while Redis is marked down, pings it every
    /// `PROBE_INTERVAL` and resumes shared counting on the first answer; a connection that
    /// keeps failing is replaced, so a Redis restarted elsewhere is found again.
    pub async fn probe(self: Arc<Self>) {
        let mut failures = 0u32;
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            if self.healthy.load(Ordering::Acquire) {
                failures = 0;
                continue;
            }
            let mut connection = self.connection();
            let ping_command = redis::cmd("PING");
            let ping = ping_command.query_async::<String>(&mut connection);
            match tokio::time::timeout(self.timeout, ping).await {
                Ok(Ok(_)) => {
                    failures = 0;
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                    self.metrics.rate_limit_redis_up.set(1);
                    self.healthy.store(true, Ordering::Release);
                    tracing::info!("Redis answers again: key rate limits are shared again");
                }
                _ => {
                    self.metrics.rate_limit_redis_errors.inc();
                    failures += 1;
                    if failures.is_multiple_of(PROBES_BEFORE_NEW_CONNECTION) {
                        if let Ok(fresh) = connect(&self.client, self.timeout) {
                            *self.connection.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                        }
                    }
                }
            }
        }
    }
}

/// A lazily connected, self-reconnecting connection: nothing waits on Redis at start-up.
fn connect(client: &redis::Client, timeout: Duration) -> anyhow::Result<ConnectionManager> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(10))
        .set_max_delay(Duration::from_millis(200));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
        .map_err(|error| anyhow::anyhow!("cannot set up the Redis connection: {error}"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Limit = Limit {
        per_second: 50.0,
        burst: 50,
    };

    #[test]
    fn leases_are_at_most_a_sixteenth_of_the_burst_and_never_above_32() {
        let cap = |burst| {
            lease_cap(Limit {
                per_second: 1.0,
                burst,
            })
        };
        assert_eq!(cap(3), 1);
        assert_eq!(cap(50), 3);
        assert_eq!(cap(1_000_000), 32);
    }

    #[test]
    fn a_lease_doubles_only_while_it_is_emptied_fast() {
        let mut state = LeaseState::default();
        let start = Instant::now();
        state.grow_or_shrink(LIMIT, start);
        assert_eq!(state.next_size, 1);
        state.grow_or_shrink(LIMIT, start + Duration::from_millis(1));
        assert_eq!(state.next_size, 2);
        state.grow_or_shrink(LIMIT, start + Duration::from_millis(2));
        assert_eq!(state.next_size, 3, "capped at lease_cap");
        state.grow_or_shrink(LIMIT, start + Duration::from_secs(1));
        assert_eq!(state.next_size, 1, "a slow key leases one token at a time");
    }

    #[test]
    fn leased_tokens_are_spent_then_a_refusal_is_remembered_until_the_next_token() {
        let mut state = LeaseState::default();
        let now = Instant::now();
        assert!(state.spend(LIMIT, now).is_none(), "nothing leased yet");
        state.granted(LIMIT, 2, 10.0, Duration::ZERO, now);
        let first = state.spend(LIMIT, now).unwrap();
        assert!(first.allowed);
        assert_eq!(first.remaining, 11);
        assert!(state.spend(LIMIT, now).unwrap().allowed);
        assert!(state.spend(LIMIT, now).is_none(), "lease used up");
        state.granted(LIMIT, 0, 0.2, Duration::from_millis(1500), now);
        let refused = state.spend(LIMIT, now).unwrap();
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after_secs, 2);
        assert!(state.spend(LIMIT, now + Duration::from_secs(2)).is_none());
    }

    #[test]
    fn a_lease_taken_under_an_old_limit_is_given_up() {
        let mut state = LeaseState::default();
        let now = Instant::now();
        assert!(state.spend(LIMIT, now).is_none());
        let lowered = Limit {
            per_second: LIMIT.per_second,
            burst: 1,
        };
        assert!(
            state.spend(lowered, now).is_none(),
            "the limit changed: a new lease"
        );
        state.granted(LIMIT, 5, 10.0, Duration::ZERO, now);
        assert!(
            state.spend(lowered, now).is_none(),
            "tokens leased under the old limit"
        );
    }
}
