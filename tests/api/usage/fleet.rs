//! Usage across instances and restarts: two instances counting one key, one stopped with
//! SIGTERM under load, nothing lost; a flush retried after a failure, or replayed after its
//! commit answer was lost, is applied once.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use actix_web::http::StatusCode;
use chrono::{DurationRound, Utc};
use secrecy::SecretString;
use serde_json::Value;

use super::{await_usage, expected, usage_totals};
use crate::helpers::{serve_binary, spawn_app_with, test_settings, ServedBinary, TestDatabase};
use logstitch_gateway::domain::{KeyId, UsageCounts, UsageOutcome};
use logstitch_gateway::metrics::Metrics;
use logstitch_gateway::store::{Store, UsageDelta};
use logstitch_gateway::usage::UsageRecorder;

/// The real binary on `db`; only its shutdown flush can write usage.
async fn binary_on(db: &TestDatabase) -> ServedBinary {
    serve_binary(|command| {
        command
            .env("DATABASE_URL", &db.url)
            .env("LOGSTITCH__USAGE__FLUSH_INTERVAL_MS", "600000")
            .env("LOGSTITCH__SERVER__DRAIN_DELAY_MS", "300");
    })
    .await
}

#[actix_web::test]
async fn two_instances_count_one_key_and_a_sigterm_loses_nothing() {
    let db = TestDatabase::create().await;
    let b = spawn_app_with(db.clone(), |settings| {
        settings.usage.flush_interval = Duration::from_millis(100);
    })
    .await;
    let org = b.create_org("Fleet usage").await;
    // One verify on b (valid), as new_project_key checks the key.
    let (key_id, key) = b.new_project_key(&org).await;
    let mut a = binary_on(&db).await;

    // A loader on a until a stops answering; b gets requests meanwhile.
    let answered = Rc::new(Cell::new(0u64));
    let loader = {
        let (base, key, answered) = (a.base.clone(), key.clone(), answered.clone());
        actix_rt::spawn(async move {
            let client = crate::http_client::Client::new();
            loop {
                let sent = client
                    .get(format!("{base}/api/v1/auth/verify"))
                    .insert_header(("Authorization", format!("Bearer {key}")))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == StatusCode::OK => {
                        answered.set(answered.get() + 1)
                    }
                    Ok(response) => panic!("verify on a answered {}", response.status()),
                    Err(_) => break,
                }
            }
        })
    };
    let mut on_b = 0;
    for _ in 0..10 {
        assert_eq!(b.verify(&key).await.status, StatusCode::OK);
        on_b += 1;
    }
    a.sigterm();
    for _ in 0..10 {
        assert_eq!(b.verify(&key).await.status, StatusCode::OK);
        on_b += 1;
    }
    assert!(a.exit_status(Duration::from_secs(30)).await.success());
    loader.await.unwrap();
    let on_a = answered.get();
    assert!(on_a > 0, "the loader reached a");

    let want = expected(&[("valid", 1 + on_b + on_a)]);
    let got = await_usage(&b, &org.master_key, &key_id, &want).await;
    assert_eq!(got, want, "{on_a} on a, {on_b} on b");

    // Usage survives a restart: a new instance on the database reads the same.
    drop(b);
    let restarted = binary_on(&db).await;
    let client = crate::http_client::Client::new();
    let reply: Value = client
        .get(format!("{}/api/v1/keys/{key_id}/usage", restarted.base))
        .insert_header(("Authorization", format!("Bearer {}", org.master_key)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(super::sum_buckets(&reply), want);
}

fn delta(key: KeyId, valid: u64) -> UsageDelta {
    let mut counts = UsageCounts::default();
    for _ in 0..valid {
        counts.add(UsageOutcome::Valid);
    }
    UsageDelta {
        key,
        hour: Utc::now()
            .duration_trunc(chrono::Duration::hours(1))
            .unwrap(),
        counts,
    }
}

#[actix_web::test]
async fn a_flush_is_applied_once_however_often_it_is_sent() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db.clone(), |_| {}).await;
    let org = app.create_org("Idempotent").await;
    let (key_id, _) = super::new_key(&app, &org, &org.project_id, serde_json::json!({})).await;
    let key = KeyId::parse(&key_id).unwrap();
    let store = Store::connect(&test_settings(&db).database).unwrap();

    // A flush whose commit answer was lost is sent again under its number: applied once.
    let instance = uuid::Uuid::new_v4();
    assert!(store
        .apply_usage(instance, 1, &[delta(key, 5)])
        .await
        .unwrap());
    assert!(!store
        .apply_usage(instance, 1, &[delta(key, 5)])
        .await
        .unwrap());
    // The next number, or another instance's same number, adds.
    assert!(store
        .apply_usage(instance, 2, &[delta(key, 2)])
        .await
        .unwrap());
    let other = uuid::Uuid::new_v4();
    assert!(store.apply_usage(other, 1, &[delta(key, 1)]).await.unwrap());
    let want = expected(&[("valid", 8)]);
    assert_eq!(usage_totals(&app, &org.master_key, &key_id).await, want);

    // A recorder whose flush fails keeps the batch and its number, and the retry writes it
    // once, with what was counted in between.
    let mut unreachable = test_settings(&db).database;
    unreachable.url = SecretString::from("postgres://postgres@127.0.0.1:9/none".to_owned());
    unreachable.pool_timeout = Duration::from_millis(200);
    let down = Store::connect(&unreachable).unwrap();
    let metrics = Metrics::new();
    let recorder = UsageRecorder::new();
    for _ in 0..4 {
        recorder.count(key, UsageOutcome::Valid);
    }
    assert!(recorder.flush(&down, &metrics).await.is_err());
    assert_eq!(metrics.usage.flush_errors.get(), 1);
    recorder.count(key, UsageOutcome::RateLimited);
    recorder.flush(&store, &metrics).await.unwrap();
    recorder.flush(&store, &metrics).await.unwrap();
    let want = expected(&[("valid", 12), ("rate_limited", 1)]);
    assert_eq!(usage_totals(&app, &org.master_key, &key_id).await, want);
}
