//! Each outcome counted where it is decided: verify, the key API and gateway routes; keys
//! that don't exist counted nowhere.

use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use chrono::{SecondsFormat, Utc};
use serde_json::json;

use super::{await_usage, expected, new_key, usage_totals};
use crate::gateway::{route, start_upstream};
use crate::helpers::{spawn_app_with, TestApp, TestDatabase};
use logstitch_gateway::domain::{ApiKey, KeyType};

/// An instance flushing every 100 ms, with a project-key route (`/api/v1/events`, its bucket
/// 3 requests and next to no refill), a master-only route (`/api/v1/admin-only`) and a route
/// whose upstream is down (`/api/v1/down`).
async fn counting_app() -> TestApp {
    let upstream = start_upstream();
    spawn_app_with(TestDatabase::create().await, move |settings| {
        settings.usage.flush_interval = Duration::from_millis(100);
        settings.rate_limit.requests_per_second = 0.001;
        settings.rate_limit.burst = NonZeroU32::new(3).unwrap();
        settings.gateway.routes = vec![
            route("/api/v1/events", &upstream.url, &["project"], 2000),
            route("/api/v1/admin-only", &upstream.url, &["master"], 2000),
            // Nothing listens on port 9 of loopback: 502.
            route("/api/v1/down", "http://127.0.0.1:9", &["project"], 1000),
        ];
    })
    .await
}

async fn send(app: &TestApp, method: Method, path: &str, token: &str, times: usize) -> StatusCode {
    let mut status = StatusCode::OK;
    for _ in 0..times {
        status = app
            .request(method.clone(), path, Some(token), None)
            .await
            .status;
    }
    status
}

#[actix_web::test]
async fn every_outcome_is_counted_for_its_key_after_a_flush() {
    let app = counting_app().await;
    let org = app.create_org("Usage").await;
    let project = org.project_id.clone();
    let (full_id, full) = new_key(&app, &org, &project, json!({})).await;
    let (narrow_id, narrow) =
        new_key(&app, &org, &project, json!({"scopes": ["keys.write"]})).await;
    let (revoked_id, revoked) = new_key(&app, &org, &project, json!({})).await;
    let (disabled_id, disabled) = new_key(&app, &org, &project, json!({})).await;
    let expires_at = Utc::now() + chrono::Duration::seconds(2);
    let (expired_id, expired) = new_key(
        &app,
        &org,
        &project,
        json!({"expires_at": expires_at.to_rfc3339_opts(SecondsFormat::Millis, true)}),
    )
    .await;

    // The full key: valid through verify, the key API and the gateway; refused by the
    // gateway's bucket, by key type on a master-only route and on a master-only API route.
    assert_eq!(
        send(&app, Method::GET, "/api/v1/auth/verify", &full, 2).await,
        200
    );
    assert_eq!(send(&app, Method::GET, "/api/v1/keys", &full, 1).await, 200);
    assert!(send(&app, Method::GET, "/api/v1/events/x", &full, 3)
        .await
        .is_success());
    assert_eq!(
        send(&app, Method::GET, "/api/v1/events/x", &full, 2).await,
        429
    );
    assert_eq!(
        send(&app, Method::GET, "/api/v1/admin-only", &full, 2).await,
        403
    );
    assert_eq!(
        send(&app, Method::POST, "/api/v1/projects", &full, 1).await,
        403
    );
    // Refused for its input, not its key: valid.
    assert_eq!(
        send(&app, Method::DELETE, "/api/v1/keys/not-a-uuid", &full, 1).await,
        400
    );
    let absent = format!("/api/v1/keys/{}", uuid::Uuid::new_v4());
    assert_eq!(send(&app, Method::DELETE, &absent, &full, 1).await, 404);

    // The narrow key holds keys.write only: no keys.read, no events.write.
    assert_eq!(
        send(&app, Method::GET, "/api/v1/keys", &narrow, 2).await,
        403
    );
    let scoped = "/api/v1/auth/verify?scope=events.write";
    assert_eq!(send(&app, Method::GET, scoped, &narrow, 1).await, 403);
    assert_eq!(
        send(&app, Method::GET, "/api/v1/auth/verify", &narrow, 1).await,
        200
    );
    // A 5xx is not counted; an upstream's own refusal went through our checks: valid.
    assert_eq!(
        send(&app, Method::GET, "/api/v1/down", &narrow, 1).await,
        502
    );
    let refused_upstream = send(&app, Method::GET, "/api/v1/events/refuses", &narrow, 1).await;
    assert_eq!(refused_upstream, 405);

    // Revoked, disabled and expired keys, each refused twice.
    assert_eq!(
        app.revoke_key(&org.master_key, &revoked_id).await.status,
        200
    );
    assert_eq!(
        send(&app, Method::GET, "/api/v1/auth/verify", &revoked, 2).await,
        401
    );
    // On a path no route serves, a revoked key still counts as revoked.
    let nowhere = send(&app, Method::GET, "/api/v1/no-such-route", &revoked, 1).await;
    assert!(nowhere.is_client_error(), "{nowhere}");
    let off = app
        .patch_key(&org.master_key, &disabled_id, &json!({"enabled": false}))
        .await;
    assert_eq!(off.status, StatusCode::OK, "{off:?}");
    assert_eq!(
        send(&app, Method::GET, "/api/v1/events/x", &disabled, 2).await,
        401
    );
    let left = (expires_at - Utc::now()).to_std().unwrap_or_default();
    actix_rt::time::sleep(left + Duration::from_millis(100)).await;
    assert_eq!(
        send(&app, Method::GET, "/api/v1/auth/verify", &expired, 2).await,
        401
    );

    // A well-formed key that doesn't exist is counted nowhere.
    let unknown = ApiKey::generate(KeyType::Project).expose().to_owned();
    assert_eq!(
        send(&app, Method::GET, "/api/v1/auth/verify", &unknown, 3).await,
        401
    );

    let master = &org.master_key;
    let want = expected(&[("valid", 8), ("rate_limited", 2), ("forbidden", 3)]);
    assert_eq!(await_usage(&app, master, &full_id, &want).await, want);
    let want = expected(&[("valid", 2), ("insufficient_scope", 3)]);
    assert_eq!(await_usage(&app, master, &narrow_id, &want).await, want);
    let want = expected(&[("revoked", 3)]);
    assert_eq!(await_usage(&app, master, &revoked_id, &want).await, want);
    let want = expected(&[("disabled", 2)]);
    assert_eq!(await_usage(&app, master, &disabled_id, &want).await, want);
    let want = expected(&[("expired", 2)]);
    assert_eq!(await_usage(&app, master, &expired_id, &want).await, want);

    // The organization's sum is its keys' usage; unknown keys added nothing. The master key's
    // own requests (creating, listing, reading usage) are counted as it makes them, so it is
    // read once before and the organization right after, with only those reads between.
    let master_id = app.verify(master).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    let master_usage = usage_totals(&app, master, &master_id).await;
    let reply = app
        .request(Method::GET, "/api/v1/usage", Some(master), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let org_total = super::sum_buckets(&reply.body)["total"].as_u64().unwrap();
    let keys_total = 13 + 5 + 3 + 2 + 2 + master_usage["total"].as_u64().unwrap();
    // The master's usage read just before may be flushed by now, or not yet.
    assert!(
        org_total == keys_total || org_total == keys_total + 1,
        "organization {org_total}, keys {keys_total}"
    );
}
