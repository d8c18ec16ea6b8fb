//! The master-key roll (issue 22): `POST /admin/v1/organizations/{id}/master-key` and
//! `logstitch-gateway org master-key roll --org ID`. The new key is shown once; the old one is
//! revoked as DELETE revokes a key, refused on every instance by the time the answer comes.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::cli::gateway;
use crate::helpers::{
    assert_error, assert_exact_fields, assert_request_id, assert_validation_error, spawn_app_with,
    spawn_isolated_app_with, spawn_isolated_pair, Reply, TestApp, TestDatabase,
};

async fn roll(app: &TestApp, token: Option<&str>, org_id: &str) -> Reply {
    app.request(
        Method::POST,
        &format!("/admin/v1/organizations/{org_id}/master-key"),
        token,
        None,
    )
    .await
}

/// Rolls through the admin API and checks the 201's shape; returns the new master key.
async fn roll_ok(app: &TestApp, org_id: &str, old_key: &str) -> (String, Reply) {
    let reply = roll(app, Some(&app.admin_token), org_id).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert_exact_fields(
        &reply.body,
        &["organization_id", "master_key", "request_id"],
    );
    assert_request_id(&reply);
    assert_eq!(reply.body["organization_id"], org_id);
    let new_key = reply.body["master_key"].as_str().unwrap().to_owned();
    assert!(new_key.starts_with("mk_"), "{new_key}");
    assert_ne!(new_key, old_key);
    (new_key, reply)
}

