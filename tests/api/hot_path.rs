//! The auth hot path on one instance: the verify endpoint's shape, cache hits and negative
//! caching (counted through the lookup counter), lastUsedAt batching, idle org actors.

use std::time::Duration;

use actix_web::http::StatusCode;
use futures_util::future::join_all;
use logstitch_gateway::domain::{ApiKey, KeyType};
use serde_json::Value;

use crate::helpers::{assert_error, eventually, spawn_app, spawn_app_with, TestDatabase};

const LOOKUPS: &str = "logstitch_auth_db_lookups_total";

fn header<'a>(reply: &'a crate::helpers::Reply, name: &str) -> &'a str {
    reply
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header: {reply:?}"))
        .to_str()
        .unwrap()
}

fn body_fields(body: &Value) -> Vec<&str> {
    let mut fields: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    fields.sort_unstable();
    fields
}

#[actix_web::test]
async fn verify_answers_the_identity_in_body_and_headers() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let created = app
        .create_key(&org.master_key, &org.project_id, "Edge")
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let key = created.body["key"].as_str().unwrap();
    let listed = app.list_keys(&org.master_key).await;
    let project_key_id = listed.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["type"] == "project")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let reply = app.verify(key).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(
        body_fields(&reply.body),
        [
            "expires_at",
            "key_id",
            "organization_id",
            "project_id",
            "request_id",
            "scopes",
            "type",
            "valid"
        ]
    );
    assert_eq!(reply.body["valid"], true);
    assert_eq!(reply.body["key_id"], project_key_id.as_str());
    assert_eq!(reply.body["organization_id"], org.organization_id.as_str());
    assert_eq!(reply.body["project_id"], org.project_id.as_str());
    assert_eq!(reply.body["type"], "project");
    assert!(reply.body["request_id"]
        .as_str()
        .unwrap()
        .starts_with("req_"));
    assert_eq!(
        header(&reply, "X-LogStitch-Organization-Id"),
        org.organization_id
    );
    assert_eq!(header(&reply, "X-LogStitch-Project-Id"), org.project_id);
    assert_eq!(header(&reply, "X-LogStitch-Key-Id"), project_key_id);
    assert_eq!(header(&reply, "X-LogStitch-Key-Type"), "project");

    // A master key: no project.
    let master = app.verify(&org.master_key).await;
    assert_eq!(master.status, StatusCode::OK, "{master:?}");
    assert_eq!(body_fields(&master.body), body_fields(&reply.body));
    assert_eq!(master.body["valid"], true);
    assert_eq!(master.body["type"], "master");
    assert_eq!(master.body["organization_id"], org.organization_id.as_str());
    assert!(master.body["project_id"].is_null(), "{master:?}");
    assert_eq!(header(&master, "X-LogStitch-Key-Type"), "master");
    assert_eq!(header(&master, "X-LogStitch-Project-Id"), "");
    assert_eq!(
        header(&master, "X-LogStitch-Key-Id"),
        master.body["key_id"].as_str().unwrap()
    );

    // Errors, in the envelope.
    let missing = app
        .request(
            actix_web::http::Method::GET,
            "/api/v1/auth/verify",
            None,
            None,
        )
        .await;
    assert_error(&missing, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(missing.headers.get("X-LogStitch-Key-Id").is_none());
    let unknown = app
        .verify(ApiKey::generate(KeyType::Project).expose())
        .await;
    assert_error(&unknown, StatusCode::UNAUTHORIZED, "invalid_api_key");
    let revoked = app.revoke_key(&org.master_key, &project_key_id).await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    let refused = app.verify(key).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "key_revoked");
    assert!(refused.headers.get("X-LogStitch-Key-Id").is_none());
}

#[actix_web::test]
async fn a_key_created_here_is_a_hit_on_first_use() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let created = app
        .create_key(&org.master_key, &org.project_id, "Fresh")
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let key = created.body["key"].as_str().unwrap();

    let before = app.metric(LOOKUPS).await;
    let replies = join_all((0..10).map(|_| app.verify(key))).await;
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    assert_eq!(app.metric(LOOKUPS).await - before, 0.0);
}

