//! Projects, the admin API, health, unknown routes and methods, and the request id that
//! every response carries.

use std::collections::HashSet;

use actix_web::http::{Method, StatusCode};
use logstitch_gateway::domain::{ApiKey, KeyType};
use secrecy::SecretString;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    api_timestamp, assert_error, assert_exact_fields, assert_request_id, spawn_app, spawn_app_with,
    Reply, TestApp, TestDatabase,
};

async fn post_project(app: &TestApp, token: &str, name: &str) -> Reply {
    app.request(
        Method::POST,
        "/api/v1/projects",
        Some(token),
        Some(&json!({ "name": name })),
    )
    .await
}

async fn list_projects(app: &TestApp, token: &str) -> Reply {
    app.request(Method::GET, "/api/v1/projects", Some(token), None)
        .await
}

async fn post_organization(app: &TestApp, authorization: Option<&str>, name: &str) -> Reply {
    let body = json!({ "name": name }).to_string().into_bytes();
    let mut headers: Vec<(&str, &[u8])> = vec![("Content-Type", b"application/json")];
    if let Some(value) = authorization {
        headers.push(("Authorization", value.as_bytes()));
    }
    app.raw(Method::POST, "/admin/v1/organizations", &headers, body)
        .await
}

// ---- Projects ----

#[actix_web::test]
async fn create_project_answers_201_with_id_name_and_created_at() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let started = chrono::Utc::now();
    let created = post_project(&app, &org.master_key, "Mobile app").await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_exact_fields(&created.body, &["id", "name", "createdAt", "request_id"]);
    assert_request_id(&created);
    assert!(Uuid::parse_str(created.body["id"].as_str().unwrap()).is_ok());
    assert_eq!(created.body["name"], "Mobile app");
    let created_at = api_timestamp(&created.body["createdAt"]);
    let slack = chrono::Duration::seconds(5);
    assert!(created_at > started - slack && created_at < chrono::Utc::now() + slack);
    // Keys can be made in it.
    let key = app
        .create_key(
            &org.master_key,
            created.body["id"].as_str().unwrap(),
            "mobile",
        )
        .await;
    assert_eq!(key.status, StatusCode::CREATED, "{key:?}");
}

#[actix_web::test]
async fn list_projects_shows_the_organizations_projects_only() {
    let app = spawn_app().await;
    let acme = app.create_org("Acme").await;
    let globex = app.create_org("Globex").await;
    let created = post_project(&app, &acme.master_key, "Mobile app").await;
    post_project(&app, &globex.master_key, "Globex project").await;

    let listed = list_projects(&app, &acme.master_key).await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    assert_exact_fields(&listed.body, &["projects", "request_id"]);
    assert_request_id(&listed);
    let projects = listed.body["projects"].as_array().unwrap();
    assert_eq!(projects.len(), 2, "{projects:?}");
    for project in projects {
        assert_exact_fields(project, &["id", "name", "createdAt"]);
        api_timestamp(&project["createdAt"]);
    }
    let ids: HashSet<&str> = projects.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert!(ids.contains(acme.project_id.as_str()));
    assert!(ids.contains(created.body["id"].as_str().unwrap()));
    let default = projects
        .iter()
        .find(|p| p["id"] == acme.project_id.as_str())
        .unwrap();
    assert_eq!(default["name"], "Default");
    assert!(!listed.text.contains("Globex project"));
}

#[actix_web::test]
async fn projects_are_for_master_keys_only() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (_, project_key) = app.new_project_key(&org).await;
    let before = app.row_counts().await;
    assert_error(
        &post_project(&app, &project_key, "nope").await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    assert_error(
        &list_projects(&app, &project_key).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let missing = app
        .request(Method::GET, "/api/v1/projects", None, None)
        .await;
    assert_error(&missing, StatusCode::UNAUTHORIZED, "unauthorized");
    let unknown = ApiKey::generate(KeyType::Master);
    assert_error(
        &post_project(&app, unknown.expose(), "nope").await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    );
    assert_eq!(app.row_counts().await, before);
}

// ---- Admin ----

#[actix_web::test]
async fn admin_creates_an_organization_with_a_working_master_key() {
    let app = spawn_app().await;
    let token = format!("Bearer {}", app.admin_token);
    let created = post_organization(&app, Some(&token), "Acme").await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_exact_fields(
        &created.body,
        &["organization_id", "project_id", "master_key", "request_id"],
    );
    assert_request_id(&created);
    assert!(Uuid::parse_str(created.body["organization_id"].as_str().unwrap()).is_ok());
    let project_id = created.body["project_id"].as_str().unwrap();
    let master_key = created.body["master_key"].as_str().unwrap();
    assert!(master_key.starts_with("mk_"), "{master_key}");

    let keys = app.key_items(master_key).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["type"], "master");
    assert_eq!(keys[0]["prefix"], &master_key[..7]);
    let projects = list_projects(&app, master_key).await;
    assert_eq!(projects.body["projects"][0]["id"], project_id);
    assert_eq!(projects.body["projects"][0]["name"], "Default");
    let verified = app.verify(master_key).await;
    assert_eq!(
        verified.body["organization_id"],
        created.body["organization_id"]
    );
}

