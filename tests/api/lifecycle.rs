//! Key lifecycle: keys that expire (on every route and instance, cached or not) and keys
//! rolled with an overlap (one transaction, acknowledged by every instance like a revoke).

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use chrono::{DateTime, SecondsFormat, Utc};
use futures_util::future::join_all;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::gateway::{route, start_upstream};
use crate::helpers::{
    api_timestamp, assert_error, assert_exact_fields, assert_validation_error, spawn_app,
    spawn_app_with, spawn_isolated_pair, TestApp, TestDatabase, TestOrg,
};

const CREATED_FIELDS: &[&str] = &["key", "prefix", "type", "name", "scopes", "request_id"];
const ROLLED_FIELDS: &[&str] = &["key", "prefix", "type", "name", "request_id", "replaces"];

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Creates a project key with `expires_at` as given; returns the reply.
async fn create_expiring(
    app: &TestApp,
    org: &TestOrg,
    name: &str,
    expires_at: Value,
) -> crate::helpers::Reply {
    app.request(
        Method::POST,
        "/api/v1/keys",
        Some(&org.master_key),
        Some(
            &json!({"project_id": org.project_id, "type": "project", "name": name,
                     "expires_at": expires_at}),
        ),
    )
    .await
}

/// A key expiring at `at`: (id, plaintext).
async fn key_expiring_at(app: &TestApp, org: &TestOrg, at: DateTime<Utc>) -> (String, String) {
    let created = create_expiring(app, org, "expiring", json!(rfc3339(at))).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let key = created.body["key"].as_str().unwrap().to_owned();
    let verified = app.verify(&key).await;
    assert_eq!(verified.status, StatusCode::OK, "{verified:?}");
    (verified.body["key_id"].as_str().unwrap().to_owned(), key)
}

async fn roll(
    app: &TestApp,
    token: &str,
    key_id: &str,
    body: Option<Value>,
) -> crate::helpers::Reply {
    app.request(
        Method::POST,
        &format!("/api/v1/keys/{key_id}/roll"),
        Some(token),
        body.as_ref(),
    )
    .await
}

/// Sleeps until `at` has passed (plus a little, for the clock reads on each side).
async fn sleep_past(at: DateTime<Utc>) {
    let left = (at - Utc::now()).to_std().unwrap_or_default();
    actix_rt::time::sleep(left + Duration::from_millis(50)).await;
}

#[actix_web::test]
async fn a_key_created_with_an_expiry_shows_it_in_list_and_verify_and_the_201_is_unchanged() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let created =
        create_expiring(&app, &org, "CI", json!("2030-06-30T12:00:00.123456+02:00")).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_exact_fields(&created.body, CREATED_FIELDS);
    let key = created.body["key"].as_str().unwrap();

    // UTC, milliseconds (the offset applied, the microseconds dropped).
    let verified = app.verify(key).await;
    assert_eq!(verified.status, StatusCode::OK, "{verified:?}");
    assert_eq!(verified.body["expires_at"], "2030-06-30T10:00:00.123Z");
    let id = verified.body["key_id"].as_str().unwrap();
    let item = app.key_item(&org.master_key, id).await;
    assert_eq!(item["expiresAt"], "2030-06-30T10:00:00.123Z");
    // A key without an expiry: null in both.
    let master = app.key_items(&org.master_key).await;
    let master = master.iter().find(|k| k["type"] == "master").unwrap();
    assert_eq!(master["expiresAt"], Value::Null);
    assert_eq!(
        app.verify(&org.master_key).await.body["expires_at"],
        Value::Null
    );

    // `expiresAt` comes right after `revokedAt` in each item as sent.
    let listed = app.list_keys(&org.master_key).await;
    let text = &listed.text;
    let revoked_at = text.find("\"revokedAt\"").unwrap();
    let expires_at = text.find("\"expiresAt\"").unwrap();
    assert!(revoked_at < expires_at, "{text}");
    let between = &text[revoked_at..expires_at];
    assert_eq!(
        between.matches(':').count(),
        1,
        "nothing between them: {between}"
    );

    // Null is the same as leaving it out.
    let never = create_expiring(&app, &org, "never", Value::Null).await;
    assert_eq!(never.status, StatusCode::CREATED, "{never:?}");
    let never = app.verify(never.body["key"].as_str().unwrap()).await;
    assert_eq!(never.body["expires_at"], Value::Null);
}

