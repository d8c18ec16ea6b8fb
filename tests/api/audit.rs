//! The audit trail: one event per change, in the change's transaction, with who, from where
//! and which request; read back newest first a page at a time; append-only in the database.

use std::collections::HashSet;

use actix_web::http::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{
    api_timestamp, assert_error, assert_exact_fields, assert_validation_error, spawn_app,
    spawn_app_with, Reply, TestApp, TestDatabase, TestOrg,
};

const EVENT_FIELDS: &[&str] = &[
    "id",
    "action",
    "occurredAt",
    "actor",
    "target",
    "projectId",
    "ip",
    "userAgent",
    "requestId",
];

async fn events(app: &TestApp, token: &str, query: &str) -> Reply {
    app.request(
        Method::GET,
        &format!("/api/v1/audit-events{query}"),
        Some(token),
        None,
    )
    .await
}

/// Every event of the organization, newest first (asserts 200 and a single page).
async fn all_events(app: &TestApp, org: &TestOrg) -> Vec<Value> {
    let page = events(app, &org.master_key, "?limit=100").await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    assert_eq!(page.body["next_cursor"], Value::Null, "more than one page");
    page.body["events"].as_array().unwrap().clone()
}

/// A request with a chosen User-Agent; returns the reply.
async fn with_agent(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    agent: &str,
    body: Option<&Value>,
) -> Reply {
    let mut headers: Vec<(&str, Vec<u8>)> = vec![
        ("Authorization", format!("Bearer {token}").into_bytes()),
        ("User-Agent", agent.as_bytes().to_vec()),
    ];
    let bytes = match body {
        Some(body) => {
            headers.push(("Content-Type", b"application/json".to_vec()));
            serde_json::to_vec(body).unwrap()
        }
        None => Vec::new(),
    };
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    app.raw(method, path, &headers, bytes).await
}

fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[actix_web::test]
async fn every_change_writes_exactly_one_event_with_its_actor_request_and_address() {
    let app = spawn_app().await;
    let org_reply = with_agent(
        &app,
        Method::POST,
        "/admin/v1/organizations",
        &app.admin_token,
        "signup-bot/1.0",
        Some(&json!({"name": "Acme"})),
    )
    .await;
    assert_eq!(org_reply.status, StatusCode::CREATED, "{org_reply:?}");
    let org = TestOrg {
        organization_id: org_reply.body["organization_id"]
            .as_str()
            .unwrap()
            .to_owned(),
        project_id: org_reply.body["project_id"].as_str().unwrap().to_owned(),
        master_key: org_reply.body["master_key"].as_str().unwrap().to_owned(),
    };
    let master = app.verify(&org.master_key).await;
    let master_id = master.body["key_id"].as_str().unwrap().to_owned();

    let project = with_agent(
        &app,
        Method::POST,
        "/api/v1/projects",
        &org.master_key,
        "console/2",
        Some(&json!({"name": "Mobile"})),
    )
    .await;
    assert_eq!(project.status, StatusCode::CREATED, "{project:?}");
    let project_id = project.body["id"].as_str().unwrap().to_owned();
    let created = with_agent(
        &app,
        Method::POST,
        "/api/v1/keys",
        &org.master_key,
        "console/2",
        Some(&json!({"project_id": project_id, "type": "project", "name": "ingest"})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let project_key = created.body["key"].as_str().unwrap().to_owned();
    let key_id = app.verify(&project_key).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The project key rolls itself, then revokes itself (it still works during the overlap).
    let rolled = with_agent(
        &app,
        Method::POST,
        &format!("/api/v1/keys/{key_id}/roll"),
        &project_key,
        "rotator/3",
        None,
    )
    .await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{rolled:?}");
    let new_key = rolled.body["key"].as_str().unwrap().to_owned();
    let revoked = with_agent(
        &app,
        Method::DELETE,
        &format!("/api/v1/keys/{key_id}"),
        &project_key,
        "rotator/3",
        None,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    // A repeated DELETE changes nothing and writes nothing (the new key does it: the old one
    // is revoked now).
    let again = app.revoke_key(&new_key, &key_id).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");

    let listed = all_events(&app, &org).await;
    let actions: Vec<&str> = listed
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "key.revoked",
            "key.rolled",
            "key.created",
            "project.created",
            "organization.created"
        ],
        "newest first, one per change"
    );
    for event in &listed {
        assert_exact_fields(event, EVENT_FIELDS);
        assert!(Uuid::parse_str(event["id"].as_str().unwrap()).is_ok());
        api_timestamp(&event["occurredAt"]);
        assert_eq!(event["ip"], "127.0.0.1", "{event}");
    }
    let [revoke, roll, create, project_event, org_event] = &listed[..] else {
        unreachable!()
    };
    let project_actor = json!({"type": "project", "keyId": key_id, "prefix": &project_key[..7]});
    let master_actor =
        json!({"type": "master", "keyId": master_id, "prefix": &org.master_key[..7]});

    assert_eq!(org_event["actor"], json!({"type": "admin"}));
    assert_eq!(
        org_event["target"],
        json!({"type": "organization", "id": org.organization_id})
    );
    assert_eq!(org_event["projectId"], Value::Null);
    assert_eq!(org_event["requestId"], org_reply.body["request_id"]);
    assert_eq!(org_event["userAgent"], "signup-bot/1.0");

    assert_eq!(project_event["actor"], master_actor);
    assert_eq!(
        project_event["target"],
        json!({"type": "project", "id": project_id})
    );
    assert_eq!(project_event["projectId"], project_id.as_str());
    assert_eq!(project_event["requestId"], project.body["request_id"]);
    assert_eq!(project_event["userAgent"], "console/2");

    assert_eq!(create["actor"], master_actor);
    assert_eq!(create["target"], json!({"type": "key", "id": key_id}));
    assert_eq!(create["projectId"], project_id.as_str());
    assert_eq!(create["requestId"], created.body["request_id"]);

    assert_eq!(roll["actor"], project_actor);
    assert_eq!(roll["target"], json!({"type": "key", "id": key_id}));
    assert_eq!(roll["requestId"], rolled.body["request_id"]);
    assert_eq!(roll["userAgent"], "rotator/3");

    assert_eq!(revoke["actor"], project_actor);
    assert_eq!(revoke["target"], json!({"type": "key", "id": key_id}));
    assert_eq!(revoke["projectId"], project_id.as_str());
    assert_eq!(revoke["requestId"], revoked.body["request_id"]);

    // No key material anywhere in the events, as served or as stored.
    let served = events(&app, &org.master_key, "?limit=100").await.text;
    let stored: String = app
        .db
        .client()
        .await
        .query_one(
            "SELECT string_agg(row_to_json(audit_events)::text, '') FROM audit_events",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for key in [&org.master_key, &project_key, &new_key] {
        for text in [&served, &stored] {
            assert!(!text.contains(key.as_str()), "a plaintext key in an event");
            assert!(!text.contains(&hex_sha256(key)), "a key hash in an event");
        }
    }
    assert!(!stored.to_lowercase().contains("hash"), "{stored}");
}

#[actix_web::test]
async fn refused_changes_write_no_event() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (id, project_key) = app.new_project_key(&org).await;
    let count = all_events(&app, &org).await.len();
    let refused = [
        app.create_key(&org.master_key, &org.project_id, "").await,
        app.create_key(&project_key, &org.project_id, "not allowed")
            .await,
        app.create_key(&org.master_key, &Uuid::new_v4().to_string(), "no project")
            .await,
        app.revoke_key(&org.master_key, &Uuid::new_v4().to_string())
            .await,
        app.request(
            Method::POST,
            "/api/v1/projects",
            Some(&project_key),
            Some(&json!({"name": "x"})),
        )
        .await,
        app.request(
            Method::POST,
            &format!("/api/v1/keys/{id}/roll"),
            Some(&org.master_key),
            Some(&json!({"overlap_seconds": -5})),
        )
        .await,
    ];
    for reply in &refused {
        assert!(reply.status.is_client_error(), "{reply:?}");
    }
    assert_eq!(all_events(&app, &org).await.len(), count);
}

#[actix_web::test]
async fn the_address_is_the_one_the_server_determines() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db, |settings| {
        settings.server.trusted_proxies = serde_json::from_value(json!(["127.0.0.1/32"])).unwrap();
    })
    .await;
    let org = app.create_org("Acme").await;
    let forwarded = app
        .raw(
            Method::POST,
            "/api/v1/projects",
            &[
                (
                    "Authorization",
                    format!("Bearer {}", org.master_key).as_bytes(),
                ),
                ("Content-Type", b"application/json"),
                ("X-Forwarded-For", b"198.51.100.9, 203.0.113.7"),
            ],
            br#"{"name": "via proxy"}"#.to_vec(),
        )
        .await;
    assert_eq!(forwarded.status, StatusCode::CREATED, "{forwarded:?}");
    let newest = &all_events(&app, &org).await[0];
    assert_eq!(newest["ip"], "203.0.113.7");

    // Without trust, the claim is ignored: the peer is the client.
    let untrusting = spawn_app().await;
    let org = untrusting.create_org("Acme").await;
    let spoofed = untrusting
        .raw(
            Method::POST,
            "/api/v1/projects",
            &[
                (
                    "Authorization",
                    format!("Bearer {}", org.master_key).as_bytes(),
                ),
                ("Content-Type", b"application/json"),
                ("X-Forwarded-For", b"203.0.113.7"),
            ],
            br#"{"name": "spoofed"}"#.to_vec(),
        )
        .await;
    assert_eq!(spoofed.status, StatusCode::CREATED);
    assert_eq!(all_events(&untrusting, &org).await[0]["ip"], "127.0.0.1");
}

