//! Two real instances on one database: revocation reaches the other instance, a lost LISTEN
//! connection never lets a revoked key through, and the key limit holds across instances.
//! Each instance runs on its own thread and actix system (`spawn_isolated_*`), as separate
//! processes would: its invalidation listener never waits behind the test's own clients.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use futures_util::future::join_all;

use crate::helpers::{
    assert_error, eventually, spawn_isolated_app_with, spawn_isolated_pair, TestApp, TestDatabase,
};

const LOOKUPS: &str = "logstitch_auth_db_lookups_total";
const LISTENER_UP: &str = "logstitch_invalidation_listener_up";
const LISTENER_RECONNECTS: &str = "logstitch_invalidation_listener_reconnects_total";
const ACKS_RECEIVED: &str = "logstitch_revocation_acks_received_total";

/// A's answer must be a plain 200 `{revoked: true}`.
async fn revoke_through(app: &TestApp, token: &str, key_id: &str) {
    let revoked = app.revoke_key(token, key_id).await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    assert_eq!(revoked.body["revoked"], true, "{revoked:?}");
}

/// `make bench` runs the next test in release with `LOGSTITCH_BENCH_REVOKES` rounds and reads
/// the timings it writes to `LOGSTITCH_BENCH_REVOKE_REPORT`: the revoke-to-refused
/// measurement lives here only. The test itself asserts no time, only the refusal.
fn bench_rounds() -> usize {
    std::env::var("LOGSTITCH_BENCH_REVOKES")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(30)
}

#[actix_web::test]
async fn a_revoke_through_a_is_refused_by_b_on_the_very_next_request() {
    let (a, b) = spawn_isolated_pair(|_| {}).await;
    let org = a.create_org("Acme").await;
    // Many rounds: a notice that only sometimes arrives in time fails some of them.
    let rounds = bench_rounds();
    let mut accepted = Vec::new();
    // Microseconds: DELETE sent → answered, and DELETE answered → B's answer.
    let (mut delete_us, mut delays_us) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (key_id, key) = a.new_project_key(&org).await;
        // B has the key cached as valid (the second use is a hit).
        for _ in 0..2 {
            let before = b.verify(&key).await;
            assert_eq!(before.status, StatusCode::OK, "round {round}: {before:?}");
        }

        let sent = Instant::now();
        revoke_through(&a, &org.master_key, &key_id).await;
        let answered = Instant::now();
        let after = b.verify(&key).await;
        delays_us.push(answered.elapsed().as_micros() as u64);
        delete_us.push((answered - sent).as_micros() as u64);
        if after.status.is_success() {
            accepted.push(round);
        } else {
            assert_error(&after, StatusCode::UNAUTHORIZED, "key_revoked");
        }
    }
    if let Some(report) = std::env::var_os("LOGSTITCH_BENCH_REVOKE_REPORT") {
        let timings = serde_json::json!({"delays_us": delays_us, "delete_us": delete_us});
        std::fs::write(report, timings.to_string()).expect("write the bench report");
    }
    assert!(
        accepted.is_empty(),
        "B accepted the just-revoked key on the next request in {} of {rounds} rounds: {accepted:?}",
        accepted.len()
    );
}