#[actix_web::test]
async fn a_bad_expires_at_is_a_validation_error_naming_it_and_changes_nothing() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let now = Utc::now();
    let cases = [
        json!(rfc3339(now - chrono::Duration::seconds(1))),
        json!(rfc3339(now)),
        json!("2020-01-01T00:00:00Z"),
        json!(rfc3339(now + chrono::Duration::days(3653 + 2))),
        json!("2030-01-01T00:00:00"),
        json!("2030-01-01"),
        json!("next week"),
        json!(""),
        json!(1893456000),
        json!(true),
        json!({"at": "2030-01-01T00:00:00Z"}),
        json!(["2030-01-01T00:00:00Z"]),
    ];
    let before = app.row_counts().await;
    for expires_at in cases {
        let reply = create_expiring(&app, &org, "bad", expires_at.clone()).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error");
        let fields = assert_validation_error(&reply);
        assert_eq!(fields, ["expires_at"], "{expires_at}: {reply:?}");
    }
    assert_eq!(app.row_counts().await, before);
    // Ten years ahead (less a minute) is still fine.
    let far = create_expiring(
        &app,
        &org,
        "far",
        json!(rfc3339(
            now + chrono::Duration::days(3652) - chrono::Duration::minutes(1)
        )),
    )
    .await;
    assert_eq!(far.status, StatusCode::CREATED, "{far:?}");
}

#[actix_web::test]
async fn a_key_expiring_while_cached_on_two_instances_is_refused_by_both_on_every_route() {
    let upstream = start_upstream();
    let url = upstream.url.clone();
    let (a, b) = spawn_isolated_pair(move |settings| {
        settings.gateway.routes = vec![route("/api/v1/events", &url, &["project"], 1000)];
    })
    .await;
    let org = a.create_org("Acme").await;
    let expires = Utc::now() + chrono::Duration::seconds(3);
    let (_, key) = key_expiring_at(&a, &org, expires).await;
    for app in [&*a, &*b] {
        // Cached as valid: the second use is a cache hit.
        for _ in 0..2 {
            assert_eq!(app.verify(&key).await.status, StatusCode::OK);
        }
        let forwarded = app
            .request(Method::GET, "/api/v1/events", Some(&key), None)
            .await;
        assert_eq!(forwarded.status, StatusCode::CREATED, "{forwarded:?}");
    }
    let expired_before = a
        .metric("logstitch_auth_requests_total{result=\"expired\"}")
        .await;
    sleep_past(expires).await;
    let hits = upstream.hits.load(std::sync::atomic::Ordering::SeqCst);
    for app in [&*a, &*b] {
        for (method, path) in [
            (Method::GET, "/api/v1/auth/verify"),
            (Method::GET, "/api/v1/keys"),
            (
                Method::POST,
                "/api/v1/keys/00000000-0000-0000-0000-000000000000/roll",
            ),
            (Method::GET, "/api/v1/events"),
        ] {
            let reply = app.request(method.clone(), path, Some(&key), None).await;
            assert_error(&reply, StatusCode::UNAUTHORIZED, "key_expired");
            assert_eq!(reply.body["error"]["message"], "API key has expired");
        }
    }
    assert_eq!(
        upstream.hits.load(std::sync::atomic::Ordering::SeqCst),
        hits,
        "an expired key reached the upstream"
    );
    let expired_after = a
        .metric("logstitch_auth_requests_total{result=\"expired\"}")
        .await;
    assert_eq!(expired_after - expired_before, 4.0);
}

#[actix_web::test]
async fn expired_keys_leave_the_active_key_count_and_can_still_be_revoked() {
    let db = TestDatabase::create().await;
    // The master key and two more.
    let app = spawn_app_with(db, |settings| {
        settings.keys.max_active_per_org = std::num::NonZeroU32::new(3).unwrap();
    })
    .await;
    let org = app.create_org("Acme").await;
    let expires = Utc::now() + chrono::Duration::seconds(2);
    let (expiring_id, _) = key_expiring_at(&app, &org, expires).await;
    app.new_project_key(&org).await;
    let full = app
        .create_key(&org.master_key, &org.project_id, "one too many")
        .await;
    assert_error(&full, StatusCode::CONFLICT, "conflict");

    sleep_past(expires).await;
    let room = app
        .create_key(&org.master_key, &org.project_id, "in its place")
        .await;
    assert_eq!(room.status, StatusCode::CREATED, "{room:?}");

    let revoked = app.revoke_key(&org.master_key, &expiring_id).await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    assert_eq!(revoked.body["revoked"], true);
    let item = app.key_item(&org.master_key, &expiring_id).await;
    api_timestamp(&item["revokedAt"]);
    api_timestamp(&item["expiresAt"]);
}

