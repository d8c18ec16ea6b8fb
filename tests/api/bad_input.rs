//! Bad input, each one a test: every case answers in the error envelope (validation errors
//! with `details: [{field, message}]`), changes nothing, and never produces a 5xx.

use actix_web::http::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{assert_error, assert_validation_error, spawn_app, Reply, TestApp, TestOrg};

/// An app with one organization, and what a refused request must leave as it is.
struct Fixture {
    app: TestApp,
    org: TestOrg,
    rows: [i64; 5],
    listed: usize,
}

impl Fixture {
    async fn new() -> Fixture {
        let app = spawn_app().await;
        let org = app.create_org("Acme").await;
        let rows = app.row_counts().await;
        let listed = app.key_items(&org.master_key).await.len();
        Fixture {
            app,
            org,
            rows,
            listed,
        }
    }

    /// POST /api/v1/keys as the master key, with this raw body and Content-Type.
    async fn post_keys(&self, content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Reply {
        let authorization = format!("Bearer {}", self.org.master_key);
        let mut headers: Vec<(&str, &[u8])> = vec![("Authorization", authorization.as_bytes())];
        if let Some(content_type) = content_type {
            headers.push(("Content-Type", content_type.as_bytes()));
        }
        self.app
            .raw(Method::POST, "/api/v1/keys", &headers, body.into())
            .await
    }

    async fn post_json(&self, body: &Value) -> Reply {
        self.post_keys(Some("application/json"), body.to_string())
            .await
    }

    /// A create body with `field` set to `value` (or removed, for None).
    fn body_with(&self, field: &str, value: Option<Value>) -> Value {
        let mut body = json!({
            "project_id": self.org.project_id,
            "type": "project",
            "name": "Production API Key",
        });
        match value {
            Some(value) => body[field] = value,
            None => {
                body.as_object_mut().unwrap().remove(field);
            }
        }
        body
    }

    /// Nothing was written, and the list shows the same keys.
    async fn assert_unchanged(&self) {
        assert_eq!(self.app.row_counts().await, self.rows, "rows changed");
        assert_eq!(
            self.app.key_items(&self.org.master_key).await.len(),
            self.listed,
            "listed keys changed"
        );
    }
}

/// Asserts a validation error that names exactly `fields` in its details.
fn assert_fields(reply: &Reply, fields: &[&str]) {
    let mut named = assert_validation_error(reply);
    named.sort();
    let mut expected: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
    expected.sort();
    assert_eq!(named, expected, "{reply:?}");
}

#[actix_web::test]
async fn malformed_json_is_a_validation_error() {
    let fx = Fixture::new().await;
    for body in [
        r#"{"project_id": "#,
        r#"{"name": "x",}"#,
        "{'name': 'x'}",
        "",
        "\u{feff}{}",
    ] {
        let reply = fx.post_keys(Some("application/json"), body).await;
        assert_validation_error(&reply);
    }
    // Invalid UTF-8 inside a string.
    let reply = fx
        .post_keys(Some("application/json"), b"{\"name\": \"\xff\"}".to_vec())
        .await;
    assert_validation_error(&reply);
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn a_body_that_is_not_an_object_is_a_validation_error() {
    let fx = Fixture::new().await;
    for body in [
        json!([]),
        json!([{"project_id": fx.org.project_id, "type": "project", "name": "x"}]),
        json!("project"),
        json!(42),
        json!(true),
        json!(null),
    ] {
        let reply = fx.post_json(&body).await;
        assert_validation_error(&reply);
    }
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn wrong_field_types_are_validation_errors_naming_the_field() {
    let fx = Fixture::new().await;
    let cases = [
        ("project_id", json!(5)),
        ("project_id", json!({"id": fx.org.project_id})),
        ("project_id", json!([fx.org.project_id])),
        ("type", json!(1)),
        ("type", json!(["project"])),
        ("name", json!(true)),
        ("name", json!(100)),
        ("name", json!({"text": "x"})),
    ];
    for (field, value) in cases {
        let reply = fx.post_json(&fx.body_with(field, Some(value))).await;
        assert_fields(&reply, &[field]);
    }
    // Every wrong field is reported at once.
    let reply = fx
        .post_json(&json!({"project_id": 5, "type": 1, "name": true}))
        .await;
    assert_fields(&reply, &["project_id", "type", "name"]);
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn missing_fields_are_validation_errors_naming_each() {
    let fx = Fixture::new().await;
    for field in ["project_id", "type", "name"] {
        let reply = fx.post_json(&fx.body_with(field, None)).await;
        assert_fields(&reply, &[field]);
        let reply = fx.post_json(&fx.body_with(field, Some(Value::Null))).await;
        assert_fields(&reply, &[field]);
    }
    let reply = fx.post_json(&json!({})).await;
    assert_fields(&reply, &["project_id", "type", "name"]);
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn an_empty_name_is_a_validation_error() {
    let fx = Fixture::new().await;
    let reply = fx.post_json(&fx.body_with("name", Some(json!("")))).await;
    assert_fields(&reply, &["name"]);
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn a_blank_name_is_a_validation_error() {
    let fx = Fixture::new().await;
    for blank in ["   ", " ", "\t", "\n \t", "\u{3000}"] {
        let reply = fx
            .post_json(&fx.body_with("name", Some(json!(blank))))
            .await;
        assert_fields(&reply, &["name"]);
    }
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn a_name_over_a_hundred_characters_is_a_validation_error() {
    let fx = Fixture::new().await;
    for long in [
        "a".repeat(101),
        "é".repeat(101),
        "🔑".repeat(101),
        "a".repeat(5000),
    ] {
        let reply = fx.post_json(&fx.body_with("name", Some(json!(long)))).await;
        assert_fields(&reply, &["name"]);
    }
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn a_type_other_than_project_is_a_validation_error() {
    let fx = Fixture::new().await;
    for key_type in ["master", "viewer", "Project", "PROJECT", "", " project"] {
        let reply = fx
            .post_json(&fx.body_with("type", Some(json!(key_type))))
            .await;
        assert_fields(&reply, &["type"]);
    }
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn a_non_uuid_project_id_is_a_validation_error() {
    let fx = Fixture::new().await;
    let simple = Uuid::parse_str(&fx.org.project_id)
        .unwrap()
        .simple()
        .to_string();
    for project_id in [
        "not-a-uuid".to_owned(),
        String::new(),
        "12345".to_owned(),
        format!("{}x", fx.org.project_id),
        fx.org.project_id.replace('-', "_"),
        format!("{simple}z"),
    ] {
        let reply = fx
            .post_json(&fx.body_with("project_id", Some(json!(project_id))))
            .await;
        assert_fields(&reply, &["project_id"]);
    }
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn a_project_of_another_organization_is_not_found() {
    let fx = Fixture::new().await;
    let other = fx.app.create_org("Globex").await;
    let rows = fx.app.row_counts().await;
    let reply = fx
        .post_json(&fx.body_with("project_id", Some(json!(other.project_id))))
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(fx.app.row_counts().await, rows);
    assert_eq!(fx.app.key_items(&other.master_key).await.len(), 1);
    assert_eq!(fx.app.key_items(&fx.org.master_key).await.len(), fx.listed);
}

#[actix_web::test]
async fn a_body_over_64_kib_is_payload_too_large() {
    let fx = Fixture::new().await;
    // Valid JSON, one byte over the limit.
    let mut body = fx.body_with("name", Some(json!("x"))).to_string();
    let padding = 64 * 1024 + 1 - body.len();
    body.insert_str(1, &format!("\"pad\":\"{}\",", "p".repeat(padding - 9)));
    assert_eq!(body.len(), 64 * 1024 + 1);
    assert!(serde_json::from_str::<Value>(&body).is_ok());
    let reply = fx.post_keys(Some("application/json"), body).await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(1024 * 1024));
    let reply = fx.post_keys(Some("application/json"), huge).await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn a_chunked_body_over_64_kib_is_payload_too_large() {
    let fx = Fixture::new().await;
    // No Content-Length: the limit must hold while streaming.
    let chunks: Vec<Result<actix_web::web::Bytes, std::io::Error>> =
        std::iter::once(Ok(actix_web::web::Bytes::from_static(b"{\"name\":\"")))
            .chain((0..80).map(|_| Ok(actix_web::web::Bytes::from(vec![b'x'; 1024]))))
            .chain(std::iter::once(Ok(actix_web::web::Bytes::from_static(
                b"\"}",
            ))))
            .collect();
    let response = fx
        .app
        .client
        .post(format!("{}/api/v1/keys", fx.app.address))
        .insert_header(("Authorization", format!("Bearer {}", fx.org.master_key)))
        .insert_header(("Content-Type", "application/json"))
        .send_stream(futures_util::stream::iter(chunks))
        .await
        .expect("request sent");
    let reply = crate::helpers::read_whole(response).await;
    assert_error(&reply, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn a_body_of_exactly_64_kib_is_read() {
    let fx = Fixture::new().await;
    // At the limit the body is read and validated (the long name is what is refused).
    let mut body = fx.body_with("name", Some(json!("x"))).to_string();
    let padding = 64 * 1024 - body.len();
    body.insert_str(1, &format!("\"pad\":\"{}\",", "p".repeat(padding - 9)));
    assert_eq!(body.len(), 64 * 1024);
    let reply = fx.post_keys(Some("application/json"), body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
}

#[actix_web::test]
async fn a_wrong_content_type_is_unsupported_media_type() {
    let fx = Fixture::new().await;
    let valid = fx.body_with("name", Some(json!("x"))).to_string();
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/xml"),
        None,
    ] {
        let reply = fx.post_keys(content_type, valid.clone()).await;
        assert_error(
            &reply,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
    let form = format!("project_id={}&type=project&name=x", fx.org.project_id);
    let reply = fx
        .post_keys(Some("application/x-www-form-urlencoded"), form)
        .await;
    assert_error(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    // A charset parameter is still JSON.
    let reply = fx
        .post_keys(Some("application/json; charset=utf-8"), valid)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
}

/// POST /api/v1/keys with a valid body and this Authorization value.
async fn create_with_authorization(fx: &Fixture, authorization: &[u8]) -> Reply {
    let body = fx.body_with("name", Some(json!("x"))).to_string();
    fx.app
        .raw(
            Method::POST,
            "/api/v1/keys",
            &[
                ("Authorization", authorization),
                ("Content-Type", b"application/json"),
            ],
            body.into_bytes(),
        )
        .await
}

/// A 401 in the envelope, with one of the authentication codes.
fn assert_refused_401(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{reply:?}");
    let code = reply.error_code().to_owned();
    assert!(
        ["unauthorized", "invalid_api_key"].contains(&code.as_str()),
        "{reply:?}"
    );
    assert_error(reply, StatusCode::UNAUTHORIZED, &code);
}

#[actix_web::test]
async fn a_huge_authorization_header_is_refused() {
    let fx = Fixture::new().await;
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            format!("Bearer {}", "a".repeat(8 * 1024)).into_bytes(),
            "invalid_api_key",
        ),
        (
            format!("Bearer pk_{}", "A".repeat(8 * 1024)).into_bytes(),
            "invalid_api_key",
        ),
        (
            format!("Bearer {}{}", fx.org.master_key, "0".repeat(8 * 1024)).into_bytes(),
            "invalid_api_key",
        ),
        (
            format!("Basic {}", "Q".repeat(8 * 1024)).into_bytes(),
            "unauthorized",
        ),
        (
            format!("Bearer {}", "z".repeat(64 * 1024)).into_bytes(),
            "invalid_api_key",
        ),
    ];
    for (authorization, code) in &cases {
        let reply = create_with_authorization(&fx, authorization).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, code);
        let reply = fx
            .app
            .raw(
                Method::GET,
                "/api/v1/keys",
                &[("Authorization", authorization)],
                Vec::new(),
            )
            .await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, code);
    }
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn a_non_ascii_authorization_header_is_refused() {
    let fx = Fixture::new().await;
    let mut with_accent = format!("Bearer {}", fx.org.master_key).into_bytes();
    let at = with_accent.len() - 10;
    with_accent.splice(at..at + 1, "é".bytes());
    let cases: Vec<Vec<u8>> = vec![
        b"Bearer \xc3\xa9\xc3\xa9\xc3\xa9".to_vec(),
        b"Bearer pk_\xc3\xa9abcdefghijklmnopqrstuvwxyz0123456789".to_vec(),
        b"Bearer \xff\xfe\xfd".to_vec(),
        b"B\xc3\xa9arer pk_abc".to_vec(),
        "Bearer 🔑🔑🔑🔑🔑🔑🔑🔑🔑🔑".as_bytes().to_vec(),
        with_accent,
    ];
    for authorization in &cases {
        let reply = create_with_authorization(&fx, authorization).await;
        assert_refused_401(&reply);
        let reply = fx
            .app
            .raw(
                Method::DELETE,
                &format!("/api/v1/keys/{}", Uuid::new_v4()),
                &[("Authorization", authorization)],
                Vec::new(),
            )
            .await;
        assert_refused_401(&reply);
    }
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn authentication_is_checked_before_the_body() {
    let fx = Fixture::new().await;
    // A bad key with a bad body: the key is what is refused.
    let reply = fx
        .app
        .raw(
            Method::POST,
            "/api/v1/keys",
            &[("Content-Type", b"text/plain")],
            b"{not json".to_vec(),
        )
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "unauthorized");
    let too_large = vec![b'x'; 100 * 1024];
    let reply = fx
        .app
        .raw(
            Method::POST,
            "/api/v1/keys",
            &[
                ("Content-Type", b"application/json"),
                ("Authorization", b"Bearer nope"),
            ],
            too_large,
        )
        .await;
    assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
    fx.assert_unchanged().await;
}

async fn post_project(fx: &Fixture, body: Vec<u8>, content_type: &str) -> Reply {
    let authorization = format!("Bearer {}", fx.org.master_key);
    fx.app
        .raw(
            Method::POST,
            "/api/v1/projects",
            &[
                ("Authorization", authorization.as_bytes()),
                ("Content-Type", content_type.as_bytes()),
            ],
            body,
        )
        .await
}

#[actix_web::test]
async fn bad_project_bodies_are_validation_errors() {
    let fx = Fixture::new().await;
    for body in [
        "{".to_owned(),
        "[]".to_owned(),
        "{}".to_owned(),
        r#"{"name": 3}"#.to_owned(),
        r#"{"name": ""}"#.to_owned(),
        r#"{"name": "   "}"#.to_owned(),
        json!({ "name": "a".repeat(101) }).to_string(),
    ] {
        let reply = post_project(&fx, body.into_bytes(), "application/json").await;
        assert_validation_error(&reply);
    }
    let reply = post_project(&fx, br#"{"name": "x"}"#.to_vec(), "text/plain").await;
    assert_error(
        &reply,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    fx.assert_unchanged().await;
}

#[actix_web::test]
async fn bad_organization_bodies_are_validation_errors() {
    let fx = Fixture::new().await;
    let authorization = format!("Bearer {}", fx.app.admin_token);
    for body in ["{", "[]", "{}", r#"{"name": 3}"#, r#"{"name": " "}"#] {
        let reply = fx
            .app
            .raw(
                Method::POST,
                "/admin/v1/organizations",
                &[
                    ("Authorization", authorization.as_bytes()),
                    ("Content-Type", b"application/json"),
                ],
                body.as_bytes().to_vec(),
            )
            .await;
        assert_validation_error(&reply);
    }
    fx.assert_unchanged().await;
}
