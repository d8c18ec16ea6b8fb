//! Webhooks (issue 21): endpoints, deliveries of every key event to a real receiver on
//! loopback that verifies each request with a Standard Webhooks library, retries, crashes,
//! several instances, rollbacks, SSRF refusals and expiry warnings.

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use logstitch_gateway::configuration::Settings;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Reply, TestApp, TestDatabase, TestOrg};
use crate::webhook_receiver::Receiver;

/// Loopback receivers over plain HTTP, quick retries, a short timeout.
fn receivable(settings: &mut Settings) {
    settings.webhooks.allow_http = true;
    settings.webhooks.allow_private_targets = true;
    settings.webhooks.retry_schedule = vec![Duration::from_millis(200), Duration::from_millis(200)];
    settings.webhooks.timeout = Duration::from_millis(500);
}

async fn webhook_app() -> TestApp {
    spawn_app_with(TestDatabase::create().await, receivable).await
}

async fn create_endpoint(app: &TestApp, token: &str, body: &Value) -> Reply {
    app.request(
        Method::POST,
        "/api/v1/webhook-endpoints",
        Some(token),
        Some(body),
    )
    .await
}

/// A new endpoint of `org` to `url` for `events` (asserts 201): its id and secret.
async fn new_endpoint(app: &TestApp, org: &TestOrg, url: &str, events: Value) -> (String, String) {
    let created =
        create_endpoint(app, &org.master_key, &json!({"url": url, "events": events})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    (
        created.body["id"].as_str().unwrap().to_owned(),
        created.body["secret"].as_str().unwrap().to_owned(),
    )
}

async fn deliveries(app: &TestApp, token: &str, endpoint: &str, query: &str) -> Reply {
    app.request(
        Method::GET,
        &format!("/api/v1/webhook-endpoints/{endpoint}/deliveries{query}"),
        Some(token),
        None,
    )
    .await
}

/// The organization's audit events with this action, newest first.
async fn audit_events(app: &TestApp, org: &TestOrg, action: &str) -> Vec<Value> {
    let reply = app
        .request(
            Method::GET,
            &format!("/api/v1/audit-events?limit=100&action={action}"),
            Some(&org.master_key),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.body["events"].as_array().unwrap().clone()
}

#[actix_web::test]
async fn a_revoke_is_delivered_signed_with_its_audit_event_as_data() {
    let app = webhook_app().await;
    let org = app.create_org("Acme").await;
    let receiver = Receiver::start().await;
    let (endpoint, secret) =
        new_endpoint(&app, &org, &receiver.url(), json!(["key.revoked"])).await;
    let (key_id, _) = app.new_project_key(&org).await;

    let revoked_at = std::time::Instant::now();
    assert_eq!(
        app.revoke_key(&org.master_key, &key_id).await.status,
        StatusCode::OK
    );
    assert!(
        receiver.wait_for(1, Duration::from_secs(5)).await,
        "nothing delivered"
    );
    let got = &receiver.received()[0];
    assert!(
        got.at.duration_since(revoked_at) < Duration::from_secs(1),
        "first attempt {:?} after the commit",
        got.at.duration_since(revoked_at)
    );
    got.verify(&secret);
    assert_eq!(got.header("content-type"), "application/json");
    let event = audit_events(&app, &org, "key.revoked").await.remove(0);
    let body = got.json();
    assert_eq!(
        body,
        json!({"type": "key.revoked", "timestamp": event["occurredAt"], "data": event})
    );

    // Let the outcome be recorded, then the deliveries list shows it.
    let listed = crate::helpers::eventually(Duration::from_secs(3), || async {
        deliveries(&app, &org.master_key, &endpoint, "").await.body["deliveries"][0]["status"]
            == "delivered"
    })
    .await;
    assert!(listed);
    let page = deliveries(&app, &org.master_key, &endpoint, "").await;
    let item = &page.body["deliveries"][0];
    assert_eq!(item["id"], got.header("webhook-id"));
    assert_eq!(item["eventId"], event["id"]);
    assert_eq!(item["type"], "key.revoked");
    assert_eq!(item["attempts"], 1);
    assert_eq!(item["lastStatus"], 200);
    assert_eq!(item["nextAttemptAt"], Value::Null);
}
