//! The API Keys contract: response shapes, key format and storage, authentication outcomes,
//! list scoping, revoke rules and lastUsedAt.

use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use logstitch_gateway::domain::{ApiKey, KeyType};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{
    api_timestamp, assert_error, assert_exact_fields, assert_request_id, assert_validation_error,
    spawn_app, TestApp, TestOrg,
};

/// A list item's fields, in the order they are sent.
pub const KEY_ITEM_FIELDS: &[&str] = &[
    "id",
    "prefix",
    "type",
    "name",
    "lastUsedAt",
    "createdAt",
    "revokedAt",
    "expiresAt",
    // Restricted keys (issue 20) add these after expiresAt.
    "scopes",
    "enabled",
    "rateLimit",
];

/// Creates a project key named `name` in `project_id`; returns (id, plaintext). Looks the id
/// up in the master's list, so the new key itself is never used.
async fn create_named_key(
    app: &TestApp,
    org: &TestOrg,
    project_id: &str,
    name: &str,
) -> (String, String) {
    let created = app.create_key(&org.master_key, project_id, name).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let key = created.body["key"].as_str().unwrap().to_owned();
    let item = app
        .key_items(&org.master_key)
        .await
        .into_iter()
        .find(|item| item["name"] == name && item["prefix"] == key[..7])
        .unwrap_or_else(|| panic!("created key {name:?} is not listed"));
    (item["id"].as_str().unwrap().to_owned(), key)
}

async fn create_project(app: &TestApp, master_key: &str, name: &str) -> String {
    let created = app
        .request(
            Method::POST,
            "/api/v1/projects",
            Some(master_key),
            Some(&json!({ "name": name })),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    created.body["id"].as_str().unwrap().to_owned()
}

fn names(items: &[Value]) -> Vec<&str> {
    items
        .iter()
        .map(|item| item["name"].as_str().unwrap())
        .collect()
}

/// `tag` then base62 only; at least 32 random + 6 checksum characters.
fn assert_key_format(key: &str, tag: &str) {
    assert!(key.starts_with(tag), "{key:?} must start with {tag}");
    let body = &key[tag.len()..];
    assert!(body.len() >= 38, "{key:?} is too short");
    assert!(
        body.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{key:?} is not base62 after its tag"
    );
}

/// `key` with the character at `index` replaced by another base62 character.
fn with_char_changed(key: &str, index: usize) -> String {
    let mut bytes = key.as_bytes().to_vec();
    bytes[index] = if bytes[index] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).unwrap()
}

// ---- Contract shapes ----

#[actix_web::test]
async fn create_answers_201_with_exactly_the_documented_fields() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let created = app
        .create_key(&org.master_key, &org.project_id, "Production API Key")
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_exact_fields(
        &created.body,
        &["key", "prefix", "type", "name", "scopes", "request_id"],
    );
    let key = created.body["key"].as_str().unwrap();
    assert_key_format(key, "pk_");
    assert_eq!(created.body["prefix"], &key[..7]);
    assert_eq!(created.body["type"], "project");
    assert_eq!(created.body["name"], "Production API Key");
    assert_request_id(&created);
    assert_eq!(app.verify(key).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn list_items_have_exactly_the_documented_fields_and_formats() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (id, key) = create_named_key(&app, &org, &org.project_id, "Production API Key").await;

    let listed = app.list_keys(&org.master_key).await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    assert_exact_fields(&listed.body, &["keys", "request_id"]);
    assert_request_id(&listed);
    let items = listed.body["keys"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the master key and the new key: {items:?}");
    for item in items {
        assert_exact_fields(item, KEY_ITEM_FIELDS);
        assert!(Uuid::parse_str(item["id"].as_str().unwrap()).is_ok());
        api_timestamp(&item["createdAt"]);
        assert_eq!(item["revokedAt"], Value::Null);
        if !item["lastUsedAt"].is_null() {
            api_timestamp(&item["lastUsedAt"]);
        }
        assert_eq!(item["prefix"].as_str().unwrap().len(), 7);
    }
    let item = items.iter().find(|item| item["id"] == id.as_str()).unwrap();
    assert_eq!(item["prefix"], &key[..7]);
    assert_eq!(item["type"], "project");
    assert_eq!(item["name"], "Production API Key");
    assert_eq!(item["lastUsedAt"], Value::Null, "never used yet");
    // The full key never appears in a list.
    assert!(!listed.text.contains(&key), "the list exposes a full key");
    assert!(!listed.text.contains(&org.master_key));
}

#[actix_web::test]
async fn list_is_newest_first() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    for name in ["first", "second", "third"] {
        create_named_key(&app, &org, &org.project_id, name).await;
    }
    let items = app.key_items(&org.master_key).await;
    assert_eq!(
        names(&items),
        ["third", "second", "first", "Master key"],
        "{items:?}"
    );
    let created: Vec<_> = items
        .iter()
        .map(|item| api_timestamp(&item["createdAt"]))
        .collect();
    assert!(
        created.windows(2).all(|pair| pair[0] >= pair[1]),
        "{created:?}"
    );
}

