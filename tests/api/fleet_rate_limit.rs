//! Key rate limits shared by the fleet (`rate_limit.store = "redis"`): several real instances,
//! each on its own thread and actix system, against one Redis. The shared Redis (`REDIS_URL`,
//! which `make test` sets from scripts/ensure-redis.sh) is only ever read and written under a
//! key prefix of the test's own; tests that stop, restart or blackhole Redis start a private
//! `redis-server` of their own (or put a proxy in front), never touching the shared one.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use futures_util::future::join_all;
use logstitch_gateway::configuration::{OnRedisError, RateLimitOverride, RateLimitStore, Settings};
use secrecy::SecretString;
use uuid::Uuid;

use crate::gateway::{route, start_upstream, Upstream};
use crate::helpers::{
    assert_error, eventually, spawn_app_with, spawn_isolated_app_with, IsolatedApp, TestDatabase,
};
use crate::pg_proxy::PgProxy;

const REDIS_UP: &str = "logstitch_rate_limit_redis_up";
const REDIS_ERRORS: &str = "logstitch_rate_limit_redis_errors_total";
const FALLBACK_LOCAL: &str = r#"logstitch_rate_limit_fallback_decisions_total{mode="local"}"#;
const FALLBACK_DENY: &str = r#"logstitch_rate_limit_fallback_decisions_total{mode="deny"}"#;
const SYNC_TRIPS: &str = r#"logstitch_rate_limit_redis_round_trips_total{kind="sync"}"#;

/// The shared Redis: `REDIS_URL`, else the default setting's.
fn shared_redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A `redis-server` of this test's own on a free port, killed when dropped.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = PrivateRedis { port, child: None };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, with nothing persisted; returns once it answers.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (make test installs it: scripts/ensure-redis.sh)");
        self.child = Some(child);
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("the private redis-server never listened on {}", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Settings of a fleet member: the shared store at `redis_url`, this test's key prefix.
fn fleet_member(
    settings: &mut Settings,
    upstream: &Upstream,
    redis_url: &str,
    prefix: &str,
    on_error: OnRedisError,
) {
    settings.gateway.routes = vec![route("/api/v1/events", &upstream.url, &["project"], 5000)];
    settings.rate_limit.store = RateLimitStore::Redis;
    settings.rate_limit.redis_url = SecretString::from(redis_url.to_owned());
    settings.rate_limit.redis_key_prefix = prefix.to_owned();
    settings.rate_limit.on_redis_error = on_error;
}

fn prefix() -> String {
    format!("logstitch:test:{}:", Uuid::new_v4().simple())
}

/// `count` instances on one database, each adjusted by `customize` after `fleet_member`.
async fn fleet(
    count: usize,
    upstream: &Upstream,
    redis_url: &str,
    on_error: OnRedisError,
    customize: impl Fn(&mut Settings),
) -> Vec<IsolatedApp> {
    let db = TestDatabase::create().await;
    let prefix = prefix();
    let mut apps = Vec::new();
    for _ in 0..count {
        apps.push(
            spawn_isolated_app_with(db.clone(), |settings| {
                fleet_member(settings, upstream, redis_url, &prefix, on_error);
                customize(settings);
            })
            .await,
        );
    }
    apps
}

/// What a flood saw, over the time it ran.
#[derive(Debug, Default)]
struct Flood {
    admitted: usize,
    limited: usize,
    unavailable: usize,
    /// Any other status, with the count.
    other: Vec<StatusCode>,
    slowest: Duration,
    elapsed: Duration,
}

/// `connections` clients, spread over the instances in turn, sending GET /api/v1/events with
/// `key` back to back until `duration` has passed.
async fn flood(apps: &[IsolatedApp], key: &str, connections: usize, duration: Duration) -> Flood {
    let started = Instant::now();
    let deadline = started + duration;
    let workers = (0..connections).map(|worker| {
        let app = &apps[worker % apps.len()];
        async move {
            let mut seen = Flood::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                let reply = app
                    .request(Method::GET, "/api/v1/events", Some(key), None)
                    .await;
                seen.slowest = seen.slowest.max(sent.elapsed());
                match reply.status {
                    status if status.is_success() => seen.admitted += 1,
                    StatusCode::TOO_MANY_REQUESTS => seen.limited += 1,
                    StatusCode::SERVICE_UNAVAILABLE => {
                        assert_error(&reply, reply.status, "service_unavailable");
                        seen.unavailable += 1
                    }
                    other => seen.other.push(other),
                }
            }
            seen
        }
    });
    let mut total = Flood::default();
    for seen in join_all(workers).await {
        total.admitted += seen.admitted;
        total.limited += seen.limited;
        total.unavailable += seen.unavailable;
        total.other.extend(seen.other);
        total.slowest = total.slowest.max(seen.slowest);
    }
    total.elapsed = started.elapsed();
    total
}

