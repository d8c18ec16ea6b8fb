//! Deliveries to a real receiver on loopback: every key event type, signed and verified, in
//! commit order; retries after a 5xx and after a timeout, the schedule running out and a
//! manual retry; nothing for a change that rolled back; a target refused at delivery; an
//! endpoint's undelivered deliveries dropped with it.

use std::collections::HashSet;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use chrono::Utc;
use serde_json::{json, Value};

use super::receiver::{Answer, Receiver};
use super::{
    audit_events, audit_trail, delivery_items, new_endpoint, queue_test, receivable,
    wait_for_status, webhook_app,
};
use crate::helpers::{assert_error, assert_exact_fields, eventually, spawn_app_with, TestDatabase};

const SETTLE: Duration = Duration::from_secs(10);

/// A project key of `org` expiring in a day (inside the default 7-day warning window).
async fn key_expiring_tomorrow(
    app: &crate::helpers::TestApp,
    org: &crate::helpers::TestOrg,
) -> String {
    let expires = (Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let created = app
        .create_key_with(
            &org.master_key,
            &json!({"project_id": org.project_id, "type": "project", "name": "CI",
                    "expires_at": expires}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let key = created.body["key"].as_str().unwrap().to_owned();
    app.verify(&key).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[actix_web::test]
async fn every_key_event_is_delivered_signed_in_commit_order_with_its_audit_event_as_data() {
    let app = webhook_app().await;
    let org = app.create_org("Acme").await;
    let everything = Receiver::start().await;
    let (all_id, all_secret) = new_endpoint(&app, &org, &everything.url(), json!(["*"])).await;
    let creations = Receiver::start().await;
    let (created_id, created_secret) =
        new_endpoint(&app, &org, &creations.url(), json!(["key.created"])).await;

    // key.created, then key.expiring (inside the window from the start).
    let old = key_expiring_tomorrow(&app, &org).await;
    let warnings = |count: usize| {
        let (app, org) = (&app, &org);
        async move {
            eventually(SETTLE, || async {
                audit_events(app, org, "key.expiring").await.len() == count
            })
            .await
        }
    };
    assert!(warnings(1).await, "the key expiring tomorrow warned");
    // key.rolled; the old key (now expiring in 10 minutes) has warned already, the new key
    // (the old expiry, inside the window) warns too — before it is revoked (a revoked key
    // never warns).
    let rolled = app
        .request(
            Method::POST,
            &format!("/api/v1/keys/{old}/roll"),
            Some(&org.master_key),
            Some(&json!({"overlap_seconds": 600})),
        )
        .await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{rolled:?}");
    let new = app.verify(rolled.body["key"].as_str().unwrap()).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(warnings(2).await, "the replacement warned");
    let renamed = app
        .patch_key(&org.master_key, &new, &json!({"name": "renamed"}))
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{renamed:?}");
    assert_eq!(
        app.revoke_key(&org.master_key, &new).await.status,
        StatusCode::OK
    );
    let tested = queue_test(&app, &org, &created_id).await;
    assert_eq!(tested.status, StatusCode::ACCEPTED, "{tested:?}");
    assert_exact_fields(&tested.body, &["request_id"]);

    assert!(
        everything.wait_for(6, SETTLE).await,
        "{:#?}",
        everything.received()
    );
    assert!(
        creations.wait_for(2, SETTLE).await,
        "{:#?}",
        creations.received()
    );
    wait_for_status(&app, &org, &all_id, "delivered", SETTLE).await;
    wait_for_status(&app, &org, &created_id, "delivered", SETTLE).await;
    actix_rt::time::sleep(Duration::from_millis(300)).await;

    // Exactly the key events, once each, in the order they committed; endpoint changes are
    // audited, never sent.
    let trail = audit_trail(&app, &org).await;
    let key_events: Vec<&Value> = trail
        .iter()
        .filter(|event| event["action"].as_str().unwrap().starts_with("key."))
        .collect();
    let got = everything.received();
    assert_eq!(got.len(), key_events.len(), "{got:#?}");
    let mut ids = HashSet::new();
    for (request, event) in got.iter().zip(&key_events) {
        request.verify(&all_secret);
        assert_eq!(request.header("content-type"), "application/json");
        assert!(ids.insert(request.header("webhook-id").to_owned()));
        assert_eq!(
            request.json(),
            json!({"type": event["action"], "timestamp": event["occurredAt"], "data": event})
        );
    }
    let actions: Vec<&str> = key_events
        .iter()
        .map(|event| event["action"].as_str().unwrap())
        .collect();
    for action in [
        "key.created",
        "key.expiring",
        "key.rolled",
        "key.updated",
        "key.revoked",
    ] {
        assert!(
            actions.contains(&action),
            "{action} not delivered: {actions:?}"
        );
    }
    let warned: Vec<&&Value> = key_events
        .iter()
        .filter(|event| event["action"] == "key.expiring")
        .collect();
    assert_eq!(
        warned.len(),
        2,
        "the old key and its replacement: {warned:#?}"
    );
    for event in warned {
        assert_eq!(event["actor"], json!({"type": "system"}));
        assert_eq!(event["target"]["type"], "key");
        assert_eq!(event["requestId"], Value::Null);
    }

    // The key.created subscriber got that event and its test, nothing else.
    let got = creations.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    got.iter()
        .for_each(|request| request.verify(&created_secret));
    let created = audit_events(&app, &org, "key.created").await.remove(0);
    assert_eq!(got[0].json()["data"], created);
    let test = got[1].json();
    assert_eq!(test["type"], "webhook.test");
    assert_eq!(test["data"], json!({"endpointId": created_id}));
    let queued = crate::helpers::api_timestamp(&test["timestamp"]);
    assert!((Utc::now() - queued).num_seconds().abs() < 30, "{test}");
    let items = delivery_items(&app, &org, &created_id).await;
    assert_eq!(items[0]["type"], "webhook.test");
    assert_eq!(items[0]["eventId"], Value::Null);
    assert_eq!(items[0]["id"], got[1].header("webhook-id"));
    assert_eq!(items[1]["eventId"], created["id"]);
}

#[actix_web::test]
async fn the_first_attempt_starts_within_a_second_whatever_the_poll_interval() {
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        receivable(settings);
        settings.webhooks.poll_interval = Duration::from_secs(60);
    })
    .await;
    let org = app.create_org("Acme").await;
    let receiver = Receiver::start().await;
    let (_, secret) = new_endpoint(&app, &org, &receiver.url(), json!(["key.revoked"])).await;
    for round in 1..=3 {
        let (key_id, _) = app.new_project_key(&org).await;
        let revoke_started = std::time::Instant::now();
        assert_eq!(
            app.revoke_key(&org.master_key, &key_id).await.status,
            StatusCode::OK
        );
        assert!(receiver.wait_for(round, Duration::from_secs(5)).await);
        let got = receiver.received().pop().unwrap();
        got.verify(&secret);
        let waited = got.at.duration_since(revoke_started);
        assert!(
            waited < Duration::from_secs(1),
            "first attempt {waited:?} after the revoke"
        );
    }
}

#[actix_web::test]
async fn a_receiver_answering_500_then_200_gets_it_twice_with_one_id_and_it_is_delivered() {
    let app = webhook_app().await;
    let org = app.create_org("Acme").await;
    let receiver = Receiver::start().await;
    receiver.script(&[Answer::Status(500)]);
    let (endpoint, secret) =
        new_endpoint(&app, &org, &receiver.url(), json!(["key.created"])).await;
    app.new_project_key(&org).await;

    let items = wait_for_status(&app, &org, &endpoint, "delivered", SETTLE).await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    got.iter().for_each(|request| request.verify(&secret));
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    assert_eq!(got[0].body, got[1].body, "the same body at every attempt");
    assert!(got[1].at.duration_since(got[0].at) >= Duration::from_millis(200));
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["attempts"], 2);
    assert_eq!(items[0]["lastStatus"], 200);
    assert_eq!(items[0]["nextAttemptAt"], Value::Null);
    crate::helpers::api_timestamp(&items[0]["lastAttemptAt"]);
    let outcome = |name: &str| format!("logstitch_webhook_deliveries_total{{outcome=\"{name}\"}}");
    assert_eq!(app.metric(&outcome("failed_attempt")).await, 1.0);
    assert_eq!(app.metric(&outcome("delivered")).await, 1.0);
    assert_eq!(
        app.metric("logstitch_webhook_attempt_duration_seconds_count")
            .await,
        2.0
    );
}

#[actix_web::test]
async fn a_receiver_too_slow_for_the_timeout_is_retried() {
    let app = webhook_app().await;
    let org = app.create_org("Acme").await;
    let receiver = Receiver::start().await;
    // A 200 that comes after the 500 ms timeout is a failed attempt.
    receiver.script(&[Answer::Slow(200, Duration::from_secs(2))]);
    let (endpoint, secret) =
        new_endpoint(&app, &org, &receiver.url(), json!(["key.created"])).await;
    app.new_project_key(&org).await;

    let items = wait_for_status(&app, &org, &endpoint, "delivered", SETTLE).await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "{got:#?}");
    got.iter().for_each(|request| request.verify(&secret));
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    let gap = got[1].at.duration_since(got[0].at);
    assert!(
        gap >= Duration::from_millis(700) && gap < Duration::from_secs(2),
        "{gap:?}"
    );
    assert_eq!(items[0]["attempts"], 2);
    assert_eq!(items[0]["lastStatus"], 200);
}