#[actix_web::test]
async fn a_roll_answers_a_new_key_of_the_same_project_and_name_and_the_old_expires_after_the_overlap(
) {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let project = app
        .request(
            Method::POST,
            "/api/v1/projects",
            Some(&org.master_key),
            Some(&json!({"name": "Mobile"})),
        )
        .await;
    let project_id = project.body["id"].as_str().unwrap();
    let created = app
        .create_key(&org.master_key, project_id, "Production API Key")
        .await;
    let old_key = created.body["key"].as_str().unwrap().to_owned();
    let old_id = app.verify(&old_key).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let before = Utc::now();
    let rolled = roll(&app, &org.master_key, &old_id, None).await;
    let after = Utc::now();
    assert_eq!(rolled.status, StatusCode::CREATED, "{rolled:?}");
    assert_exact_fields(&rolled.body, ROLLED_FIELDS);
    assert_exact_fields(&rolled.body["replaces"], &["id", "expiresAt"]);
    assert_eq!(rolled.body["replaces"]["id"], old_id.as_str());
    assert_eq!(rolled.body["type"], "project");
    assert_eq!(rolled.body["name"], "Production API Key");
    // The default overlap: an hour.
    let old_expires = api_timestamp(&rolled.body["replaces"]["expiresAt"]);
    let hour = chrono::Duration::seconds(3600);
    assert!(
        old_expires >= before + hour - chrono::Duration::milliseconds(1),
        "{old_expires}"
    );
    assert!(old_expires <= after + hour, "{old_expires}");

    let new_key = rolled.body["key"].as_str().unwrap();
    assert_ne!(new_key, old_key);
    assert!(new_key.starts_with("pk_"));
    assert_eq!(rolled.body["prefix"], &new_key[..7]);
    let new_identity = app.verify(new_key).await;
    assert_eq!(new_identity.status, StatusCode::OK, "{new_identity:?}");
    assert_eq!(new_identity.body["project_id"], project_id);
    assert_eq!(new_identity.body["expires_at"], Value::Null);
    // Both work during the overlap; the list shows both, the old one with its new expiry.
    let old_identity = app.verify(&old_key).await;
    assert_eq!(old_identity.status, StatusCode::OK);
    assert_eq!(
        old_identity.body["expires_at"],
        rolled.body["replaces"]["expiresAt"]
    );
    let new_id = new_identity.body["key_id"].as_str().unwrap();
    let new_item = app.key_item(&org.master_key, new_id).await;
    assert_eq!(new_item["name"], "Production API Key");
    assert_eq!(new_item["expiresAt"], Value::Null);
    let old_item = app.key_item(&org.master_key, &old_id).await;
    assert_eq!(old_item["expiresAt"], rolled.body["replaces"]["expiresAt"]);
    assert!(!app.list_keys(&org.master_key).await.text.contains(new_key));
    // Stored as any key is: its SHA-256.
    let stored = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM api_keys WHERE key_hash = sha256(convert_to($1, 'UTF8'))",
            &[&new_key],
        )
        .await
        .unwrap();
    assert_eq!(stored.get::<_, i64>(0), 1);
}