/// A project key made on the first instance and already cached (verified) on every one.
async fn fleet_key(apps: &[IsolatedApp]) -> (crate::helpers::TestOrg, String) {
    let org = apps[0]
        .create_org(&format!("Fleet {}", Uuid::new_v4().simple()))
        .await;
    let (_, key) = apps[0].new_project_key(&org).await;
    for app in apps {
        assert_eq!(app.verify(&key).await.status, StatusCode::OK);
    }
    (org, key)
}

fn limit(settings: &mut Settings, per_second: f64, burst: u32) {
    settings.rate_limit.requests_per_second = per_second;
    settings.rate_limit.burst = NonZeroU32::new(burst).unwrap();
}

#[actix_web::test]
async fn four_instances_admit_one_keys_rate_once_for_the_whole_fleet() {
    let upstream = start_upstream();
    let apps = fleet(
        4,
        &upstream,
        &shared_redis_url(),
        OnRedisError::Local,
        |s| {
            limit(s, 50.0, 50);
            // What is measured is the shared count, not the fallback: on a loaded box (CI, a
            // shared 2-core machine) Redis answers can take longer than the default 50 ms,
            // and each late answer is decided locally (tested on its own below).
            s.rate_limit.redis_timeout = Duration::from_secs(2);
        },
    )
    .await;
    let (_, key) = fleet_key(&apps).await;

    let seen = flood(&apps, &key, 32, Duration::from_secs(6)).await;
    let expected = 50.0 + 50.0 * seen.elapsed.as_secs_f64();
    let ratio = seen.admitted as f64 / expected;
    let mut fallbacks = 0.0;
    for app in &apps {
        fallbacks += app.metric(FALLBACK_LOCAL).await;
    }
    eprintln!(
        "fleet accuracy: admitted {} for {expected:.1} expected, ratio {ratio:.3}, {fallbacks} local fallbacks",
        seen.admitted
    );
    assert!(seen.other.is_empty() && seen.unavailable == 0, "{seen:?}");
    assert!(
        (0.95..=1.05).contains(&ratio),
        "the fleet admitted {} for {expected:.0} expected (ratio {ratio:.3}, {fallbacks} local fallbacks): {seen:?}",
        seen.admitted
    );
    assert!(
        seen.limited > seen.admitted,
        "the flood went over: {seen:?}"
    );
    for app in &apps {
        // Shared counting held throughout (one slow answer on a loaded box may fall back
        // for its own request, but never turns into an outage).
        assert_eq!(app.metric(REDIS_UP).await, 1.0);
    }
    // Each instance admitted part of it: the limit is the fleet's, not any one's.
    assert_eq!(
        upstream.hits.load(std::sync::atomic::Ordering::SeqCst),
        seen.admitted
    );
}