#[actix_web::test]
async fn master_key_sees_every_key_of_its_organization_master_included() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let other_org = app.create_org("Globex").await;
    let second_project = create_project(&app, &org.master_key, "Second").await;
    let (in_default, _) = create_named_key(&app, &org, &org.project_id, "default key").await;
    let (in_second, _) = create_named_key(&app, &org, &second_project, "second key").await;
    create_named_key(&app, &other_org, &other_org.project_id, "globex key").await;

    let items = app.key_items(&org.master_key).await;
    assert_eq!(items.len(), 3, "{items:?}");
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&in_default.as_str()) && ids.contains(&in_second.as_str()));
    let master = items
        .iter()
        .find(|item| item["type"] == "master")
        .expect("the master key is listed with type \"master\"");
    assert_eq!(master["prefix"], &org.master_key[..7]);
    assert!(!names(&items).contains(&"globex key"));
}

#[actix_web::test]
async fn project_key_sees_only_its_own_projects_keys() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let second_project = create_project(&app, &org.master_key, "Second").await;
    let (a1, key_a1) = create_named_key(&app, &org, &org.project_id, "a1").await;
    let (a2, _) = create_named_key(&app, &org, &org.project_id, "a2").await;
    let (b1, key_b1) = create_named_key(&app, &org, &second_project, "b1").await;

    let seen_by_a: Vec<String> = app
        .key_items(&key_a1)
        .await
        .iter()
        .map(|item| item["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen_by_a, [a2, a1]);

    let seen_by_b = app.key_items(&key_b1).await;
    assert_eq!(seen_by_b.len(), 1, "{seen_by_b:?}");
    assert_eq!(seen_by_b[0]["id"], b1.as_str());
    assert_eq!(seen_by_b[0]["type"], "project");
}

// ---- Key format and storage ----

#[actix_web::test]
async fn keys_have_a_type_tag_base62_body_and_a_seven_character_prefix() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    assert_key_format(&org.master_key, "mk_");
    let created = app.create_key(&org.master_key, &org.project_id, "k").await;
    let key = created.body["key"].as_str().unwrap();
    assert_key_format(key, "pk_");
    assert_eq!(created.body["prefix"], &key[..7]);
    let master_item = app
        .key_items(&org.master_key)
        .await
        .into_iter()
        .find(|item| item["type"] == "master")
        .unwrap();
    assert_eq!(master_item["prefix"], &org.master_key[..7]);
    // Two keys are never the same.
    let again = app.create_key(&org.master_key, &org.project_id, "k").await;
    assert_ne!(again.body["key"].as_str().unwrap(), key);
}

