//! Webhooks (issue 21): endpoints and their routes (`routes`), deliveries of every key event to
//! a real receiver on loopback that verifies each request with a Standard Webhooks library
//! (`delivery`: signatures, retries, timeouts, rollbacks, SSRF), and what takes more than one
//! process (`fleet`: a crash between commit and delivery, instances sharing one queue, expiry
//! warnings with three instances); what a hostile customer or a slow database could make of
//! them (`hostile`). `receiver` is the loopback receiver.

mod delivery;
mod fleet;
mod hostile;
pub mod receiver;
mod routes;

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use logstitch_gateway::configuration::Settings;
use serde_json::{json, Value};

use crate::helpers::{eventually, spawn_app_with, Reply, TestApp, TestDatabase, TestOrg};

/// Loopback receivers over plain HTTP, quick retries (two, 200 ms apart), a short timeout.
pub fn receivable(settings: &mut Settings) {
    settings.webhooks.allow_http = true;
    settings.webhooks.allow_private_targets = true;
    settings.webhooks.retry_schedule = vec![Duration::from_millis(200), Duration::from_millis(200)];
    settings.webhooks.timeout = Duration::from_millis(500);
}

pub async fn webhook_app() -> TestApp {
    spawn_app_with(TestDatabase::create().await, receivable).await
}

pub async fn create_endpoint(app: &TestApp, token: &str, body: &Value) -> Reply {
    app.request(
        Method::POST,
        "/api/v1/webhook-endpoints",
        Some(token),
        Some(body),
    )
    .await
}

/// A new endpoint of `org` to `url` for `events` (asserts 201): its id and secret.
pub async fn new_endpoint(
    app: &TestApp,
    org: &TestOrg,
    url: &str,
    events: Value,
) -> (String, String) {
    let created =
        create_endpoint(app, &org.master_key, &json!({"url": url, "events": events})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    (
        created.body["id"].as_str().unwrap().to_owned(),
        created.body["secret"].as_str().unwrap().to_owned(),
    )
}

/// `POST …/{endpoint}/test` with `org`'s master key.
pub async fn queue_test(app: &TestApp, org: &TestOrg, endpoint: &str) -> Reply {
    app.request(
        Method::POST,
        &format!("/api/v1/webhook-endpoints/{endpoint}/test"),
        Some(&org.master_key),
        None,
    )
    .await
}

/// `GET …/{endpoint}/deliveries{query}`.
pub async fn deliveries(app: &TestApp, token: &str, endpoint: &str, query: &str) -> Reply {
    app.request(
        Method::GET,
        &format!("/api/v1/webhook-endpoints/{endpoint}/deliveries{query}"),
        Some(token),
        None,
    )
    .await
}

/// The endpoint's deliveries (one page of up to 100, asserts 200).
pub async fn delivery_items(app: &TestApp, org: &TestOrg, endpoint: &str) -> Vec<Value> {
    let page = deliveries(app, &org.master_key, endpoint, "?limit=100").await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    page.body["deliveries"].as_array().unwrap().clone()
}

/// Waits until every delivery to `endpoint` has `status` (asserts it happens within `within`).
pub async fn wait_for_status(
    app: &TestApp,
    org: &TestOrg,
    endpoint: &str,
    status: &str,
    within: Duration,
) -> Vec<Value> {
    let settled = eventually(within, || async {
        let items = delivery_items(app, org, endpoint).await;
        !items.is_empty() && items.iter().all(|item| item["status"] == status)
    })
    .await;
    let items = delivery_items(app, org, endpoint).await;
    assert!(settled, "not every delivery became {status}: {items:#?}");
    items
}

/// The organization's audit events with this action, newest first.
pub async fn audit_events(app: &TestApp, org: &TestOrg, action: &str) -> Vec<Value> {
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

/// Every audit event of the organization, oldest first (one page of up to 100).
pub async fn audit_trail(app: &TestApp, org: &TestOrg) -> Vec<Value> {
    let reply = app
        .request(
            Method::GET,
            "/api/v1/audit-events?limit=100",
            Some(&org.master_key),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let mut events = reply.body["events"].as_array().unwrap().clone();
    events.reverse();
    events
}