#[actix_web::test]
async fn headers_count_down_across_instances_and_a_refusal_says_when_to_retry() {
    let upstream = start_upstream();
    let apps = fleet(
        2,
        &upstream,
        &shared_redis_url(),
        OnRedisError::Local,
        |s| limit(s, 0.2, 4),
    )
    .await;
    let (_, key) = fleet_key(&apps).await;
    for (turn, remaining) in ["3", "2", "1", "0"].into_iter().enumerate() {
        let ok = apps[turn % 2]
            .request(Method::GET, "/api/v1/events", Some(&key), None)
            .await;
        assert_eq!(ok.status, StatusCode::CREATED, "turn {turn}: {ok:?}");
        assert_eq!(ok.headers.get("ratelimit-limit").unwrap(), "4");
        assert_eq!(ok.headers.get("ratelimit-remaining").unwrap(), remaining);
        assert!(ok.headers.get("ratelimit-reset").is_some());
    }
    for app in &apps {
        let limited = app
            .request(Method::GET, "/api/v1/events", Some(&key), None)
            .await;
        assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        let retry_after: u64 = limited
            .headers
            .get("retry-after")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(limited.headers.get("ratelimit-remaining").unwrap(), "0");
    }
    assert_eq!(upstream.hits.load(std::sync::atomic::Ordering::SeqCst), 4);
    // A slow key makes one round trip per request: nothing sits leased unspent.
    assert!(apps[0].metric(SYNC_TRIPS).await >= 2.0);
}

#[actix_web::test]
async fn a_project_override_is_honoured_by_the_whole_fleet() {
    let upstream = start_upstream();
    let db = TestDatabase::create().await;
    // The project id is needed in the settings: made on a plain instance first.
    let setup = spawn_app_with(db.clone(), |_| {}).await;
    let org = setup.create_org("Override").await;
    let (_, key) = setup.new_project_key(&org).await;
    let (_, other_org_key) = {
        let other = setup.create_org("Default").await;
        setup.new_project_key(&other).await
    };
    let project = logstitch_gateway::domain::ProjectId::parse(&org.project_id).unwrap();
    let (redis_url, prefix) = (shared_redis_url(), prefix());
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(
            spawn_isolated_app_with(db.clone(), |settings| {
                fleet_member(
                    settings,
                    &upstream,
                    &redis_url,
                    &prefix,
                    OnRedisError::Local,
                );
                limit(settings, 0.1, 1);
                settings.rate_limit.overrides = vec![RateLimitOverride {
                    project_id: project,
                    requests_per_second: 0.1,
                    burst: NonZeroU32::new(6).unwrap(),
                }];
            })
            .await,
        );
    }
    let mut admitted = 0;
    for turn in 0..12 {
        let reply = apps[turn % 3]
            .request(Method::GET, "/api/v1/events", Some(&key), None)
            .await;
        assert_eq!(reply.headers.get("ratelimit-limit").unwrap(), "6");
        admitted += usize::from(reply.status.is_success());
    }
    assert_eq!(
        admitted, 6,
        "the override's burst, once for three instances"
    );
    // A key of another project keeps the default: one request for the fleet.
    let statuses: Vec<StatusCode> = join_all(
        apps.iter()
            .map(|app| app.request(Method::GET, "/api/v1/events", Some(&other_org_key), None)),
    )
    .await
    .into_iter()
    .map(|reply| reply.status)
    .collect();
    let admitted = statuses.iter().filter(|s| s.is_success()).count();
    assert_eq!(admitted, 1, "{statuses:?}");
}

/// Requests a fleet of two admits for a fresh key with burst 4 (and 2 tokens a second): 4 or
/// 5 when counting is shared, 8 or more when each instance counts alone.
async fn admitted_for_a_fresh_key(apps: &[IsolatedApp]) -> usize {
    let (_, key) = fleet_key(apps).await;
    let mut admitted = 0;
    for turn in 0..12 {
        let reply = apps[turn % apps.len()]
            .request(Method::GET, "/api/v1/events", Some(&key), None)
            .await;
        admitted += usize::from(reply.status.is_success());
    }
    admitted
}

fn shared(admitted: usize) -> bool {
    (4..=5).contains(&admitted)
}

async fn wait_for_shared_counting(apps: &[IsolatedApp]) {
    for app in apps {
        let up = eventually(Duration::from_secs(10), || async {
            app.metric(REDIS_UP).await == 1.0
        })
        .await;
        assert!(up, "Redis is back: the probe must resume shared counting");
    }
}