#[actix_web::test]
async fn a_key_with_one_character_changed_is_an_invalid_api_key() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (_, key) = app.new_project_key(&org).await;
    // In the random part, in the checksum, for a project and a master key.
    for typo in [
        with_char_changed(&key, 10),
        with_char_changed(&key, key.len() - 1),
        with_char_changed(&org.master_key, 20),
    ] {
        let reply = app.list_keys(&typo).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
        let reply = app.verify(&typo).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
    }
    // The real keys still work.
    assert_eq!(app.list_keys(&key).await.status, StatusCode::OK);
    assert_eq!(app.list_keys(&org.master_key).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn keys_are_stored_only_as_their_sha256() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (id, key) = create_named_key(&app, &org, &org.project_id, "stored").await;
    let master_id = app
        .key_items(&org.master_key)
        .await
        .into_iter()
        .find(|item| item["type"] == "master")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let client = app.db.client().await;
    // Every column of every row, as text.
    let rows = client
        .query("SELECT row_to_json(k)::text FROM api_keys k", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let text: String = row.get(0);
        for secret in [&key, &org.master_key] {
            assert!(!text.contains(secret.as_str()), "plaintext stored: {text}");
            // Not even the secret part without its tag.
            assert!(!text.contains(&secret[3..]), "plaintext stored: {text}");
        }
    }
    for (id, plaintext) in [(&id, &key), (&master_id, &org.master_key)] {
        let row = client
            .query_one(
                "SELECT key_hash FROM api_keys WHERE id = $1",
                &[&Uuid::parse_str(id).unwrap()],
            )
            .await
            .unwrap();
        let stored: Vec<u8> = row.get(0);
        assert_eq!(stored, Sha256::digest(plaintext.as_bytes()).to_vec());
    }
}

// ---- Authentication ----

/// Every route behind a key, with a body that would be valid.
fn keyed_routes(org: &TestOrg) -> Vec<(Method, String, Option<Value>)> {
    vec![
        (Method::GET, "/api/v1/keys".to_owned(), None),
        (
            Method::POST,
            "/api/v1/keys".to_owned(),
            Some(json!({"project_id": org.project_id, "type": "project", "name": "x"})),
        ),
        (
            Method::DELETE,
            format!("/api/v1/keys/{}", Uuid::new_v4()),
            None,
        ),
        (Method::GET, "/api/v1/projects".to_owned(), None),
        (
            Method::POST,
            "/api/v1/projects".to_owned(),
            Some(json!({"name": "x"})),
        ),
    ]
}

/// Sends `method path` with exactly this Authorization header value (or none).
async fn send_with_authorization(
    app: &TestApp,
    method: Method,
    path: &str,
    authorization: Option<&[u8]>,
    body: Option<&Value>,
) -> crate::helpers::Reply {
    let mut headers: Vec<(&str, &[u8])> = vec![("Content-Type", b"application/json")];
    if let Some(value) = authorization {
        headers.push(("Authorization", value));
    }
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    app.raw(method, path, &headers, body).await
}

#[actix_web::test]
async fn missing_authorization_is_unauthorized_on_every_keyed_route() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let before = app.row_counts().await;
    for (method, path, body) in keyed_routes(&org) {
        let reply = send_with_authorization(&app, method, &path, None, body.as_ref()).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(app.row_counts().await, before);
}

#[actix_web::test]
async fn a_scheme_other_than_bearer_is_unauthorized() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let before = app.row_counts().await;
    let basic = b"Basic dXNlcjpwYXNzd29yZA==".to_vec();
    let token_scheme = format!("Token {}", org.master_key).into_bytes();
    let bare_key = org.master_key.clone().into_bytes();
    for authorization in [basic, token_scheme, bare_key] {
        for (method, path, body) in keyed_routes(&org) {
            let reply =
                send_with_authorization(&app, method, &path, Some(&authorization), body.as_ref())
                    .await;
            assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    assert_eq!(app.row_counts().await, before);
}

#[actix_web::test]
async fn a_malformed_key_is_an_invalid_api_key() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let before = app.row_counts().await;
    let valid = ApiKey::generate(KeyType::Project).expose().to_owned();
    let malformed = [
        "garbage".to_owned(),
        "pk_".to_owned(),
        "pk_short".to_owned(),
        format!("xk_{}", &valid[3..]),
        format!("{valid}a"),
        valid[..valid.len() - 1].to_owned(),
        format!("{}-{}", &valid[..10], &valid[11..]),
    ];
    for key in &malformed {
        for (method, path, body) in keyed_routes(&org) {
            let reply = app.request(method, &path, Some(key), body.as_ref()).await;
            assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
        }
    }
    assert_eq!(app.row_counts().await, before);
}