#[actix_web::test]
async fn after_the_schedule_a_delivery_fails_and_a_retry_by_hand_delivers_it() {
    let app = webhook_app().await;
    let org = app.create_org("Acme").await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Hang);
    let (endpoint, secret) =
        new_endpoint(&app, &org, &receiver.url(), json!(["key.created"])).await;
    app.new_project_key(&org).await;

    // 1 + 2 attempts, each timing out: failed, nothing more scheduled.
    let items = wait_for_status(&app, &org, &endpoint, "failed", SETTLE).await;
    assert_eq!(items[0]["attempts"], 3);
    assert_eq!(items[0]["lastStatus"], Value::Null, "no status came back");
    assert_eq!(items[0]["nextAttemptAt"], Value::Null);
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    let id = got[0].header("webhook-id").to_owned();
    assert!(got.iter().all(|request| request.header("webhook-id") == id));
    let outcome = |name: &str| format!("logstitch_webhook_deliveries_total{{outcome=\"{name}\"}}");
    assert_eq!(app.metric(&outcome("failed_attempt")).await, 2.0);
    assert_eq!(app.metric(&outcome("failed")).await, 1.0);

    receiver.answer_by_default(Answer::Status(204));
    let retry_path = format!("/api/v1/webhook-endpoints/{endpoint}/deliveries/{id}/retry");
    let retried = app
        .request(Method::POST, &retry_path, Some(&org.master_key), None)
        .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{retried:?}");
    assert_exact_fields(&retried.body, &["id", "status", "request_id"]);
    assert_eq!(retried.body["id"], id.as_str());
    assert_eq!(retried.body["status"], "pending");
    let items = wait_for_status(&app, &org, &endpoint, "delivered", SETTLE).await;
    assert_eq!(items[0]["attempts"], 4);
    assert_eq!(items[0]["lastStatus"], 204);
    let got = receiver.received();
    assert_eq!(got.len(), 4);
    got[3].verify(&secret);
    assert_eq!(
        got[3].header("webhook-id"),
        id,
        "a manual retry keeps the id"
    );

    // Only a failed delivery can be retried.
    let again = app
        .request(Method::POST, &retry_path, Some(&org.master_key), None)
        .await;
    assert_error(&again, StatusCode::CONFLICT, "conflict");
    let unknown = format!(
        "/api/v1/webhook-endpoints/{endpoint}/deliveries/{}/retry",
        uuid::Uuid::new_v4()
    );
    let unknown = app
        .request(Method::POST, &unknown, Some(&org.master_key), None)
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
}