#[actix_web::test]
async fn admin_refuses_a_wrong_or_missing_token() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let before = app.row_counts().await;
    let wrong = [
        None,
        Some("Bearer wrong".to_owned()),
        Some(format!("Bearer {}x", app.admin_token)),
        Some(format!(
            "Bearer {}",
            &app.admin_token[..app.admin_token.len() - 1]
        )),
        Some(format!("Basic {}", app.admin_token)),
        Some(app.admin_token.clone()),
        Some(format!("Bearer {}", org.master_key)),
        Some("Bearer ".to_owned()),
    ];
    for authorization in &wrong {
        let reply = post_organization(&app, authorization.as_deref(), "Intruder").await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(app.row_counts().await, before);
}

#[actix_web::test]
async fn without_an_admin_token_the_admin_route_does_not_exist() {
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        settings.admin.token = SecretString::from("")
    })
    .await;
    for authorization in [None, Some("Bearer "), Some("Bearer anything")] {
        let reply = post_organization(&app, authorization, "Acme").await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    }
    let reply = app
        .request(Method::GET, "/admin/v1/organizations", None, None)
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(app.row_counts().await, [0, 0, 0, 0, 0]);
}

// ---- Health ----

#[actix_web::test]
async fn healthz_and_readyz_answer_200_without_auth() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let reply = app.request(Method::GET, path, None, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        assert_request_id(&reply);
    }
}

#[actix_web::test]
async fn readyz_is_503_while_migrations_are_not_applied() {
    let app = spawn_app().await;
    app.db
        .client()
        .await
        .batch_execute("DELETE FROM refinery_schema_history")
        .await
        .expect("forget the applied migrations");
    let reply = app.request(Method::GET, "/readyz", None, None).await;
    assert_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    let health = app.request(Method::GET, "/healthz", None, None).await;
    assert_eq!(health.status, StatusCode::OK, "{health:?}");
}

// ---- Unknown routes and methods ----

#[actix_web::test]
async fn an_unknown_route_is_not_found_in_the_envelope() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    for (method, path, token) in [
        (Method::GET, "/", None),
        (Method::GET, "/nope", None),
        (Method::GET, "/api/v1/nope", None),
        (Method::GET, "/api/v1/nope", Some(org.master_key.as_str())),
        (Method::POST, "/api/v2/keys", Some(org.master_key.as_str())),
        (
            Method::GET,
            "/api/v1/keys/a/b",
            Some(org.master_key.as_str()),
        ),
        (
            Method::DELETE,
            "/api/v1/keys/",
            Some(org.master_key.as_str()),
        ),
    ] {
        let reply = app.request(method.clone(), path, token, None).await;
        assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    }
}

#[actix_web::test]
async fn a_wrong_method_is_405_in_the_envelope() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (id, _) = app.new_project_key(&org).await;
    let before = app.row_counts().await;
    let key_path = format!("/api/v1/keys/{id}");
    for (method, path) in [
        (Method::PUT, "/api/v1/keys"),
        (Method::DELETE, "/api/v1/keys"),
        (Method::PATCH, "/api/v1/keys"),
        (Method::POST, key_path.as_str()),
        (Method::GET, key_path.as_str()),
        (Method::PUT, key_path.as_str()),
        (Method::DELETE, "/api/v1/projects"),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/readyz"),
        (Method::GET, "/admin/v1/organizations"),
    ] {
        for token in [Some(org.master_key.as_str()), None] {
            let reply = app
                .request(method.clone(), path, token, Some(&json!({})))
                .await;
            assert_eq!(
                reply.status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}"
            );
            assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
            // RFC 9110 §15.5.6: a 405 lists the methods the route does allow.
            let allow = reply.headers.get("allow").expect("an Allow header");
            assert!(!allow.is_empty(), "{method} {path}");
            assert!(
                !allow.to_str().unwrap().contains(method.as_str()),
                "{method} {path}: Allow lists the refused method"
            );
        }
    }
    assert_eq!(app.row_counts().await, before);
    assert_eq!(
        app.key_item(&org.master_key, &id).await["revokedAt"],
        Value::Null
    );
}