#[actix_web::test]
async fn with_its_listener_killed_b_refuses_a_revoked_key_within_2s_and_recovers() {
    let (a, b) = spawn_isolated_pair(|_| {}).await;
    let org = a.create_org("Acme").await;
    let (key_id, key) = a.new_project_key(&org).await;
    assert_eq!(b.verify(&key).await.status, StatusCode::OK);
    assert_eq!(b.metric(LISTENER_UP).await, 1.0);

    assert_eq!(b.kill_listener_connection().await, 1);
    revoke_through(&a, &org.master_key, &key_id).await;
    let revoked_at = Instant::now();

    // Poll B until the refusal; a 200 seen 2 s after the revoke fails the test.
    loop {
        let reply = b.verify(&key).await;
        let elapsed = revoked_at.elapsed();
        if reply.status == StatusCode::OK {
            assert!(
                elapsed < Duration::from_secs(2),
                "B still accepts the revoked key {elapsed:?} after the revoke"
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert_error(&reply, StatusCode::UNAUTHORIZED, "key_revoked");
        break;
    }

    // B reconnects by itself: ready again and the gauge says so.
    let recovered = eventually(Duration::from_secs(10), || async {
        b.readyz_status().await == StatusCode::OK && b.metric(LISTENER_UP).await == 1.0
    })
    .await;
    assert!(recovered, "B's listener never came back");
    assert_error(
        &b.verify(&key).await,
        StatusCode::UNAUTHORIZED,
        "key_revoked",
    );
    // And, back on LISTEN, B hears the next revocation again.
    let (next_id, next_key) = a.new_project_key(&org).await;
    assert_eq!(b.verify(&next_key).await.status, StatusCode::OK);
    revoke_through(&a, &org.master_key, &next_id).await;
    let heard = eventually(Duration::from_secs(2), || async {
        b.verify(&next_key).await.error_code() == "key_revoked"
    })
    .await;
    assert!(heard, "after reconnecting, B missed a revocation");
}

#[actix_web::test]
async fn a_revoke_while_b_reconnects_is_never_served_from_b_cache() {
    let db = TestDatabase::create().await;
    let a = spawn_isolated_app_with(db.clone(), |_| {}).await;
    let b = spawn_isolated_app_with(db, |settings| {
        settings.listener.reconnect_min = std::time::Duration::from_millis(1500);
        settings.listener.reconnect_max = std::time::Duration::from_millis(3000);
    })
    .await;
    let org = a.create_org("Acme").await;
    let (key_id, key) = a.new_project_key(&org).await;
    // Warm B's cache.
    assert_eq!(b.verify(&key).await.status, StatusCode::OK);
    assert_eq!(b.verify(&key).await.status, StatusCode::OK);

    assert_eq!(b.kill_listener_connection().await, 1);
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    // The listener is down and waits 1.5 s before reconnecting.
    let readyz = b
        .request(actix_web::http::Method::GET, "/readyz", None, None)
        .await;
    assert_error(
        &readyz,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    assert_eq!(b.metric(LISTENER_UP).await, 0.0);

    // The notice of this revoke is lost: B has no LISTEN connection.
    revoke_through(&a, &org.master_key, &key_id).await;
    assert_error(
        &b.verify(&key).await,
        StatusCode::UNAUTHORIZED,
        "key_revoked",
    );

    let back = eventually(Duration::from_secs(10), || async {
        b.readyz_status().await == StatusCode::OK
    })
    .await;
    assert!(back, "B's listener never came back");
    // Trusting its cache again, B must not have kept the old "valid" entry.
    for _ in 0..3 {
        assert_error(
            &b.verify(&key).await,
            StatusCode::UNAUTHORIZED,
            "key_revoked",
        );
    }
}

#[actix_web::test]
async fn concurrent_first_uses_on_the_other_instance_make_one_lookup() {
    let (a, b) = spawn_isolated_pair(|_| {}).await;
    let org = a.create_org("Acme").await;
    // A listener reconnect on B (a heartbeat missed on a loaded box) flushes its cache and,
    // while down, sends every request to Postgres: a window with one is no measurement, so
    // it is taken again with a new key. Any other window must make exactly one lookup.
    for _attempt in 0..3 {
        let (key_id, key) = a.new_project_key(&org).await;
        let reconnects = b.metric(LISTENER_RECONNECTS).await;
        let before = b.metric(LOOKUPS).await;
        let replies = join_all((0..50).map(|_| b.verify(&key))).await;
        for reply in &replies {
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            assert_eq!(reply.body["key_id"], key_id.as_str());
        }
        let after = b.metric(LOOKUPS).await;
        if b.metric(LISTENER_RECONNECTS).await != reconnects {
            continue;
        }
        assert_eq!(
            after - before,
            1.0,
            "50 concurrent first uses on B made {} lookups",
            after - before
        );
        // And later uses are hits.
        for _ in 0..5 {
            assert_eq!(b.verify(&key).await.status, StatusCode::OK);
        }
        assert_eq!(b.metric(LOOKUPS).await, after);
        return;
    }
    panic!("B's listener reconnected during each of 3 measurement windows");
}

#[actix_web::test]
async fn the_key_limit_holds_for_concurrent_creates_on_two_instances() {
    const LIMIT: usize = 10;
    let (a, b) = spawn_isolated_pair(|settings| {
        settings.keys.max_active_per_org = std::num::NonZeroU32::new(LIMIT as u32).unwrap()
    })
    .await;
    let org = a.create_org("Acme").await;
    // The master key counts: it and LIMIT - 2 project keys leave room for exactly one more.
    for i in 0..LIMIT - 2 {
        let created = a
            .create_key(&org.master_key, &org.project_id, &format!("k{i}"))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    }

    let creates = (0..50).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let name = format!("race {i}");
        let (token, project) = (org.master_key.clone(), org.project_id.clone());
        async move { app.create_key(&token, &project, &name).await }
    });
    let replies = join_all(creates).await;
    let created = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .count();
    assert_eq!(created, 1, "expected exactly one new key");
    for reply in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_error(reply, StatusCode::CONFLICT, "conflict");
    }

    let listed = b.list_keys(&org.master_key).await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    let active = listed.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["revokedAt"].is_null())
        .count();
    assert_eq!(active, LIMIT);
    // The database agrees with the API.
    let client = a.db.client().await;
    let stored: i64 = client
        .query_one(
            "SELECT count(*) FROM api_keys WHERE revoked_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, LIMIT as i64);
}