#[actix_web::test]
async fn a_change_that_rolls_back_is_never_delivered() {
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        receivable(settings);
        // The master key and two project keys.
        settings.keys.max_active_per_org = std::num::NonZeroU32::new(3).unwrap();
    })
    .await;
    let org = app.create_org("Acme").await;
    let receiver = Receiver::start().await;
    let (endpoint, secret) = new_endpoint(&app, &org, &receiver.url(), json!(["*"])).await;
    let (first, first_key) = app.new_project_key(&org).await;
    let (second, _) = app.new_project_key(&org).await;
    // Refused by the key limit: rolled back before anything was written.
    let refused = app
        .create_key(&org.master_key, &org.project_id, "third")
        .await;
    assert_error(&refused, StatusCode::CONFLICT, "conflict");

    // A revoke whose transaction fails at COMMIT, after its event and its delivery were
    // written: a deferred constraint trigger refuses it.
    let db = app.db.client().await;
    db.batch_execute(
        "CREATE FUNCTION refuse_revokes() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.action = 'key.revoked' THEN RAISE EXCEPTION 'refused at commit'; END IF;
             RETURN NULL;
         END $$;
         CREATE CONSTRAINT TRIGGER refuse_revokes AFTER INSERT ON audit_events
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_revokes();",
    )
    .await
    .unwrap();
    let failed = app.revoke_key(&org.master_key, &first).await;
    assert_error(&failed, StatusCode::INTERNAL_SERVER_ERROR, "internal_error");
    assert_eq!(
        app.verify(&first_key).await.status,
        StatusCode::OK,
        "not revoked"
    );
    db.batch_execute("DROP TRIGGER refuse_revokes ON audit_events")
        .await
        .unwrap();
    assert_eq!(
        app.revoke_key(&org.master_key, &second).await.status,
        StatusCode::OK
    );

    // key.created twice and the committed revoke: nothing of the two that rolled back.
    assert!(receiver.wait_for(3, SETTLE).await);
    wait_for_status(&app, &org, &endpoint, "delivered", SETTLE).await;
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.received();
    let sent: Vec<(String, String)> = got
        .iter()
        .map(|request| {
            request.verify(&secret);
            let body = request.json();
            let target = body["data"]["target"]["id"].as_str().unwrap().to_owned();
            (body["type"].as_str().unwrap().to_owned(), target)
        })
        .collect();
    assert_eq!(
        sent,
        [
            ("key.created".to_owned(), first.clone()),
            ("key.created".to_owned(), second.clone()),
            ("key.revoked".to_owned(), second.clone()),
        ]
    );
    let rows: i64 = db
        .query_one("SELECT count(*) FROM webhook_deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3);
}

