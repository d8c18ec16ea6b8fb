//! The endpoint routes: shapes, who may call them, the endpoint limit, bad input, the SSRF
//! rule at creation, and the deliveries list's pages.

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use base64::Engine;
use serde_json::{json, Value};
use uuid::Uuid;

use super::receiver::Receiver;
use super::{create_endpoint, deliveries, new_endpoint, receivable, wait_for_status, webhook_app};
use crate::helpers::{
    api_timestamp, assert_error, assert_exact_fields, assert_request_id, assert_validation_error,
    spawn_app, spawn_app_with, TestApp, TestDatabase,
};

const BASE: &str = "/api/v1/webhook-endpoints";

async fn list(app: &TestApp, token: &str) -> crate::helpers::Reply {
    app.request(Method::GET, BASE, Some(token), None).await
}

#[actix_web::test]
async fn an_endpoint_is_created_with_its_secret_shown_once_listed_and_deleted() {
    let app = webhook_app().await;
    let org = app.create_org("Acme").await;
    let url = "https://hooks.example.com/logstitch?tenant=1";
    let created = create_endpoint(
        &app,
        &org.master_key,
        &json!({"url": url, "events": ["key.revoked", "key.rolled"]}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_exact_fields(
        &created.body,
        &["id", "url", "events", "secret", "createdAt", "request_id"],
    );
    assert_request_id(&created);
    let id = created.body["id"].as_str().unwrap().to_owned();
    Uuid::parse_str(&id).unwrap();
    assert_eq!(created.body["url"], url);
    assert_eq!(created.body["events"], json!(["key.revoked", "key.rolled"]));
    api_timestamp(&created.body["createdAt"]);
    let secret = created.body["secret"].as_str().unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    assert!(raw.len() >= 24, "{} random bytes", raw.len());
    standardwebhooks::Webhook::new(secret).expect("a Standard Webhooks secret");

    let star = create_endpoint(&app, &org.master_key, &json!({"url": url, "events": ["*"]})).await;
    assert_eq!(star.status, StatusCode::CREATED, "{star:?}");
    assert_eq!(star.body["events"], json!(["*"]));
    assert_ne!(star.body["secret"], created.body["secret"]);

    let listed = list(&app, &org.master_key).await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    assert_exact_fields(&listed.body, &["endpoints", "request_id"]);
    let items = listed.body["endpoints"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for item in items {
        assert_exact_fields(item, &["id", "url", "events", "createdAt"]);
    }
    assert_eq!(items[0]["id"], star.body["id"], "newest first");
    assert_eq!(items[1]["createdAt"], created.body["createdAt"]);
    assert!(!listed.text.contains(secret), "a secret is never listed");

    let path = format!("{BASE}/{id}");
    let deleted = app
        .request(Method::DELETE, &path, Some(&org.master_key), None)
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{deleted:?}");
    assert_exact_fields(&deleted.body, &["deleted", "request_id"]);
    assert_eq!(deleted.body["deleted"], true);
    let again = app
        .request(Method::DELETE, &path, Some(&org.master_key), None)
        .await;
    assert_error(&again, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        list(&app, &org.master_key).await.body["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Both changes are in the audit trail, aimed at the endpoint.
    let trail = app
        .request(
            Method::GET,
            "/api/v1/audit-events?limit=100",
            Some(&org.master_key),
            None,
        )
        .await;
    let of_endpoint: Vec<&Value> = trail.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["target"]["id"] == id.as_str())
        .collect();
    let actions: Vec<&str> = of_endpoint
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["webhook_endpoint.deleted", "webhook_endpoint.created"]
    );
    for event in of_endpoint {
        assert_eq!(event["target"]["type"], "webhook_endpoint");
        assert_eq!(event["actor"]["type"], "master");
        assert_eq!(event["projectId"], Value::Null);
    }
}

#[actix_web::test]
async fn every_webhook_route_is_for_master_keys_of_the_endpoints_organization() {
    let app = webhook_app().await;
    let org = app.create_org("Acme").await;
    let other = app.create_org("Other").await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = new_endpoint(&app, &org, &receiver.url(), json!(["key.created"])).await;
    let (_, project_key) = app.new_project_key(&org).await;
    let items = wait_for_status(&app, &org, &endpoint, "delivered", Duration::from_secs(10)).await;
    let delivery = items[0]["id"].as_str().unwrap().to_owned();
    let body = json!({"url": receiver.url(), "events": ["*"]});
    let routes: Vec<(Method, String, Option<&Value>)> = vec![
        (Method::POST, BASE.to_owned(), Some(&body)),
        (Method::GET, BASE.to_owned(), None),
        (Method::DELETE, format!("{BASE}/{endpoint}"), None),
        (Method::POST, format!("{BASE}/{endpoint}/test"), None),
        (Method::GET, format!("{BASE}/{endpoint}/deliveries"), None),
        (
            Method::POST,
            format!("{BASE}/{endpoint}/deliveries/{delivery}/retry"),
            None,
        ),
    ];
    for (method, path, body) in &routes {
        let reply = app
            .request(method.clone(), path, Some(&project_key), *body)
            .await;
        assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
        let reply = app.request(method.clone(), path, None, *body).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // Another organization's master key learns nothing of this endpoint.
    for (method, path, body) in &routes[2..] {
        let reply = app
            .request(method.clone(), path, Some(&other.master_key), *body)
            .await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(
        list(&app, &other.master_key).await.body["endpoints"],
        json!([])
    );
    // Unknown ids too.
    let unknown = Uuid::new_v4();
    for path in [
        format!("{BASE}/{unknown}"),
        format!("{BASE}/{unknown}/test"),
        format!("{BASE}/{unknown}/deliveries"),
        format!("{BASE}/{endpoint}/deliveries/{unknown}/retry"),
        format!("{BASE}/{unknown}/deliveries/{delivery}/retry"),
    ] {
        let method = if path.ends_with("deliveries") {
            Method::GET
        } else if path.contains("/test") || path.ends_with("retry") {
            Method::POST
        } else {
            Method::DELETE
        };
        let reply = app
            .request(method, &path, Some(&org.master_key), None)
            .await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    }
    // Nothing was changed by any of them.
    assert_eq!(
        list(&app, &org.master_key).await.body["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[actix_web::test]
async fn an_organization_has_at_most_ten_endpoints() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let body = json!({"url": "https://hooks.example.com/x", "events": ["*"]});
    for _ in 0..10 {
        let created = create_endpoint(&app, &org.master_key, &body).await;
        assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    }
    let refused = create_endpoint(&app, &org.master_key, &body).await;
    assert_error(&refused, StatusCode::CONFLICT, "conflict");
    assert_eq!(
        list(&app, &org.master_key).await.body["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    // The limit is per organization.
    let other = app.create_org("Other").await;
    assert_eq!(
        create_endpoint(&app, &other.master_key, &body).await.status,
        StatusCode::CREATED
    );
}

#[actix_web::test]
async fn bad_input_is_refused_400_naming_the_field() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let long = format!("https://example.com/{}", "a".repeat(2049 - 20));
    assert_eq!(long.len(), 2049);
    let cases = [
        (json!({"events": ["*"]}), vec!["url"]),
        (json!({"url": 5, "events": ["*"]}), vec!["url"]),
        (
            json!({"url": "ftp://example.com/x", "events": ["*"]}),
            vec!["url"],
        ),
        (
            json!({"url": "/relative/path", "events": ["*"]}),
            vec!["url"],
        ),
        (
            json!({"url": "http://example.com/x", "events": ["*"]}),
            vec!["url"],
        ),
        (json!({"url": long, "events": ["*"]}), vec!["url"]),
        (json!({"url": "https://example.com/x"}), vec!["events"]),
        (
            json!({"url": "https://example.com/x", "events": []}),
            vec!["events"],
        ),
        (
            json!({"url": "https://example.com/x", "events": "key.created"}),
            vec!["events"],
        ),
        (
            json!({"url": "https://example.com/x", "events": ["key.deleted"]}),
            vec!["events"],
        ),
        (
            json!({"url": "https://example.com/x", "events": ["*", "key.created"]}),
            vec!["events"],
        ),
        (
            json!({"url": "https://example.com/x", "events": ["webhook.test"]}),
            vec!["events"],
        ),
        (json!({"url": "", "events": [1]}), vec!["url", "events"]),
    ];
    for (body, fields) in cases {
        let reply = create_endpoint(&app, &org.master_key, &body).await;
        assert_eq!(assert_validation_error(&reply), fields, "{body}");
    }
    let not_object = create_endpoint(&app, &org.master_key, &json!(["x"])).await;
    assert_validation_error(&not_object);
    let ok = format!("https://example.com/{}", "a".repeat(2048 - 20));
    let created = create_endpoint(
        &app,
        &org.master_key,
        &json!({"url": ok, "events": ["key.leaked"]}),
    )
    .await;
    assert_eq!(
        created.status,
        StatusCode::CREATED,
        "2048 characters are fine: {created:?}"
    );
    let endpoint = created.body["id"].as_str().unwrap();

    // Ids in the path, and the deliveries list's parameters.
    for (method, path, field) in [
        (Method::DELETE, format!("{BASE}/not-a-uuid"), "id"),
        (Method::POST, format!("{BASE}/not-a-uuid/test"), "id"),
        (Method::GET, format!("{BASE}/not-a-uuid/deliveries"), "id"),
        (
            Method::POST,
            format!("{BASE}/{endpoint}/deliveries/nope/retry"),
            "delivery_id",
        ),
        (
            Method::GET,
            format!("{BASE}/{endpoint}/deliveries?limit=0"),
            "limit",
        ),
        (
            Method::GET,
            format!("{BASE}/{endpoint}/deliveries?limit=101"),
            "limit",
        ),
        (
            Method::GET,
            format!("{BASE}/{endpoint}/deliveries?cursor=nope"),
            "cursor",
        ),
        (
            Method::GET,
            format!("{BASE}/{endpoint}/deliveries?status=failed"),
            "status",
        ),
    ] {
        let reply = app
            .request(method, &path, Some(&org.master_key), None)
            .await;
        assert_eq!(assert_validation_error(&reply), [field], "{path}");
    }
}

#[actix_web::test]
async fn private_and_loopback_targets_are_refused_at_creation_without_the_setting() {
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        settings.webhooks.allow_http = true;
    })
    .await;
    let org = app.create_org("Acme").await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://127.1/hook",
        "http://2130706433/hook",
        "http://10.1.2.3/hook",
        "http://172.16.0.1/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://[::1]:8080/hook",
        "http://[::]/hook",
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
        "http://[ff02::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://localhost:8080/hook",
        "https://localhost/hook",
    ] {
        let reply =
            create_endpoint(&app, &org.master_key, &json!({"url": url, "events": ["*"]})).await;
        assert_eq!(
            assert_validation_error(&reply),
            ["url"],
            "{url} was accepted"
        );
    }
    assert_eq!(
        list(&app, &org.master_key).await.body["endpoints"],
        json!([])
    );

    // The setting lifts it.
    let lifted = spawn_app_with(TestDatabase::create().await, receivable).await;
    let org = lifted.create_org("Acme").await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://localhost/hook",
    ] {
        let reply = create_endpoint(
            &lifted,
            &org.master_key,
            &json!({"url": url, "events": ["*"]}),
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{url}: {reply:?}");
    }
}

#[actix_web::test]
async fn deliveries_are_listed_newest_first_in_keyset_pages() {
    let app = webhook_app().await;
    let org = app.create_org("Acme").await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = new_endpoint(&app, &org, &receiver.url(), json!(["key.created"])).await;
    for _ in 0..5 {
        app.new_project_key(&org).await;
    }
    let all = wait_for_status(&app, &org, &endpoint, "delivered", Duration::from_secs(10)).await;
    assert_eq!(all.len(), 5);
    for item in &all {
        assert_exact_fields(
            item,
            &[
                "id",
                "eventId",
                "type",
                "status",
                "attempts",
                "lastAttemptAt",
                "lastStatus",
                "nextAttemptAt",
            ],
        );
    }
    let events = super::audit_events(&app, &org, "key.created").await;
    let event_ids: Vec<&Value> = events.iter().take(5).map(|event| &event["id"]).collect();
    let delivered_events: Vec<&Value> = all.iter().map(|item| &item["eventId"]).collect();
    assert_eq!(
        delivered_events, event_ids,
        "newest first, like the audit trail"
    );

    let mut walked = Vec::new();
    let mut query = "?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let page = deliveries(&app, &org.master_key, &endpoint, &query).await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        assert_exact_fields(&page.body, &["deliveries", "next_cursor", "request_id"]);
        pages += 1;
        walked.extend(page.body["deliveries"].as_array().unwrap().iter().cloned());
        match page.body["next_cursor"].as_str() {
            Some(cursor) => query = format!("?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(walked, all);
}