#[actix_web::test]
async fn unknown_keys_are_looked_up_once_and_malformed_keys_never() {
    let app = spawn_app().await;
    let unknown: Vec<String> = (0..20)
        .map(|_| ApiKey::generate(KeyType::Project).expose().to_owned())
        .collect();

    let before = app.metric(LOOKUPS).await;
    let uses = unknown
        .iter()
        .flat_map(|key| std::iter::repeat_n(key, 20))
        .map(|key| app.verify(key));
    let replies = join_all(uses).await;
    for reply in &replies {
        assert_error(reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
    }
    assert_eq!(
        app.metric(LOOKUPS).await - before,
        unknown.len() as f64,
        "400 uses of 20 unknown keys"
    );

    // A wrong checksum (one character changed) is refused without a lookup.
    let before = app.metric(LOOKUPS).await;
    let malformed: Vec<String> = unknown
        .iter()
        .map(|key| {
            let mut chars: Vec<char> = key.chars().collect();
            chars[10] = if chars[10] == 'a' { 'b' } else { 'a' };
            chars.into_iter().collect()
        })
        .collect();
    let replies = join_all(malformed.iter().map(|key| app.verify(key))).await;
    for reply in &replies {
        assert_error(reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
    }
    assert_eq!(app.metric(LOOKUPS).await - before, 0.0);
}

#[actix_web::test]
async fn last_used_at_is_written_in_batches_and_the_backlog_drains() {
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        settings.last_used.flush_interval = std::time::Duration::from_millis(200);
    })
    .await;
    let org = app.create_org("Acme").await;
    let created = app
        .create_key(&org.master_key, &org.project_id, "Busy")
        .await;
    let key = created.body["key"].as_str().unwrap().to_owned();
    let last_used_of = |listed: &crate::helpers::Reply| {
        listed.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["type"] == "project")
            .unwrap()["lastUsedAt"]
            .clone()
    };
    assert!(last_used_of(&app.list_keys(&org.master_key).await).is_null());

    for _ in 0..50 {
        assert_eq!(app.verify(&key).await.status, StatusCode::OK);
    }
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    // No authenticated request since: the backlog must have been flushed (allow a slow flush).
    let drained = eventually(Duration::from_secs(3), || async {
        app.metric("logstitch_last_used_pending").await == 0.0
    })
    .await;
    assert!(drained, "logstitch_last_used_pending never returned to 0");
    let last_used = last_used_of(&app.list_keys(&org.master_key).await);
    assert!(last_used.is_string(), "lastUsedAt not set: {last_used}");
}

#[actix_web::test]
async fn last_used_at_pending_at_shutdown_is_written() {
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        // No periodic flush during the test: only the shutdown flush can write it.
        settings.last_used.flush_interval = std::time::Duration::from_millis(600_000);
    })
    .await;
    let org = app.create_org("Acme").await;
    let created = app
        .create_key(&org.master_key, &org.project_id, "Last")
        .await;
    let key = created.body["key"].as_str().unwrap().to_owned();
    let key_id = app.verify(&key).await.body["key_id"]
        .as_str()
        .unwrap()
        .parse::<uuid::Uuid>()
        .unwrap();
    assert_eq!(app.metric("logstitch_last_used_pending").await, 2.0);

    app.stop().await;
    let client = app.db.client().await;
    let written = eventually(Duration::from_secs(5), || async {
        let row = client
            .query_one(
                "SELECT last_used_at IS NOT NULL FROM api_keys WHERE id = $1",
                &[&key_id],
            )
            .await
            .unwrap();
        row.get::<_, bool>(0)
    })
    .await;
    assert!(written, "the shutdown flush did not write lastUsedAt");
}

#[actix_web::test]
async fn idle_org_actors_stop_and_are_started_again_on_use() {
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        settings.actors.idle_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let org = app.create_org("Acme").await;
    let first = app
        .create_key(&org.master_key, &org.project_id, "One")
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert!(app.metric("logstitch_org_actors").await >= 1.0);

    let stopped = eventually(Duration::from_secs(4), || async {
        app.metric("logstitch_org_actors").await == 0.0
    })
    .await;
    assert!(stopped, "the idle actor never stopped");

    let second = app
        .create_key(&org.master_key, &org.project_id, "Two")
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{second:?}");
    assert_eq!(app.metric("logstitch_org_actors").await, 1.0);
    let listed = app.list_keys(&org.master_key).await;
    assert_eq!(listed.body["keys"].as_array().unwrap().len(), 3);
}

#[actix_web::test]
async fn a_busy_org_actor_answers_503_and_a_503_creates_nothing() {
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        // A mailbox of one and almost no patience: most concurrent creates give up.
        settings.actors.mailbox_capacity = std::num::NonZeroUsize::new(1).unwrap();
        settings.actors.ask_timeout = std::time::Duration::from_millis(1);
    })
    .await;
    let org = app.create_org("Acme").await;
    let names: Vec<String> = (0..30).map(|i| format!("burst {i}")).collect();
    let replies = join_all(
        names
            .iter()
            .map(|name| app.create_key(&org.master_key, &org.project_id, name)),
    )
    .await;
    let mut created: i64 = 0;
    for reply in &replies {
        if reply.status == StatusCode::CREATED {
            created += 1;
        } else {
            assert_error(
                reply,
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
            );
        }
    }
    assert!(
        created < replies.len() as i64,
        "no create was refused as busy"
    );
    // The server is still fine afterwards.
    assert_eq!(app.readyz_status().await, StatusCode::OK);

    // A client told "busy, retry shortly" must not find that a key was made anyway: its
    // plaintext is lost and it would count against the organization's limit. (Give any
    // message still being handled time to finish first.)
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    let stored: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM api_keys WHERE project_id IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored,
        created,
        "{created} creates answered 201, {} answered 503, but {stored} project keys exist",
        replies.len() as i64 - created
    );
}