#[actix_web::test]
async fn redis_killed_mid_flood_falls_back_to_local_buckets_then_shares_again() {
    let upstream = start_upstream();
    let mut redis = PrivateRedis::start();
    let apps = fleet(2, &upstream, &redis.url(), OnRedisError::Local, |s| {
        limit(s, 2.0, 4);
        s.rate_limit.redis_timeout = Duration::from_millis(50);
    })
    .await;
    assert!(
        shared(admitted_for_a_fresh_key(&apps).await),
        "shared counting"
    );

    let (_, key) = fleet_key(&apps).await;
    let apps = Rc::new(apps);
    let flooding = {
        let (apps, key) = (apps.clone(), key.clone());
        actix_rt::spawn(async move { flood(&apps, &key, 8, Duration::from_secs(3)).await })
    };
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    redis.kill();
    let seen = flooding.await.unwrap();
    assert!(
        seen.other.is_empty() && seen.unavailable == 0,
        "no 5xx: {seen:?}"
    );
    assert!(
        seen.slowest < Duration::from_secs(2),
        "no request hangs: {seen:?}"
    );
    for app in apps.iter() {
        assert!(app.metric(FALLBACK_LOCAL).await > 0.0);
        assert!(app.metric(REDIS_ERRORS).await > 0.0);
        assert_eq!(app.metric(REDIS_UP).await, 0.0);
        assert_eq!(app.readyz_status().await, StatusCode::OK, "stays ready");
    }
    // Meanwhile each instance counts alone: a fresh key gets its burst from each.
    assert!(
        admitted_for_a_fresh_key(&apps).await >= 8,
        "per-instance buckets"
    );

    redis.restart();
    wait_for_shared_counting(&apps).await;
    assert!(
        shared(admitted_for_a_fresh_key(&apps).await),
        "shared again, without a restart"
    );
}