#[actix_web::test]
async fn only_a_master_key_reads_only_its_own_organizations_events() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let other = app.create_org("Other").await;
    let (_, project_key) = app.new_project_key(&org).await;
    assert_error(
        &events(&app, &project_key, "").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &app.request(Method::GET, "/api/v1/audit-events", None, None)
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let mine = all_events(&app, &org).await;
    let theirs = all_events(&app, &other).await;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["target"]["id"], other.organization_id.as_str());
    assert!(mine
        .iter()
        .all(|e| e["target"]["id"] != other.organization_id.as_str()));
}

#[actix_web::test]
async fn filters_limit_and_malformed_parameters() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (first, _) = app.new_project_key(&org).await;
    let (second, _) = app.new_project_key(&org).await;
    app.revoke_key(&org.master_key, &first).await;

    let created = events(&app, &org.master_key, "?action=key.created").await;
    let created = created.body["events"].as_array().unwrap();
    assert_eq!(created.len(), 2);
    assert!(created.iter().all(|e| e["action"] == "key.created"));
    let about_first = events(&app, &org.master_key, &format!("?target_id={first}")).await;
    let about_first: Vec<&str> = about_first.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(about_first, ["key.revoked", "key.created"]);
    let both = events(
        &app,
        &org.master_key,
        &format!("?target_id={second}&action=key.revoked"),
    )
    .await;
    assert_eq!(both.body["events"], json!([]));
    assert_eq!(both.body["next_cursor"], Value::Null);
    assert_exact_fields(&both.body, &["events", "next_cursor", "request_id"]);

    let one = events(&app, &org.master_key, "?limit=1").await;
    assert_eq!(one.body["events"].as_array().unwrap().len(), 1);
    assert!(one.body["next_cursor"].is_string());

    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=ten", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=1.5", "limit"),
        ("?limit=", "limit"),
        ("?cursor=abc", "cursor"),
        ("?cursor=", "cursor"),
        (
            "?cursor=zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            "cursor",
        ),
        ("?action=key.deleted", "action"),
        ("?action=", "action"),
        ("?target_id=42", "target_id"),
        ("?limit=1&limit=2", "limit"),
        ("?actor=admin", "actor"),
    ] {
        let reply = events(&app, &org.master_key, query).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error");
        assert_eq!(
            assert_validation_error(&reply),
            [field],
            "{query}: {reply:?}"
        );
    }
}