#[actix_web::test]
async fn a_well_formed_unknown_key_is_an_invalid_api_key() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let before = app.row_counts().await;
    for key_type in [KeyType::Project, KeyType::Master] {
        let unknown = ApiKey::generate(key_type);
        for (method, path, body) in keyed_routes(&org) {
            let reply = app
                .request(method, &path, Some(unknown.expose()), body.as_ref())
                .await;
            assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
        }
    }
    assert_eq!(app.row_counts().await, before);
}

#[actix_web::test]
async fn a_revoked_key_is_key_revoked_immediately() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (id, key) = app.new_project_key(&org).await;
    // Warm every path that might cache the key.
    assert_eq!(app.list_keys(&key).await.status, StatusCode::OK);
    let revoked = app.revoke_key(&org.master_key, &id).await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    let before = app.row_counts().await;
    for (method, path, body) in keyed_routes(&org) {
        let reply = app.request(method, &path, Some(&key), body.as_ref()).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "key_revoked");
    }
    assert_error(
        &app.verify(&key).await,
        StatusCode::UNAUTHORIZED,
        "key_revoked",
    );
    assert_eq!(app.row_counts().await, before);
}

#[actix_web::test]
async fn a_project_key_is_forbidden_to_create_keys_and_manage_projects() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (_, key) = app.new_project_key(&org).await;
    let before = app.row_counts().await;
    let created = app.create_key(&key, &org.project_id, "sneaky").await;
    assert_error(&created, StatusCode::FORBIDDEN, "forbidden");
    let project = app
        .request(
            Method::POST,
            "/api/v1/projects",
            Some(&key),
            Some(&json!({"name": "sneaky"})),
        )
        .await;
    assert_error(&project, StatusCode::FORBIDDEN, "forbidden");
    let projects = app
        .request(Method::GET, "/api/v1/projects", Some(&key), None)
        .await;
    assert_error(&projects, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(app.row_counts().await, before);
}

#[actix_web::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    for scheme in ["bearer", "BEARER"] {
        let value = format!("{scheme} {}", org.master_key).into_bytes();
        let reply =
            send_with_authorization(&app, Method::GET, "/api/v1/keys", Some(&value), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }
}

// ---- Revoke ----

#[actix_web::test]
async fn revoke_answers_as_the_seed_shows_and_sets_revoked_at() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (id, key) = app.new_project_key(&org).await;
    let started = chrono::Utc::now();
    let revoked = app.revoke_key(&org.master_key, &id).await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    assert_exact_fields(&revoked.body, &["revoked", "request_id"]);
    assert_eq!(revoked.body["revoked"], true);
    assert_request_id(&revoked);

    let item = app.key_item(&org.master_key, &id).await;
    let revoked_at = api_timestamp(&item["revokedAt"]);
    let slack = chrono::Duration::seconds(5);
    assert!(revoked_at > started - slack && revoked_at < chrono::Utc::now() + slack);
    assert_error(
        &app.verify(&key).await,
        StatusCode::UNAUTHORIZED,
        "key_revoked",
    );
}

#[actix_web::test]
async fn a_project_key_may_revoke_keys_of_its_own_project_including_itself() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (id_a, key_a) = create_named_key(&app, &org, &org.project_id, "a").await;
    let (id_b, key_b) = create_named_key(&app, &org, &org.project_id, "b").await;

    let reply = app.revoke_key(&key_a, &id_b).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body["revoked"], true);
    assert_error(
        &app.verify(&key_b).await,
        StatusCode::UNAUTHORIZED,
        "key_revoked",
    );

    let reply = app.revoke_key(&key_a, &id_a).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_error(
        &app.list_keys(&key_a).await,
        StatusCode::UNAUTHORIZED,
        "key_revoked",
    );
    let item = app.key_item(&org.master_key, &id_a).await;
    api_timestamp(&item["revokedAt"]);
}