#[actix_web::test]
async fn under_deny_a_redis_outage_answers_503_until_it_returns() {
    let upstream = start_upstream();
    let mut redis = PrivateRedis::start();
    let apps = fleet(2, &upstream, &redis.url(), OnRedisError::Deny, |s| {
        limit(s, 2.0, 4)
    })
    .await;
    let (_, key) = fleet_key(&apps).await;
    let apps = Rc::new(apps);
    let flooding = {
        let (apps, key) = (apps.clone(), key.clone());
        actix_rt::spawn(async move { flood(&apps, &key, 8, Duration::from_secs(2)).await })
    };
    actix_rt::time::sleep(Duration::from_millis(700)).await;
    redis.kill();
    let seen = flooding.await.unwrap();
    assert!(seen.other.is_empty(), "{seen:?}");
    assert!(seen.unavailable > 0, "503 while Redis is down: {seen:?}");
    // The burst and what 0.7 s refilled, before the outage; nothing during it.
    assert!((4..=6).contains(&seen.admitted), "{seen:?}");
    assert!(
        seen.slowest < Duration::from_secs(2),
        "no request hangs: {seen:?}"
    );
    let refused = apps[1]
        .request(Method::GET, "/api/v1/events", Some(&key), None)
        .await;
    assert_error(
        &refused,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    assert!(refused.headers.get("retry-after").is_some());
    assert!(apps[1].metric(FALLBACK_DENY).await > 0.0);
    // Non-gateway routes don't depend on Redis.
    assert_eq!(apps[1].verify(&key).await.status, StatusCode::OK);
    assert_eq!(apps[1].readyz_status().await, StatusCode::OK);

    redis.restart();
    wait_for_shared_counting(&apps).await;
    // The restarted Redis is empty: the key has its burst again, once for the fleet.
    assert!(shared(admitted_for_a_fresh_key(&apps).await));
}

#[actix_web::test]
async fn a_blackholed_redis_makes_no_request_wait_past_the_timeout() {
    let upstream = start_upstream();
    let redis = PrivateRedis::start();
    let proxy = PgProxy::start(SocketAddr::from(([127, 0, 0, 1], redis.port))).await;
    let through = format!("redis://127.0.0.1:{}", proxy.port);
    for on_error in [OnRedisError::Local, OnRedisError::Deny] {
        proxy.restore();
        let apps = fleet(1, &upstream, &through, on_error, |s| {
            limit(s, 1000.0, 1000);
            s.rate_limit.redis_timeout = Duration::from_millis(100);
        })
        .await;
        let (_, key) = fleet_key(&apps).await;
        let before = apps[0]
            .request(Method::GET, "/api/v1/events", Some(&key), None)
            .await;
        assert_eq!(before.status, StatusCode::CREATED);
        proxy.blackhole();
        let seen = flood(&apps, &key, 4, Duration::from_millis(1500)).await;
        assert!(
            seen.slowest < Duration::from_secs(1),
            "{on_error:?}: {seen:?}"
        );
        match on_error {
            OnRedisError::Local => {
                assert!(seen.unavailable == 0 && seen.other.is_empty(), "{seen:?}");
                assert!(seen.admitted > 0);
            }
            OnRedisError::Deny => assert!(seen.unavailable > 0, "{seen:?}"),
        }
        proxy.restore();
        wait_for_shared_counting(&apps).await;
        let after = apps[0]
            .request(Method::GET, "/api/v1/events", Some(&key), None)
            .await;
        assert_eq!(after.status, StatusCode::CREATED, "{on_error:?}: {after:?}");
    }
}

#[actix_web::test]
async fn an_instance_started_while_redis_is_down_serves_and_joins_when_it_answers() {
    let upstream = start_upstream();
    let mut redis = PrivateRedis::start();
    redis.kill();
    let apps = fleet(2, &upstream, &redis.url(), OnRedisError::Local, |s| {
        limit(s, 2.0, 4)
    })
    .await;
    assert!(
        admitted_for_a_fresh_key(&apps).await >= 8,
        "local while down"
    );
    redis.restart();
    wait_for_shared_counting(&apps).await;
    assert!(
        shared(admitted_for_a_fresh_key(&apps).await),
        "shared once up"
    );
}

#[actix_web::test]
async fn the_binary_logs_an_outage_once_and_never_the_redis_password() {
    let upstream = start_upstream();
    let db = TestDatabase::create().await;
    // Nothing listens there: every call fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("logstitch-fleet-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("redis.toml");
    std::fs::write(
        &config,
        format!(
            "[rate_limit]\nstore = \"redis\"\nredis_url = \"redis://:hunter2-secret@127.0.0.1:{closed}\"\n\n\
             [[gateway.routes]]\nprefix = \"/api/v1/events\"\nupstream = \"{}\"\n",
            upstream.url
        ),
    )
    .unwrap();
    let admin_token = "fleet-admin-token";
    let mut served = crate::helpers::serve_binary(|command| {
        command
            .env("DATABASE_URL", &db.url)
            .env("LOGSTITCH_ADMIN_TOKEN", admin_token)
            .env("RUST_LOG", "debug")
            .arg("--config")
            .arg(&config);
    })
    .await;
    let client = crate::http_client::Client::new();
    let base = served.base.clone();
    let org: serde_json::Value = client
        .post(format!("{base}/admin/v1/organizations"))
        .insert_header(("Authorization", format!("Bearer {admin_token}")))
        .send_json(&serde_json::json!({"name": "Secrets"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key: serde_json::Value = client
        .post(format!("{base}/api/v1/keys"))
        .insert_header((
            "Authorization",
            format!("Bearer {}", org["master_key"].as_str().unwrap()),
        ))
        .send_json(
            &serde_json::json!({"project_id": org["project_id"], "type": "project", "name": "k"}),
        )
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for _ in 0..10 {
        let response = client
            .get(format!("{base}/api/v1/events"))
            .insert_header((
                "Authorization",
                format!("Bearer {}", key["key"].as_str().unwrap()),
            ))
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert!(status.is_success(), "local fallback: {status}");
    }
    served.sigterm();
    served.exit_status(Duration::from_secs(20)).await;
    let lines = served.all_lines();
    assert!(
        lines.iter().all(|line| !line.contains("hunter2")),
        "the Redis password was printed: {lines:#?}"
    );
    let outages = lines
        .iter()
        .filter(|line| line.contains("Redis does not answer"))
        .count();
    assert_eq!(outages, 1, "logged once per outage: {lines:#?}");
    let _ = std::fs::remove_dir_all(dir);
}