/// Every audit event of the organization, newest first, read with `token`.
async fn events(app: &TestApp, token: &str) -> Vec<Value> {
    let page = app
        .request(
            Method::GET,
            "/api/v1/audit-events?limit=100",
            Some(token),
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    page.body["events"].as_array().unwrap().clone()
}

/// (action, target id) of each event, newest first.
fn summary(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|event| {
            (
                event["action"].as_str().unwrap().to_owned(),
                event["target"]["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn key_id_of(app: &TestApp, key: &str) -> String {
    let verified = app.verify(key).await;
    assert_eq!(verified.status, StatusCode::OK, "{verified:?}");
    assert_eq!(verified.body["type"], "master", "{verified:?}");
    verified.body["key_id"].as_str().unwrap().to_owned()
}

/// A connection named as a listening instance that never acknowledges: in every revoke's
/// census, so a revoker that waits for acks waits for it until the ack timeout.
pub async fn silent_listener(db: &TestDatabase, instance_id: &str) -> tokio_postgres::Client {
    let mut config: tokio_postgres::Config = db.url.parse().expect("the test URL parses");
    config.application_name(format!("logstitch-listener-{instance_id}"));
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect the silent listener");
    actix_rt::spawn(connection);
    client
}

// ---- The admin API ----

#[actix_web::test]
async fn an_admin_roll_is_refused_on_both_instances_at_once_and_the_new_key_works_on_both() {
    let (a, b) = spawn_isolated_pair(|_| {}).await;
    let org = a.create_org("Acme").await;
    let mut current = org.master_key.clone();
    // Rolling again revokes the previous roll's key: several rounds.
    for round in 0..3 {
        // Both instances have the current key cached as valid (the second use is a hit).
        for app in [&a, &b] {
            for _ in 0..2 {
                let before = app.verify(&current).await;
                assert_eq!(before.status, StatusCode::OK, "round {round}: {before:?}");
            }
        }
        let (new_key, _) = roll_ok(&a, &org.organization_id, &current).await;
        for app in [&b, &a] {
            assert_error(
                &app.verify(&current).await,
                StatusCode::UNAUTHORIZED,
                "key_revoked",
            );
        }
        for app in [&a, &b] {
            let verified = app.verify(&new_key).await;
            assert_eq!(
                verified.status,
                StatusCode::OK,
                "round {round}: {verified:?}"
            );
            assert_eq!(verified.body["type"], "master");
            assert_eq!(
                verified.body["organization_id"],
                org.organization_id.as_str()
            );
            // A master key's powers: it lists the organization's keys.
            assert_eq!(app.list_keys(&new_key).await.status, StatusCode::OK);
        }
        current = new_key;
    }
    // One active master key, the three before it revoked.
    let keys = a.key_items(&current).await;
    assert_eq!(keys.len(), 4, "{keys:?}");
    let active: Vec<&Value> = keys.iter().filter(|k| k["revokedAt"].is_null()).collect();
    assert_eq!(active.len(), 1, "{keys:?}");
    assert_eq!(active[0]["prefix"], &current[..7]);
    assert!(keys
        .iter()
        .all(|k| k["type"] == "master" && k["name"] == "Master key"));
}

#[actix_web::test]
async fn an_admin_roll_writes_key_revoked_and_key_created_by_the_admin_and_queues_their_webhooks() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db.clone(), |_| {}).await;
    let org = app.create_org("Acme").await;
    let old_id = key_id_of(&app, &org.master_key).await;
    let client = db.client().await;
    client
        .execute(
            "INSERT INTO webhook_endpoints (id, organization_id, url, events, secret)
             VALUES ($1, $2, 'https://hooks.example.invalid/in', ARRAY['key.revoked', 'key.created'],
                     decode(repeat('ab', 32), 'hex'))",
            &[
                &Uuid::new_v4(),
                &Uuid::parse_str(&org.organization_id).unwrap(),
            ],
        )
        .await
        .unwrap();

    let (new_key, reply) = roll_ok(&app, &org.organization_id, &org.master_key).await;
    let new_id = key_id_of(&app, &new_key).await;
    let listed = events(&app, &new_key).await;
    assert_eq!(
        summary(&listed),
        [
            ("key.created".to_owned(), new_id.clone()),
            ("key.revoked".to_owned(), old_id.clone()),
            (
                "organization.created".to_owned(),
                org.organization_id.clone()
            ),
        ]
    );
    for event in &listed[..2] {
        assert_eq!(event["actor"], json!({"type": "admin"}), "{event}");
        assert_eq!(event["target"]["type"], "key", "{event}");
        assert_eq!(event["projectId"], Value::Null, "{event}");
        assert_eq!(event["requestId"], reply.body["request_id"], "{event}");
    }
    // Each event queued its delivery, in the roll's transaction.
    let queued: Vec<(String, Uuid)> = client
        .query(
            "SELECT event_type, event_id FROM webhook_deliveries ORDER BY commit_order",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let event_id = |i: usize| Uuid::parse_str(listed[i]["id"].as_str().unwrap()).unwrap();
    assert_eq!(
        queued,
        [
            ("key.revoked".to_owned(), event_id(1)),
            ("key.created".to_owned(), event_id(0)),
        ]
    );
    // The new key's plaintext is nowhere in the database.
    let stored: String = client
        .query_one(
            "SELECT concat((SELECT string_agg(row_to_json(k)::text, '') FROM api_keys k),
                           (SELECT string_agg(row_to_json(e)::text, '') FROM audit_events e))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !stored.contains(&new_key),
        "the new master key is stored in plaintext"
    );
}

#[actix_web::test]
async fn an_organization_whose_master_key_was_revoked_gets_a_new_one_with_no_key_revoked_event() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db.clone(), |_| {}).await;
    let org = app.create_org("Acme").await;
    // A leak revoked it (as secret scanning will): nothing of the organization works now.
    db.client()
        .await
        .execute("UPDATE api_keys SET revoked_at = now()", &[])
        .await
        .unwrap();
    assert_error(
        &app.verify(&org.master_key).await,
        StatusCode::UNAUTHORIZED,
        "key_revoked",
    );
    let (new_key, _) = roll_ok(&app, &org.organization_id, &org.master_key).await;
    let new_id = key_id_of(&app, &new_key).await;
    let listed = events(&app, &new_key).await;
    assert_eq!(
        summary(&listed),
        [
            ("key.created".to_owned(), new_id),
            (
                "organization.created".to_owned(),
                org.organization_id.clone()
            ),
        ]
    );
}