#[actix_web::test]
async fn the_default_page_is_50_and_the_largest_100() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    for i in 0..110 {
        let reply = app
            .request(
                Method::POST,
                "/api/v1/projects",
                Some(&org.master_key),
                Some(&json!({"name": format!("p{i}")})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let default = events(&app, &org.master_key, "").await;
    assert_eq!(default.body["events"].as_array().unwrap().len(), 50);
    let largest = events(&app, &org.master_key, "?limit=100").await;
    assert_eq!(largest.body["events"].as_array().unwrap().len(), 100);
    assert!(largest.body["next_cursor"].is_string());
}

#[actix_web::test]
async fn walking_250_events_two_per_page_while_inserts_happen_sees_each_older_event_once() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    // 249 projects + the organization: 250 events.
    for i in 0..249 {
        let reply = app
            .request(
                Method::POST,
                "/api/v1/projects",
                Some(&org.master_key),
                Some(&json!({"name": format!("p{i}")})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let older: Vec<String> = {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let query = match &cursor {
                Some(cursor) => format!("?limit=100&cursor={cursor}"),
                None => "?limit=100".to_owned(),
            };
            let page = events(&app, &org.master_key, &query).await;
            for event in page.body["events"].as_array().unwrap() {
                ids.push(event["id"].as_str().unwrap().to_owned());
            }
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        ids
    };
    assert_eq!(older.len(), 250);

    // Walk 2 per page, writing a new event between every two pages.
    let mut seen: Vec<String> = Vec::new();
    let mut last_position: Option<(chrono::DateTime<chrono::Utc>, String)> = None;
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &cursor {
            Some(cursor) => format!("?limit=2&cursor={cursor}"),
            None => "?limit=2".to_owned(),
        };
        let page = events(&app, &org.master_key, &query).await;
        assert_eq!(page.status, StatusCode::OK, "{page:?}");
        pages += 1;
        for event in page.body["events"].as_array().unwrap() {
            let position = (
                api_timestamp(&event["occurredAt"]),
                event["id"].as_str().unwrap().to_owned(),
            );
            if let Some(last) = &last_position {
                assert!(
                    position.0 <= last.0,
                    "not newest first: {position:?} after {last:?}"
                );
            }
            last_position = Some(position);
            seen.push(event["id"].as_str().unwrap().to_owned());
        }
        if pages % 2 == 0 {
            let reply = app
                .request(
                    Method::POST,
                    "/api/v1/projects",
                    Some(&org.master_key),
                    Some(&json!({"name": format!("during {pages}")})),
                )
                .await;
            assert_eq!(reply.status, StatusCode::CREATED);
        }
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "an event was seen twice");
    // The walk began before the new events: it sees exactly the older ones.
    assert_eq!(seen, older, "every older event exactly once, in order");
    assert_eq!(pages, 125);
}

#[actix_web::test]
async fn the_table_refuses_update_delete_and_truncate() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let client = app.db.client().await;
    for statement in [
        "UPDATE audit_events SET action = 'key.created'",
        "UPDATE audit_events SET ip = NULL",
        "DELETE FROM audit_events",
        "TRUNCATE audit_events",
    ] {
        let error = client.execute(statement, &[]).await.unwrap_err();
        assert!(
            error.to_string().contains("append-only")
                || format!("{error:?}").contains("append-only"),
            "{statement}: {error:?}"
        );
    }
    let kept = all_events(&app, &org).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["action"], "organization.created");
}