// ---- Request ids ----

#[actix_web::test]
async fn every_response_carries_a_request_id_in_body_and_header() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;
    let (id, key) = app.new_project_key(&org).await;
    let master = Some(org.master_key.as_str());
    let create = json!({"project_id": org.project_id, "type": "project", "name": "x"});
    let mut replies: Vec<(String, Reply)> = Vec::new();
    let mut push = |label: &str, reply: Reply| replies.push((label.to_owned(), reply));

    push(
        "201 create",
        app.request(Method::POST, "/api/v1/keys", master, Some(&create))
            .await,
    );
    push("200 list", app.list_keys(&org.master_key).await);
    push(
        "200 projects",
        app.request(Method::GET, "/api/v1/projects", master, None)
            .await,
    );
    push(
        "201 project",
        app.request(
            Method::POST,
            "/api/v1/projects",
            master,
            Some(&json!({"name": "p"})),
        )
        .await,
    );
    push(
        "200 healthz",
        app.request(Method::GET, "/healthz", None, None).await,
    );
    push(
        "200 readyz",
        app.request(Method::GET, "/readyz", None, None).await,
    );
    push("200 revoke", app.revoke_key(&org.master_key, &id).await);
    push(
        "201 admin",
        app.request(
            Method::POST,
            "/admin/v1/organizations",
            Some(&app.admin_token),
            Some(&json!({"name": "B"})),
        )
        .await,
    );
    push(
        "400",
        app.request(Method::POST, "/api/v1/keys", master, Some(&json!({})))
            .await,
    );
    push(
        "401 missing",
        app.request(Method::GET, "/api/v1/keys", None, None).await,
    );
    push(
        "401 invalid",
        app.request(Method::GET, "/api/v1/keys", Some("pk_nope"), None)
            .await,
    );
    push("401 revoked", app.list_keys(&key).await);
    push(
        "401 admin",
        app.request(
            Method::POST,
            "/admin/v1/organizations",
            Some("wrong"),
            Some(&json!({"name": "B"})),
        )
        .await,
    );
    push(
        "404 route",
        app.request(Method::GET, "/nope", None, None).await,
    );
    push(
        "404 key",
        app.revoke_key(&org.master_key, &Uuid::new_v4().to_string())
            .await,
    );
    push(
        "405",
        app.request(Method::PUT, "/api/v1/keys", master, None).await,
    );
    let authorization = format!("Bearer {}", org.master_key);
    let headers = |content_type: &'static [u8]| -> Vec<(&str, &[u8])> {
        vec![
            ("Authorization", authorization.as_bytes()),
            ("Content-Type", content_type),
        ]
    };
    push(
        "413",
        app.raw(
            Method::POST,
            "/api/v1/keys",
            &headers(b"application/json"),
            vec![b' '; 70 * 1024],
        )
        .await,
    );
    push(
        "415",
        app.raw(
            Method::POST,
            "/api/v1/keys",
            &headers(b"text/plain"),
            create.to_string().into_bytes(),
        )
        .await,
    );
    push(
        "400 json",
        app.raw(
            Method::POST,
            "/api/v1/keys",
            &headers(b"application/json"),
            b"{".to_vec(),
        )
        .await,
    );

    let expected_status = |label: &str| label[..3].parse::<u16>().unwrap();
    let mut seen = HashSet::new();
    for (label, reply) in &replies {
        assert_eq!(
            reply.status.as_u16(),
            expected_status(label),
            "{label}: {reply:?}"
        );
        let request_id = assert_request_id(reply);
        assert!(seen.insert(request_id), "{label}: request ids must differ");
    }
}

#[actix_web::test]
async fn admin_checks_the_token_before_the_body() {
    let app = spawn_app().await;
    let not_json = b"not json".to_vec();
    let plain: (&str, &[u8]) = ("Content-Type", b"text/plain");
    let without_token = app
        .raw(
            Method::POST,
            "/admin/v1/organizations",
            &[plain],
            not_json.clone(),
        )
        .await;
    let wrong_token = app
        .raw(
            Method::POST,
            "/admin/v1/organizations",
            &[plain, ("Authorization", b"Bearer wrong-token")],
            not_json,
        )
        .await;
    for reply in [without_token, wrong_token] {
        assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    }
}