#[actix_web::test]
async fn a_roll_never_extends_an_expiry_and_an_overlap_of_zero_ends_the_old_key_at_once() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let soon = Utc::now() + chrono::Duration::seconds(30);
    let (soon_id, _) = key_expiring_at(&app, &org, soon).await;
    let rolled = roll(
        &app,
        &org.master_key,
        &soon_id,
        Some(json!({"overlap_seconds": 3600})),
    )
    .await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{rolled:?}");
    assert_eq!(rolled.body["replaces"]["expiresAt"], rfc3339(soon));
    // Nor does the new key outlive it: a holder of an expiring key can't roll it into one
    // that never expires (here the key rolls itself).
    let (own_id, own_key) = key_expiring_at(&app, &org, soon).await;
    let rolled_itself = roll(&app, &own_key, &own_id, Some(json!({"overlap_seconds": 0}))).await;
    assert_eq!(
        rolled_itself.status,
        StatusCode::CREATED,
        "{rolled_itself:?}"
    );
    for new_key in [&rolled.body["key"], &rolled_itself.body["key"]] {
        let new_identity = app.verify(new_key.as_str().unwrap()).await;
        assert_eq!(
            new_identity.body["expires_at"],
            rfc3339(soon),
            "{new_identity:?}"
        );
    }

    let (now_id, now_key) = app.new_project_key(&org).await;
    let rolled = roll(
        &app,
        &org.master_key,
        &now_id,
        Some(json!({"overlap_seconds": 0})),
    )
    .await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{rolled:?}");
    assert_error(
        &app.verify(&now_key).await,
        StatusCode::UNAUTHORIZED,
        "key_expired",
    );
    let new_key = rolled.body["key"].as_str().unwrap();
    assert_eq!(app.verify(new_key).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn a_roll_with_a_one_second_overlap_is_refused_by_both_instances_right_after_it() {
    let (a, b) = spawn_isolated_pair(|_| {}).await;
    let org = a.create_org("Acme").await;
    let (old_id, old_key) = a.new_project_key(&org).await;
    for app in [&*a, &*b] {
        for _ in 0..2 {
            assert_eq!(app.verify(&old_key).await.status, StatusCode::OK);
        }
    }
    let rolled = roll(
        &a,
        &org.master_key,
        &old_id,
        Some(json!({"overlap_seconds": 1})),
    )
    .await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{rolled:?}");
    let ends = api_timestamp(&rolled.body["replaces"]["expiresAt"]);
    let new_key = rolled.body["key"].as_str().unwrap();
    // B learnt the old key's new expiry before the roll answered: its cached entry (without
    // an expiry) is gone, whatever B's cache TTL.
    let on_b = b.verify(&old_key).await;
    if Utc::now() < ends {
        assert_eq!(on_b.status, StatusCode::OK, "{on_b:?}");
        assert_eq!(
            on_b.body["expires_at"],
            rolled.body["replaces"]["expiresAt"]
        );
    }
    sleep_past(ends).await;
    for app in [&*a, &*b] {
        assert_error(
            &app.verify(&old_key).await,
            StatusCode::UNAUTHORIZED,
            "key_expired",
        );
        assert_eq!(app.verify(new_key).await.status, StatusCode::OK);
    }
}

#[actix_web::test]
async fn roll_permissions_are_those_of_revoke() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let other = app.create_org("Other").await;
    let (own_id, own_key) = app.new_project_key(&org).await;
    let (sibling_id, _) = app.new_project_key(&org).await;
    let second_project = app
        .request(
            Method::POST,
            "/api/v1/projects",
            Some(&org.master_key),
            Some(&json!({"name": "B"})),
        )
        .await;
    let second_project = second_project.body["id"].as_str().unwrap();
    let elsewhere = app
        .create_key(&org.master_key, second_project, "elsewhere")
        .await;
    let elsewhere_id = app
        .verify(elsewhere.body["key"].as_str().unwrap())
        .await
        .body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (foreign_id, _) = app.new_project_key(&other).await;
    let master_id = app.verify(&org.master_key).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let before = app.row_counts().await;
    // A project key: not another project's keys, not another organization's, not a master.
    for id in [&elsewhere_id, &foreign_id, &master_id] {
        assert_error(
            &roll(&app, &own_key, id, None).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    // A master key: not another organization's keys; a master key target is forbidden.
    assert_error(
        &roll(&app, &org.master_key, &foreign_id, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &roll(&app, &org.master_key, &Uuid::new_v4().to_string(), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &roll(&app, &org.master_key, &master_id, None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let bad_id = roll(&app, &org.master_key, "not-a-uuid", None).await;
    assert_error(&bad_id, StatusCode::BAD_REQUEST, "validation_error");
    assert_eq!(assert_validation_error(&bad_id), ["id"]);
    assert_eq!(
        app.row_counts().await,
        before,
        "a refused roll changed something"
    );

    // A project key may roll a sibling of its project, and itself.
    assert_eq!(
        roll(&app, &own_key, &sibling_id, None).await.status,
        StatusCode::CREATED
    );
    let itself = roll(&app, &own_key, &own_id, None).await;
    assert_eq!(itself.status, StatusCode::CREATED, "{itself:?}");
    // The master key may roll any project key of its organization.
    assert_eq!(
        roll(&app, &org.master_key, &elsewhere_id, None)
            .await
            .status,
        StatusCode::CREATED
    );
}

#[actix_web::test]
async fn revoked_expired_and_already_rolled_keys_cannot_be_rolled() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (revoked_id, _) = app.new_project_key(&org).await;
    app.revoke_key(&org.master_key, &revoked_id).await;
    let expires = Utc::now() + chrono::Duration::seconds(1);
    let (expired_id, _) = key_expiring_at(&app, &org, expires).await;
    let (rolled_id, _) = app.new_project_key(&org).await;
    assert_eq!(
        roll(&app, &org.master_key, &rolled_id, None).await.status,
        StatusCode::CREATED
    );
    sleep_past(expires).await;

    let before = app.row_counts().await;
    for id in [&revoked_id, &expired_id, &rolled_id] {
        let reply = roll(&app, &org.master_key, id, None).await;
        assert_error(&reply, StatusCode::CONFLICT, "conflict");
    }
    assert_eq!(app.row_counts().await, before);
}

#[actix_web::test]
async fn a_bad_roll_body_is_a_validation_error_and_changes_nothing() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (id, key) = app.new_project_key(&org).await;
    let before = app.row_counts().await;
    for overlap in [
        json!(-1),
        json!(604_801),
        json!(1.5),
        json!("60"),
        json!(true),
        json!([60]),
        json!(1e20),
    ] {
        let reply = roll(
            &app,
            &org.master_key,
            &id,
            Some(json!({"overlap_seconds": overlap})),
        )
        .await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error");
        assert_eq!(
            assert_validation_error(&reply),
            ["overlap_seconds"],
            "{overlap}"
        );
    }
    for body in [json!([]), json!("x"), json!(3)] {
        let reply = roll(&app, &org.master_key, &id, Some(body)).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error");
    }
    let not_json = app
        .raw(
            Method::POST,
            &format!("/api/v1/keys/{id}/roll"),
            &[
                (
                    "Authorization",
                    format!("Bearer {}", org.master_key).as_bytes(),
                ),
                ("Content-Type", b"text/plain"),
            ],
            b"{}".to_vec(),
        )
        .await;
    assert_error(
        &not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let broken = app
        .raw(
            Method::POST,
            &format!("/api/v1/keys/{id}/roll"),
            &[
                (
                    "Authorization",
                    format!("Bearer {}", org.master_key).as_bytes(),
                ),
                ("Content-Type", b"application/json"),
            ],
            b"{\"overlap_seconds\":".to_vec(),
        )
        .await;
    assert_error(&broken, StatusCode::BAD_REQUEST, "validation_error");
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.verify(&key).await.body["expires_at"], Value::Null);

    // The bounds themselves are fine, and so is an empty object.
    let week = roll(
        &app,
        &org.master_key,
        &id,
        Some(json!({"overlap_seconds": 604_800})),
    )
    .await;
    assert_eq!(week.status, StatusCode::CREATED, "{week:?}");
    let (other, _) = app.new_project_key(&org).await;
    let empty = roll(&app, &org.master_key, &other, Some(json!({}))).await;
    assert_eq!(empty.status, StatusCode::CREATED, "{empty:?}");
}

#[actix_web::test]
async fn concurrent_rolls_of_one_key_on_two_instances_make_exactly_one_new_key() {
    let (a, b) = spawn_isolated_pair(|_| {}).await;
    let org = a.create_org("Acme").await;
    let (id, _) = a.new_project_key(&org).await;
    let keys_before = a.key_items(&org.master_key).await.len();
    let attempts = (0..12).map(|i| {
        let app: &TestApp = if i % 2 == 0 { &a } else { &b };
        let (token, id) = (org.master_key.clone(), id.clone());
        async move { roll(app, &token, &id, None).await }
    });
    let replies = join_all(attempts).await;
    let created: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert_eq!(created.len(), 1, "{replies:#?}");
    for reply in replies.iter().filter(|r| r.status != StatusCode::CREATED) {
        assert_error(reply, StatusCode::CONFLICT, "conflict");
    }
    assert_eq!(a.key_items(&org.master_key).await.len(), keys_before + 1);
    let events = a
        .request(
            Method::GET,
            "/api/v1/audit-events?action=key.rolled",
            Some(&org.master_key),
            None,
        )
        .await;
    assert_eq!(
        events.body["events"].as_array().unwrap().len(),
        1,
        "{events:?}"
    );
}

#[actix_web::test]
async fn the_new_key_of_a_roll_counts_against_the_active_key_limit() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db, |settings| {
        settings.keys.max_active_per_org = std::num::NonZeroU32::new(2).unwrap();
    })
    .await;
    let org = app.create_org("Acme").await;
    let (id, key) = app.new_project_key(&org).await;
    let before = app.row_counts().await;
    let full = roll(&app, &org.master_key, &id, None).await;
    assert_error(&full, StatusCode::CONFLICT, "conflict");
    assert_eq!(app.row_counts().await, before);
    assert_eq!(
        app.verify(&key).await.body["expires_at"],
        Value::Null,
        "the refused roll left the old key as it was"
    );
    // With no overlap the old key stops at once and its place is free for the new one.
    let swapped = roll(
        &app,
        &org.master_key,
        &id,
        Some(json!({"overlap_seconds": 0})),
    )
    .await;
    assert_eq!(swapped.status, StatusCode::CREATED, "{swapped:?}");
}
