//! Reports that meet trouble: the database going away mid-batch (what committed stays, the
//! answer is a 503 a retry finishes), and a listener that never acknowledges (the answer
//! waits for it once, not once per revoked key).

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use logstitch_gateway::domain::KeyHash;
use secrecy::SecretString;

use super::partner::{KeysDocument, PartnerKey};
use super::{events_with_action, labels, report_of, scanning, send_report, QUICK};
use crate::helpers::{assert_error, spawn_app_with, TestDatabase};
use crate::master_key::silent_listener;
use crate::pg_proxy::PgProxy;

/// Whether the key whose plaintext is `key` is revoked, read from the database.
async fn revoked(db: &TestDatabase, key: &str) -> bool {
    db.client()
        .await
        .query_one(
            "SELECT revoked_at IS NOT NULL FROM api_keys WHERE key_hash = $1",
            &[&KeyHash::of(key).as_bytes().as_slice()],
        )
        .await
        .unwrap()
        .get(0)
}

/// `key.revoked` events of the key whose plaintext is `key`.
async fn revocations_of(db: &TestDatabase, key: &str) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM audit_events e JOIN api_keys k ON k.id = e.target_id
             WHERE e.action = 'key.revoked' AND k.key_hash = $1",
            &[&KeyHash::of(key).as_bytes().as_slice()],
        )
        .await
        .unwrap()
        .get(0)
}

#[actix_web::test]
async fn the_database_going_away_mid_batch_keeps_what_committed_and_a_retry_finishes_the_rest() {
    let partner = PartnerKey::new("github-key-1");
    let document = KeysDocument::serving(&[&partner]).await;
    let db = TestDatabase::create().await;
    let proxy = PgProxy::in_front_of(&db.url).await;
    let url = proxy.url_through(&db.url);
    let app = spawn_app_with(db.clone(), |settings| {
        scanning(settings, &document);
        settings.database.url = SecretString::from(url);
        settings.database.pool_timeout = Duration::from_millis(500);
        // The outage, not a statement timeout, is what ends the second revocation.
        settings.database.statement_timeout = Duration::from_secs(30);
    })
    .await;
    let org = app.create_org("Leaky").await;
    let (_, first) = app.new_project_key(&org).await;
    let (_, second) = app.new_project_key(&org).await;
    let (_, third) = app.new_project_key(&org).await;
    let body = report_of(&[&first, &second, &third]);

    // The second key's row is held, so the report stops there after the first committed;
    // the database then goes away under it.
    let locker = db.client().await;
    locker.batch_execute("BEGIN").await.unwrap();
    locker
        .execute(
            "SELECT 1 FROM api_keys WHERE key_hash = $1 FOR UPDATE",
            &[&KeyHash::of(&second).as_bytes().as_slice()],
        )
        .await
        .unwrap();
    let watcher = db.client().await;
    let (reply, ()) = futures_util::join!(send_report(&app, &partner, &body), async {
        let deadline = Instant::now() + QUICK;
        loop {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if waiting > 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the report never reached the held key"
            );
            actix_rt::time::sleep(Duration::from_millis(20)).await;
        }
        proxy.cut();
    });
    assert_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    assert!(revoked(&db, &first).await, "the first revocation committed");
    assert!(!revoked(&db, &second).await && !revoked(&db, &third).await);
    assert_eq!(events_with_action(&db, "key.revoked").await, 1);

    // The database back, the partner's retry of the same report finishes the rest.
    proxy.restore();
    let deadline = Instant::now() + QUICK;
    let retried = loop {
        let reply = send_report(&app, &partner, &body).await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
            break reply;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(labels(&retried), ["true_positive"; 3]);
    for key in [&first, &second, &third] {
        assert!(revoked(&db, key).await);
        assert_eq!(revocations_of(&db, key).await, 1, "one event per key");
        assert_error(
            &app.verify(key).await,
            StatusCode::UNAUTHORIZED,
            "key_revoked",
        );
    }
    assert_eq!(events_with_action(&db, "key.revoked").await, 3);
}

#[actix_web::test]
async fn a_report_of_many_keys_waits_for_a_silent_listener_once_not_once_per_key() {
    const ACK_TIMEOUT: Duration = Duration::from_millis(1500);
    let partner = PartnerKey::new("github-key-1");
    let document = KeysDocument::serving(&[&partner]).await;
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db.clone(), |settings| {
        scanning(settings, &document);
        settings.listener.ack_timeout = ACK_TIMEOUT;
    })
    .await;
    let org = app.create_org("Leaky").await;
    let mut keys = Vec::new();
    for _ in 0..4 {
        keys.push(app.new_project_key(&org).await.1);
    }
    let tokens: Vec<&str> = keys.iter().map(String::as_str).collect();
    let body = report_of(&tokens);
    let _silent = silent_listener(&db, "silent1").await;
    let started = Instant::now();
    let reply = send_report(&app, &partner, &body).await;
    let took = started.elapsed();
    assert_eq!(labels(&reply), ["true_positive"; 4]);
    assert!(
        took >= ACK_TIMEOUT,
        "answered after {took:?}, before the ack timeout"
    );
    assert!(
        took < ACK_TIMEOUT * 3,
        "answered after {took:?}: one ack timeout per key, not one for the report"
    );
    for key in &keys {
        assert_error(
            &app.verify(key).await,
            StatusCode::UNAUTHORIZED,
            "key_revoked",
        );
    }
    assert_eq!(events_with_action(&db, "key.revoked").await, 4);
}