/// One request of a hammering client: when it began, where, and what came back.
struct Sample {
    began: Instant,
    instance: &'static str,
    status: StatusCode,
}

#[actix_web::test]
async fn no_2xx_begins_after_the_revoke_returned() {
    let (a, b) = spawn_isolated_pair(|settings| {
        // A second of refusals from 16 clients is a failed-auth flood from one address;
        // lift the throttle so every refusal is the revocation's own 401.
        settings.rate_limit.failed_auth_per_second = 1e6;
        settings.rate_limit.failed_auth_burst = std::num::NonZeroU32::new(1_000_000).unwrap();
    })
    .await;
    let org = a.create_org("Acme").await;
    let (key_id, key) = a.new_project_key(&org).await;

    // Set when the DELETE's response arrived; clients stop 1 s after.
    let returned: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
    let client = |instance: &'static str, app: &TestApp| {
        let (returned, key) = (returned.clone(), key.clone());
        let (http, url) = (
            crate::http_client::Client::builder()
                .timeout(Duration::from_secs(30))
                .finish(),
            format!("{}/api/v1/auth/verify", app.address),
        );
        async move {
            let mut samples = Vec::new();
            loop {
                if returned
                    .get()
                    .is_some_and(|at| at.elapsed() > Duration::from_secs(1))
                {
                    return samples;
                }
                let began = Instant::now();
                let mut response = http
                    .get(&url)
                    .insert_header(("Authorization", format!("Bearer {key}")))
                    .send()
                    .await
                    .expect("verify sent");
                let status = response.status();
                let _ = response.body().await;
                samples.push(Sample {
                    began,
                    instance,
                    status,
                });
            }
        }
    };
    let clients = (0..16).map(|i| {
        if i % 2 == 0 {
            client("A", &a)
        } else {
            client("B", &b)
        }
    });
    let revoker = async {
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        let response = a
            .client
            .delete(format!("{}/api/v1/keys/{key_id}", a.address))
            .insert_header(("Authorization", format!("Bearer {}", org.master_key)))
            .send()
            .await
            .expect("revoke sent");
        returned.set(Some(Instant::now()));
        assert_eq!(response.status(), StatusCode::OK);
    };
    let (samples, ()) = futures_util::join!(join_all(clients), revoker);
    let samples: Vec<Sample> = samples.into_iter().flatten().collect();
    let returned = returned.get().unwrap();

    for instance in ["A", "B"] {
        let ok_before = samples
            .iter()
            .filter(|s| s.instance == instance && s.status.is_success() && s.began < returned)
            .count();
        assert!(ok_before > 0, "{instance} never accepted the key before");
        let refused_after = samples
            .iter()
            .filter(|s| s.instance == instance && s.began > returned)
            .count();
        assert!(
            refused_after > 0,
            "{instance} got no requests after the revoke"
        );
    }
    let late: Vec<_> = samples
        .iter()
        .filter(|s| s.began > returned && s.status.is_success())
        .map(|s| (s.instance, s.began.duration_since(returned)))
        .collect();
    assert!(
        late.is_empty(),
        "{} answers 2xx to requests that began after the DELETE returned: {late:?}",
        late.len()
    );
    let unexpected: Vec<_> = samples
        .iter()
        .filter(|s| !s.status.is_success() && s.status != StatusCode::UNAUTHORIZED)
        .map(|s| s.status)
        .collect();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:?}");
}