#[actix_web::test]
async fn a_project_key_cannot_revoke_keys_of_another_project() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let second_project = create_project(&app, &org.master_key, "Second").await;
    let (_, key_a) = create_named_key(&app, &org, &org.project_id, "a").await;
    let (id_b, key_b) = create_named_key(&app, &org, &second_project, "b").await;
    let before = app.row_counts().await;

    let reply = app.revoke_key(&key_a, &id_b).await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.verify(&key_b).await.status, StatusCode::OK);
    assert_eq!(
        app.key_item(&org.master_key, &id_b).await["revokedAt"],
        Value::Null
    );
}

#[actix_web::test]
async fn a_project_key_cannot_revoke_the_master_key() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (_, key) = app.new_project_key(&org).await;
    let master_id = app.verify(&org.master_key).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.row_counts().await;
    let reply = app.revoke_key(&key, &master_id).await;
    // The master key is outside a project key's scope (404); 403 would also refuse it.
    assert!(
        reply.error_code() == "not_found" || reply.error_code() == "forbidden",
        "{reply:?}"
    );
    assert!(reply.status == StatusCode::NOT_FOUND || reply.status == StatusCode::FORBIDDEN);
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.list_keys(&org.master_key).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn revoking_again_answers_200_and_keeps_the_first_revoked_at() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (id, _) = app.new_project_key(&org).await;
    assert_eq!(
        app.revoke_key(&org.master_key, &id).await.status,
        StatusCode::OK
    );
    let first = app.key_item(&org.master_key, &id).await["revokedAt"].clone();
    api_timestamp(&first);
    // Let the clock move past the first revokedAt's millisecond.
    actix_rt::time::sleep(Duration::from_millis(20)).await;
    let again = app.revoke_key(&org.master_key, &id).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_exact_fields(&again.body, &["revoked", "request_id"]);
    assert_eq!(again.body["revoked"], true);
    assert_eq!(app.key_item(&org.master_key, &id).await["revokedAt"], first);
}

#[actix_web::test]
async fn the_master_key_cannot_be_revoked_through_the_api() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let master_id = app.verify(&org.master_key).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.row_counts().await;
    let reply = app.revoke_key(&org.master_key, &master_id).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.list_keys(&org.master_key).await.status, StatusCode::OK);
    assert_eq!(
        app.key_item(&org.master_key, &master_id).await["revokedAt"],
        Value::Null
    );
}

#[actix_web::test]
async fn an_unknown_key_id_is_not_found() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (_, key) = app.new_project_key(&org).await;
    let before = app.row_counts().await;
    for token in [&org.master_key, &key] {
        let reply = app.revoke_key(token, &Uuid::new_v4().to_string()).await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(app.row_counts().await, before);
}

#[actix_web::test]
async fn another_organizations_key_is_not_found_and_keeps_working() {
    let app = spawn_app().await;
    let acme = app.create_org("Acme").await;
    let globex = app.create_org("Globex").await;
    let (acme_key_id, acme_key) = app.new_project_key(&acme).await;
    let acme_master_id = app.verify(&acme.master_key).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, globex_key) = app.new_project_key(&globex).await;
    let before = app.row_counts().await;

    let unknown = app
        .revoke_key(&globex.master_key, &Uuid::new_v4().to_string())
        .await;
    for (token, id) in [
        (&globex.master_key, &acme_key_id),
        (&globex.master_key, &acme_master_id),
        (&globex_key, &acme_key_id),
    ] {
        let reply = app.revoke_key(token, id).await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
        // Indistinguishable from an id that does not exist.
        assert_eq!(reply.body["error"], unknown.body["error"]);
    }
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.verify(&acme_key).await.status, StatusCode::OK);
    assert_eq!(app.list_keys(&acme.master_key).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn a_non_uuid_key_id_is_a_validation_error() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (_, key) = app.new_project_key(&org).await;
    let before = app.row_counts().await;
    for id in [
        "not-a-uuid",
        "12345",
        "550e8400-e29b-41d4-a716-44665544000Z",
        "%C3%A9",
    ] {
        for token in [&org.master_key, &key] {
            let reply = app.revoke_key(token, id).await;
            let fields = assert_validation_error(&reply);
            assert_eq!(fields, ["id"], "{reply:?}");
        }
    }
    assert_eq!(app.row_counts().await, before);
}