#[actix_web::test]
async fn a_target_refused_at_delivery_counts_as_an_attempt_and_is_never_contacted() {
    // This instance refuses private targets; the endpoint was stored when its URL passed
    // (as if its name resolved elsewhere then): every attempt checks again.
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        receivable(settings);
        settings.webhooks.allow_private_targets = false;
    })
    .await;
    let org = app.create_org("Acme").await;
    let receiver = Receiver::start().await;
    let endpoint = uuid::Uuid::new_v4();
    let org_id = uuid::Uuid::parse_str(&org.organization_id).unwrap();
    let events = vec!["key.created".to_owned()];
    for url in [
        receiver.url(),
        format!("http://localhost:{}/hook", receiver.port),
    ] {
        let id = if url.contains("localhost") {
            uuid::Uuid::new_v4()
        } else {
            endpoint
        };
        app.db
            .client()
            .await
            .execute(
                "INSERT INTO webhook_endpoints (id, organization_id, url, events, secret)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&id, &org_id, &url, &events, &vec![7u8; 32]],
            )
            .await
            .unwrap();
    }
    app.new_project_key(&org).await;

    let items = wait_for_status(&app, &org, &endpoint.to_string(), "failed", SETTLE).await;
    assert_eq!(items[0]["attempts"], 3, "refusals count as attempts");
    assert_eq!(items[0]["lastStatus"], Value::Null);
    let refused = "logstitch_webhook_deliveries_total{outcome=\"refused\"}";
    let failed = "logstitch_webhook_deliveries_total{outcome=\"failed\"}";
    assert!(
        eventually(SETTLE, || async {
            app.metric(refused).await == 4.0 && app.metric(failed).await == 2.0
        })
        .await
    );
    assert!(
        receiver.received().is_empty(),
        "a refused target is never contacted"
    );
}

#[actix_web::test]
async fn deleting_an_endpoint_drops_the_deliveries_not_yet_made() {
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        receivable(settings);
        settings.webhooks.retry_schedule = vec![Duration::from_millis(1500)];
    })
    .await;
    let org = app.create_org("Acme").await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Status(503));
    let (endpoint, _) = new_endpoint(&app, &org, &receiver.url(), json!(["key.created"])).await;
    app.new_project_key(&org).await;
    assert!(receiver.wait_for(1, SETTLE).await);
    let pending = delivery_items(&app, &org, &endpoint).await;
    assert_eq!(pending[0]["status"], "pending");

    let deleted = app
        .request(
            Method::DELETE,
            &format!("/api/v1/webhook-endpoints/{endpoint}"),
            Some(&org.master_key),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{deleted:?}");
    receiver.answer_by_default(Answer::Status(200));
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), 1, "the retry was never made");
    let rows: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM webhook_deliveries", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0);
}