#[actix_web::test]
async fn an_admin_roll_answers_only_after_every_listener_acknowledged_or_the_ack_timeout() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db.clone(), |settings| {
        settings.listener.ack_timeout = Duration::from_millis(1500);
    })
    .await;
    let org = app.create_org("Acme").await;
    let _silent = silent_listener(&db, "silent1").await;
    let started = Instant::now();
    let (new_key, _) = roll_ok(&app, &org.organization_id, &org.master_key).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "answered after {took:?}, without waiting for the silent listener"
    );
    assert_eq!(
        app.metric("logstitch_revocation_ack_timeouts_total").await,
        1.0
    );
    assert_eq!(app.verify(&new_key).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn an_unknown_organization_is_404_and_a_malformed_id_400() {
    let app = spawn_app_with(TestDatabase::create().await, |_| {}).await;
    let org = app.create_org("Acme").await;
    let before = app.row_counts().await;
    let unknown = roll(&app, Some(&app.admin_token), &Uuid::new_v4().to_string()).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
    assert_ne!(unknown.body["error"]["message"], "No such route");
    let malformed = roll(&app, Some(&app.admin_token), "not-a-uuid").await;
    assert_eq!(assert_validation_error(&malformed), ["id"]);
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.verify(&org.master_key).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn a_wrong_or_missing_admin_token_is_401_and_changes_nothing() {
    let app = spawn_app_with(TestDatabase::create().await, |_| {}).await;
    let org = app.create_org("Acme").await;
    let before = app.row_counts().await;
    let wrong_token = format!("{}x", app.admin_token);
    for token in [
        None,
        Some("wrong"),
        Some(wrong_token.as_str()),
        Some(org.master_key.as_str()),
    ] {
        for id in [org.organization_id.as_str(), "not-a-uuid"] {
            let reply = roll(&app, token, id).await;
            assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.verify(&org.master_key).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn without_an_admin_token_the_roll_route_does_not_exist() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db.clone(), |settings| {
        settings.admin.token = SecretString::from("")
    })
    .await;
    let org = run_ok(gateway(&db).args(["org", "create", "--name", "Acme"]));
    let org_id = org["organization_id"].as_str().unwrap();
    let before = app.row_counts().await;
    for token in [None, Some(""), Some("anything")] {
        let reply = roll(&app, token, org_id).await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
        assert_eq!(reply.body["error"]["message"], "No such route", "{reply:?}");
    }
    assert_eq!(app.row_counts().await, before);
}

// ---- The CLI ----

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the command; asserts success and exactly one JSON line on stdout; returns it.
fn run_ok(command: &mut Command) -> Value {
    let output = command.output().expect("the binary runs");
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        stderr(&output)
    );
    let out = String::from_utf8(output.stdout).expect("UTF-8");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stdout: {out:?}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

fn roll_command(db: &TestDatabase, org_id: &str) -> Command {
    let mut command = gateway(db);
    command.args(["org", "master-key", "roll", "--org", org_id]);
    command
}

#[actix_web::test]
async fn a_cli_roll_prints_one_line_and_a_running_instance_refuses_the_old_key_at_once() {
    let db = TestDatabase::create().await;
    // Its own thread: it acknowledges while this test waits for the binary.
    let app = spawn_isolated_app_with(db.clone(), |_| {}).await;
    let org = app.create_org("Acme").await;
    let old_id = key_id_of(&app, &org.master_key).await;
    let mut current = org.master_key.clone();
    let mut ids = vec![old_id];
    for round in 0..2 {
        assert_eq!(app.verify(&current).await.status, StatusCode::OK);
        assert_eq!(app.verify(&current).await.status, StatusCode::OK);
        let started = Instant::now();
        // A long ack timeout: only the instance's ack ends the wait early.
        let output = roll_command(&db, &org.organization_id)
            .env("LOGSTITCH__LISTENER__ACK_TIMEOUT_MS", "20000")
            .output()
            .expect("the binary runs");
        let took = started.elapsed();
        let log = stderr(&output);
        assert!(output.status.success(), "round {round}: {log}");
        let out = String::from_utf8(output.stdout).unwrap();
        assert_eq!(out.lines().count(), 1, "one line on stdout: {out:?}");
        let printed: Value = serde_json::from_str(out.trim_end()).expect("JSON");
        assert_exact_fields(&printed, &["master_key", "organization_id"]);
        assert_eq!(printed["organization_id"], org.organization_id.as_str());
        let new_key = printed["master_key"].as_str().unwrap().to_owned();
        assert!(
            new_key.starts_with("mk_") && new_key != current,
            "{new_key}"
        );
        assert!(
            took < Duration::from_secs(10),
            "round {round}: the instance's ack was not heard ({took:?}): {log}"
        );
        assert!(!log.contains("not every instance"), "{log}");
        assert!(!log.contains(&new_key), "the new key in the log: {log}");

        assert_error(
            &app.verify(&current).await,
            StatusCode::UNAUTHORIZED,
            "key_revoked",
        );
        ids.push(key_id_of(&app, &new_key).await);
        current = new_key;
    }
    let listed = events(&app, &current).await;
    assert_eq!(
        summary(&listed[..4]),
        [
            ("key.created".to_owned(), ids[2].clone()),
            ("key.revoked".to_owned(), ids[1].clone()),
            ("key.created".to_owned(), ids[1].clone()),
            ("key.revoked".to_owned(), ids[0].clone()),
        ]
    );
    for event in &listed[..4] {
        assert_eq!(event["actor"], json!({"type": "cli"}), "{event}");
        assert_eq!(event["requestId"], Value::Null, "{event}");
    }
}

#[actix_web::test]
async fn a_cli_roll_waits_for_a_silent_listener_until_the_ack_timeout_and_names_it() {
    let db = TestDatabase::create().await;
    let org = run_ok(gateway(&db).args(["org", "create", "--name", "Acme"]));
    let _silent = silent_listener(&db, "silent2").await;
    let started = Instant::now();
    let output = roll_command(&db, org["organization_id"].as_str().unwrap())
        .env("LOGSTITCH__LISTENER__ACK_TIMEOUT_MS", "1500")
        .output()
        .expect("the binary runs");
    let took = started.elapsed();
    let log = stderr(&output);
    assert!(output.status.success(), "{log}");
    assert!(took >= Duration::from_millis(1500), "{took:?}: {log}");
    assert!(log.contains("not every instance acknowledged"), "{log}");
    assert!(log.contains("silent2"), "{log}");
}

#[actix_web::test]
async fn a_cli_roll_of_an_unknown_or_malformed_organization_fails_with_nothing_on_stdout() {
    let db = TestDatabase::create().await;
    let org = run_ok(gateway(&db).args(["org", "create", "--name", "Acme"]));
    let unknown = Uuid::new_v4().to_string();
    for (id, message) in [
        (
            unknown.as_str(),
            format!("organization {unknown} does not exist"),
        ),
        (
            "not-a-uuid",
            "--org must be an organization UUID".to_owned(),
        ),
        ("", "--org must be an organization UUID".to_owned()),
    ] {
        let output = roll_command(&db, id).output().expect("the binary runs");
        assert!(!output.status.success(), "{id:?} succeeded");
        assert!(output.stdout.is_empty(), "{id:?}: something on stdout");
        assert!(
            stderr(&output).contains(&message),
            "{id:?}: {}",
            stderr(&output)
        );
    }
    // Nothing changed: the first master key still works.
    let app = spawn_app_with(db.clone(), |_| {}).await;
    let master_key = org["master_key"].as_str().unwrap();
    assert_eq!(app.verify(master_key).await.status, StatusCode::OK);
    assert_eq!(events(&app, master_key).await.len(), 1);
}