// ---- Create scoping ----

#[actix_web::test]
async fn creating_a_key_in_another_organizations_project_is_not_found() {
    let app = spawn_app().await;
    let acme = app.create_org("Acme").await;
    let globex = app.create_org("Globex").await;
    let before = app.row_counts().await;
    let reply = app
        .create_key(&globex.master_key, &acme.project_id, "intruder")
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(app.row_counts().await, before);
    assert_eq!(app.key_items(&acme.master_key).await.len(), 1);
    assert_eq!(app.key_items(&globex.master_key).await.len(), 1);
}

#[actix_web::test]
async fn creating_a_key_in_a_nonexistent_project_is_not_found() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let before = app.row_counts().await;
    let reply = app
        .create_key(&org.master_key, &Uuid::new_v4().to_string(), "orphan")
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(app.row_counts().await, before);
}

#[actix_web::test]
async fn a_key_can_be_created_in_any_project_of_the_organization() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let second_project = create_project(&app, &org.master_key, "Second").await;
    let (_, key) = create_named_key(&app, &org, &second_project, "second").await;
    let verified = app.verify(&key).await;
    assert_eq!(verified.status, StatusCode::OK, "{verified:?}");
    assert_eq!(verified.body["project_id"], second_project.as_str());
}

#[actix_web::test]
async fn names_of_one_and_a_hundred_characters_are_accepted() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    for name in ["x".to_owned(), "a".repeat(100), "é".repeat(100)] {
        let created = app
            .create_key(&org.master_key, &org.project_id, &name)
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{name}: {created:?}");
        assert_eq!(created.body["name"], name.as_str());
        let listed = app.key_items(&org.master_key).await;
        assert_eq!(listed[0]["name"], name.as_str());
    }
}

// ---- lastUsedAt ----

#[actix_web::test]
async fn last_used_at_is_null_until_used_then_kept_up_to_date() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (id, key) = create_named_key(&app, &org, &org.project_id, "used").await;
    let (idle_id, _) = create_named_key(&app, &org, &org.project_id, "idle").await;
    assert_eq!(
        app.key_item(&org.master_key, &id).await["lastUsedAt"],
        Value::Null
    );

    let before_use = chrono::Utc::now();
    assert_eq!(app.list_keys(&key).await.status, StatusCode::OK);
    let after_use = chrono::Utc::now();

    // The flush interval is 1 s; allow a few.
    let deadline = Instant::now() + Duration::from_secs(5);
    let last_used = loop {
        let item = app.key_item(&org.master_key, &id).await;
        if !item["lastUsedAt"].is_null() {
            break api_timestamp(&item["lastUsedAt"]);
        }
        assert!(
            Instant::now() < deadline,
            "lastUsedAt still null 5 s after a use"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    };
    let slack = chrono::Duration::milliseconds(1000);
    assert!(
        last_used >= before_use - slack && last_used <= after_use + slack,
        "lastUsedAt {last_used} is not the time of use ({before_use}..{after_use})"
    );
    assert_eq!(
        app.key_item(&org.master_key, &idle_id).await["lastUsedAt"],
        Value::Null,
        "an unused key stays null"
    );

    // A later use moves it forward.
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(app.verify(&key).await.status, StatusCode::OK);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let item = app.key_item(&org.master_key, &id).await;
        if api_timestamp(&item["lastUsedAt"]) > last_used {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lastUsedAt did not move after a second use"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}