#[actix_web::test]
async fn invalidation_metrics_count_local_on_a_and_notify_on_b() {
    let (a, b) = spawn_isolated_pair(|_| {}).await;
    let org = a.create_org("Acme").await;
    let (key_id, key) = a.new_project_key(&org).await;
    assert_eq!(b.verify(&key).await.status, StatusCode::OK);

    let local = r#"logstitch_cache_invalidations_total{source="local"}"#;
    let notify = r#"logstitch_cache_invalidations_total{source="notify"}"#;
    let (a_local, b_notify) = (a.metric(local).await, b.metric(notify).await);
    let b_local = b.metric(local).await;

    revoke_through(&a, &org.master_key, &key_id).await;
    assert_eq!(a.metric(local).await, a_local + 1.0);
    let heard = eventually(Duration::from_secs(2), || async {
        b.metric(notify).await == b_notify + 1.0
    })
    .await;
    assert!(heard, "B's notify invalidations did not go up by one");
    assert_eq!(b.metric(local).await, b_local, "B revoked nothing itself");
}

/// Acks are addressed: of three instances, only the one that revoked hears acknowledgements
/// (one from each listener, its own included); the others hear the notice and none of the
/// acks — N acks per revoke, not N².
#[actix_web::test]
async fn only_the_revoking_instance_hears_the_acknowledgements() {
    let db = TestDatabase::create().await;
    let mut fleet = Vec::new();
    for _ in 0..3 {
        fleet.push(spawn_isolated_app_with(db.clone(), |_| {}).await);
    }
    let org = fleet[0].create_org("Acme").await;
    for revoker in 0..fleet.len() {
        let (key_id, key) = fleet[0].new_project_key(&org).await;
        for app in &fleet {
            assert_eq!(app.verify(&key).await.status, StatusCode::OK);
        }
        let before = join_all(fleet.iter().map(|app| app.metric(ACKS_RECEIVED))).await;
        revoke_through(&fleet[revoker], &org.master_key, &key_id).await;
        for app in &fleet {
            assert_error(
                &app.verify(&key).await,
                StatusCode::UNAUTHORIZED,
                "key_revoked",
            );
        }
        let after = join_all(fleet.iter().map(|app| app.metric(ACKS_RECEIVED))).await;
        let heard: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let mut expected = vec![0.0; fleet.len()];
        expected[revoker] = fleet.len() as f64;
        assert_eq!(
            heard, expected,
            "acks heard per instance, instance {revoker} revoking"
        );
    }
}
