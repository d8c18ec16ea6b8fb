//! Security checks (issue 6, §4): no plaintext key in logs at any level, in a database dump or
//! in any error response; the tenant isolation matrix; fuzzed Authorization headers and JSON
//! bodies through a real server; slow, oversized and too many clients.
//!
//! Raw-socket tests speak HTTP/1.1 over `std::net::TcpStream` on a blocking thread, so every
//! byte and every timing is the test's own, and the actix test runtime stays free.

use std::io::Write;
use std::net::Shutdown;
use std::process::Command;
use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use actix_web::{web, App, HttpResponse, HttpServer};
use logstitch_gateway::domain::{ApiKey, KeyType};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::helpers::{
    assert_error, serve_binary, spawn_app, spawn_app_with, Reply, TestApp, TestDatabase,
};
use crate::raw_http::{blocking, connect, raw_exchange, read_raw_reply, RawReply};

// ---------------------------------------------------------------------------------------------
// Secrets and how to look for them
// ---------------------------------------------------------------------------------------------

/// Length of the windows of a secret searched for: 12 base62 characters (~71 bits) cannot
/// appear by chance, and every window past a key's public 7-character prefix holds at least 8
/// secret characters. Windows catch a secret even when only part of it leaked (a truncated or
/// mutated copy, as a panic message would show).
const WINDOW: usize = 12;

/// The first window of `secret` (past its `mk_`/`pk_` tag) found in `haystack`, if any.
fn leaked_window<'a>(haystack: &str, secret: &'a str) -> Option<&'a str> {
    let body = secret
        .strip_prefix("mk_")
        .or_else(|| secret.strip_prefix("pk_"))
        .unwrap_or(secret);
    assert!(body.is_ascii() && body.len() >= WINDOW, "secret too short");
    (0..=body.len() - WINDOW)
        .map(|at| &body[at..at + WINDOW])
        .find(|window| haystack.contains(window))
}

/// Panics naming `place` and the secret's label when any part of a secret is in `haystack`.
fn assert_no_secret(place: &str, haystack: &str, secrets: &[(&str, &str)]) {
    for (label, secret) in secrets {
        if let Some(window) = leaked_window(haystack, secret) {
            let at = haystack.find(window).unwrap();
            let from = haystack[..at]
                .char_indices()
                .rev()
                .nth(200)
                .map_or(0, |(i, _)| i);
            panic!(
                "{label} appears in {place} (window {window:?}), near:\n{}",
                &haystack[from..(at + WINDOW).min(haystack.len())]
            );
        }
    }
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `key` with the ASCII characters at byte offsets 2..5 replaced by one 3-byte character:
/// still 41 bytes, valid UTF-8, and a multi-byte character across the end of the type tag.
/// (`ApiKey::check_format` used to panic on exactly this, printing the input in the panic.)
fn with_multibyte_across_the_tag(key: &str) -> String {
    format!("{}€{}", &key[..2], &key[5..])
}

fn with_last_char_changed(key: &str) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    let last = chars.len() - 1;
    chars[last] = if chars[last] == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

/// The error envelope, checked on a raw reply; `Err` says what is wrong.
fn check_envelope(reply: &RawReply) -> Result<String, String> {
    let body = reply.json();
    let fields: Vec<&String> = body
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    let mut sorted: Vec<&str> = fields.iter().map(|s| s.as_str()).collect();
    sorted.sort();
    if sorted != ["error", "request_id"] {
        return Err(format!("not the error envelope: {}", reply.text()));
    }
    let error = &body["error"];
    let code = error["code"].as_str().ok_or("error.code is not a string")?;
    if error["message"].as_str().is_none_or(str::is_empty) {
        return Err(format!("error.message missing: {}", reply.text()));
    }
    if let Some(details) = error.get("details") {
        let ok = details.as_array().is_some_and(|items| {
            items
                .iter()
                .all(|item| item["field"].is_string() && item["message"].is_string())
        });
        if !ok {
            return Err(format!("bad details: {}", reply.text()));
        }
    }
    if !body["request_id"]
        .as_str()
        .is_some_and(|id| id.starts_with("req_"))
    {
        return Err(format!("bad request_id: {}", reply.text()));
    }
    Ok(code.to_owned())
}

// ---------------------------------------------------------------------------------------------
// No plaintext key in logs (any level), in a database dump, or in error responses
// ---------------------------------------------------------------------------------------------

/// A trivial upstream for the binary's gateway route.
fn start_upstream() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(|| {
        App::new().default_service(web::to(|| async { HttpResponse::Ok().body("upstream") }))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_rt::spawn(server);
    port
}

/// The real binary at RUST_LOG=trace (every crate, every level), exercised through every
/// route, success and failure: no part of any key or of the admin token in its output.
#[actix_web::test]
async fn no_secret_in_the_logs_at_trace_level() {
    let db = TestDatabase::create().await;
    let admin_token = Uuid::new_v4().simple().to_string();
    let upstream_port = start_upstream();
    let config_path =
        std::env::temp_dir().join(format!("logstitch-security-{}.toml", Uuid::new_v4()));
    std::fs::write(
        &config_path,
        format!(
            "[[gateway.routes]]\nprefix = \"/api/v1/events\"\n\
             upstream = \"http://127.0.0.1:{upstream_port}\"\nkey_types = [\"project\"]\n"
        ),
    )
    .unwrap();
    let mut served = serve_binary(|command| {
        command
            .env("DATABASE_URL", &db.url)
            .env("LOGSTITCH_ADMIN_TOKEN", &admin_token)
            .env("LOGSTITCH_CONFIG", &config_path)
            .env("LOGSTITCH__SERVER__WORKERS", "1")
            .env("LOGSTITCH__LAST_USED__FLUSH_INTERVAL_MS", "100")
            .env("RUST_LOG", "trace")
            .env("RUST_BACKTRACE", "1");
    })
    .await;
    let _ = std::fs::remove_file(&config_path);

    let client = crate::http_client::Client::builder()
        .timeout(Duration::from_secs(20))
        .finish();
    let base = served.base.clone();

    // Sends one request; returns (status, JSON body).
    let send =
        |method: Method, path: String, authorization: Option<String>, body: Option<Value>| {
            let client = client.clone();
            let url = format!("{base}{path}");
            async move {
                let mut request = client.request(method, url);
                if let Some(value) = authorization {
                    request = request.insert_header(("Authorization", value));
                }
                let mut response = match body {
                    Some(body) => request.send_json(&body).await,
                    None => request.send().await,
                }
                .expect("request sent");
                let bytes = response.body().await.unwrap_or_default();
                let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                (response.status().as_u16(), json)
            }
        };
    let bearer = |token: &str| Some(format!("Bearer {token}"));

    // Organization (admin), keys, list, verify, projects, revoke, gateway: the happy paths.
    let (status, org) = send(
        Method::POST,
        "/admin/v1/organizations".into(),
        bearer(&admin_token),
        Some(json!({"name": "Trace"})),
    )
    .await;
    assert_eq!(status, 201, "{org}");
    let master_key = org["master_key"].as_str().unwrap().to_owned();
    let project_id = org["project_id"].as_str().unwrap().to_owned();
    let create_body = json!({"project_id": project_id, "type": "project", "name": "traced"});
    let (status, created) = send(
        Method::POST,
        "/api/v1/keys".into(),
        bearer(&master_key),
        Some(create_body.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let project_key = created["key"].as_str().unwrap().to_owned();
    let (status, created) = send(
        Method::POST,
        "/api/v1/keys".into(),
        bearer(&master_key),
        Some(create_body),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let doomed_key = created["key"].as_str().unwrap().to_owned();
    for token in [&master_key, &project_key, &doomed_key] {
        let (status, body) = send(
            Method::GET,
            "/api/v1/auth/verify".into(),
            bearer(token),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = send(Method::GET, "/api/v1/keys".into(), bearer(token), None).await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, doomed) = send(
        Method::GET,
        "/api/v1/auth/verify".into(),
        bearer(&doomed_key),
        None,
    )
    .await;
    let doomed_id = doomed["key_id"].as_str().unwrap().to_owned();
    let (status, _) = send(
        Method::POST,
        "/api/v1/projects".into(),
        bearer(&master_key),
        Some(json!({"name": "Second"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = send(
        Method::GET,
        "/api/v1/projects".into(),
        bearer(&master_key),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        Method::GET,
        "/api/v1/events/x?y=1".into(),
        bearer(&project_key),
        None,
    )
    .await;
    assert_eq!(status, 200, "gateway forward");
    let (status, _) = send(
        Method::DELETE,
        format!("/api/v1/keys/{doomed_id}"),
        bearer(&master_key),
        None,
    )
    .await;
    assert_eq!(status, 200);

    // Failures: revoked, mistyped, malformed (incl. the input that once panicked), wrong
    // scheme, keys where no key belongs, a wrong admin token, unknown routes and methods.
    type Failure = (Method, String, Option<String>, Option<Value>, u16);
    let failures: Vec<Failure> = vec![
        (
            Method::GET,
            "/api/v1/auth/verify".into(),
            bearer(&doomed_key),
            None,
            401,
        ),
        (
            Method::GET,
            "/api/v1/events/x".into(),
            bearer(&doomed_key),
            None,
            401,
        ),
        (
            Method::GET,
            "/api/v1/events/x".into(),
            bearer(&master_key),
            None,
            403,
        ),
        (
            Method::GET,
            "/api/v1/auth/verify".into(),
            bearer(&with_last_char_changed(&master_key)),
            None,
            401,
        ),
        (
            Method::GET,
            "/api/v1/auth/verify".into(),
            bearer(&with_multibyte_across_the_tag(&master_key)),
            None,
            401,
        ),
        (
            Method::GET,
            "/api/v1/auth/verify".into(),
            bearer(&with_multibyte_across_the_tag(&project_key)),
            None,
            401,
        ),
        (
            Method::GET,
            "/api/v1/auth/verify".into(),
            bearer(&format!("{project_key}x")),
            None,
            401,
        ),
        (
            Method::GET,
            "/api/v1/auth/verify".into(),
            Some(format!("Basic {project_key}")),
            None,
            401,
        ),
        (
            Method::GET,
            "/api/v1/auth/verify".into(),
            Some(project_key.clone()),
            None,
            401,
        ),
        (
            Method::GET,
            format!(
                "/api/v1/auth/verify?api_key={}",
                with_last_char_changed(&project_key)
            ),
            None,
            None,
            401,
        ),
        (
            Method::DELETE,
            format!("/api/v1/keys/{project_key}"),
            bearer(&master_key),
            None,
            400,
        ),
        (
            Method::POST,
            "/api/v1/keys".into(),
            bearer(&master_key),
            Some(json!({"project_id": project_key, "type": "project", "name": 5})),
            400,
        ),
        (
            Method::POST,
            "/api/v1/keys".into(),
            bearer(&project_key),
            Some(json!({"project_id": project_id, "type": "project", "name": "x"})),
            403,
        ),
        (
            Method::POST,
            "/admin/v1/organizations".into(),
            bearer(&with_last_char_changed(&admin_token)),
            Some(json!({"name": "x"})),
            401,
        ),
        (
            Method::POST,
            "/admin/v1/organizations".into(),
            bearer(&master_key),
            Some(json!({"name": "x"})),
            401,
        ),
        (
            Method::GET,
            format!("/no/such/route/{}", with_last_char_changed(&master_key)),
            bearer(&master_key),
            None,
            404,
        ),
        (
            Method::PUT,
            "/api/v1/keys".into(),
            bearer(&project_key),
            None,
            405,
        ),
    ];
    for (method, path, authorization, body, expected) in failures {
        let described = format!("{method} {path}");
        let (status, reply) = send(method, path, authorization, body).await;
        assert_eq!(status, expected, "{described}: {reply}");
    }
    // Let a lastUsedAt flush run (its statement is logged at trace too).
    actix_rt::time::sleep(Duration::from_millis(300)).await;

    served.sigterm();
    let exit = served.exit_status(Duration::from_secs(20)).await;
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    let seen = served.all_lines();

    let all = seen.join("\n");
    // The run really logged at trace level, from the server's dependencies too.
    let trace_lines = seen
        .iter()
        .filter(|line| line.contains(r#""level":"TRACE""#))
        .count();
    assert!(
        trace_lines > 50,
        "only {trace_lines} trace lines: was RUST_LOG=trace honoured?"
    );
    assert!(!all.contains("panicked"), "the server panicked:\n{all}");
    assert_no_secret(
        "the trace-level log",
        &all,
        &[
            ("the master key", &master_key),
            ("a project key", &project_key),
            ("a revoked project key", &doomed_key),
            ("the admin token", &admin_token),
        ],
    );
}

/// Finds pg_dump: on PATH, else in Debian's versioned directories (newest first).
fn pg_dump_binary() -> Option<std::path::PathBuf> {
    if Command::new("pg_dump")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("pg_dump".into());
    }
    let mut found: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| Some(entry.ok()?.path().join("bin/pg_dump")))
        .filter(|path| path.exists())
        .collect();
    found.sort();
    found.pop()
}

/// Every row of every table in the public schema, as JSON text.
async fn rows_as_json(app: &TestApp) -> String {
    let client = app.db.client().await;
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut dump = String::new();
    for table in tables {
        let sql = format!(
            "SELECT row_to_json(t)::text FROM \"{}\" t",
            table.replace('"', "\"\"")
        );
        for row in client.query(&sql, &[]).await.unwrap() {
            dump.push_str(&table);
            dump.push(' ');
            dump.push_str(&row.get::<_, String>(0));
            dump.push('\n');
        }
    }
    dump
}

/// A full dump of the test database (pg_dump; every row as JSON when pg_dump can't run)
/// holds the keys' hashes but no part of any plaintext key.
#[actix_web::test]
async fn a_database_dump_contains_no_plaintext_key() {
    let app = spawn_app().await;
    let org = app.create_org("Dumped").await;
    let (_, project_key) = app.new_project_key(&org).await;
    let (revoked_id, revoked_key) = app.new_project_key(&org).await;
    assert_eq!(
        app.revoke_key(&org.master_key, &revoked_id).await.status,
        StatusCode::OK
    );
    let other = app.create_org("Other").await;
    let (_, other_key) = app.new_project_key(&other).await;
    // lastUsedAt written, so every column has been touched.
    actix_rt::time::sleep(Duration::from_millis(1300)).await;

    let pg_dump = pg_dump_binary();
    let from_pg_dump = match &pg_dump {
        Some(binary) => {
            let (binary, url) = (binary.clone(), app.db.url.clone());
            let output = blocking(move || {
                Command::new(binary)
                    .args(["--no-owner", "--dbname", &url])
                    .output()
                    .expect("run pg_dump")
            })
            .await;
            if output.status.success() {
                Some(String::from_utf8_lossy(&output.stdout).into_owned())
            } else {
                eprintln!(
                    "pg_dump failed ({}); falling back to row_to_json",
                    String::from_utf8_lossy(&output.stderr).trim()
                );
                None
            }
        }
        None => None,
    };
    let (how, dump) = match from_pg_dump {
        Some(dump) => ("pg_dump", dump),
        None => (
            "row_to_json of every public table",
            rows_as_json(&app).await,
        ),
    };
    eprintln!("database dump via {how}: {} bytes", dump.len());
    // The dump is real: every key's hash and the api_keys table are in it.
    assert!(dump.contains("api_keys"), "{how} has no api_keys:\n{dump}");
    for key in [&org.master_key, &project_key, &revoked_key, &other_key] {
        assert!(
            dump.contains(&sha256_hex(key)),
            "{how} lacks a key's SHA-256: the dump is incomplete"
        );
    }
    assert_no_secret(
        &format!("the database dump ({how})"),
        &dump,
        &[
            ("a master key", &org.master_key),
            ("another organization's master key", &other.master_key),
            ("a project key", &project_key),
            ("a revoked key", &revoked_key),
            ("another organization's project key", &other_key),
            ("the admin token", &app.admin_token),
        ],
    );
}

/// Many bad requests, with keys put everywhere a client might put them by mistake: no error
/// body or header carries any part of a key, and every error is a 4xx in the envelope.
#[actix_web::test]
async fn no_error_response_contains_a_key() {
    let app = spawn_app().await;
    let org = app.create_org("Errors").await;
    let (_, project_key) = app.new_project_key(&org).await;
    let (revoked_id, revoked_key) = app.new_project_key(&org).await;
    assert_eq!(
        app.revoke_key(&org.master_key, &revoked_id).await.status,
        StatusCode::OK
    );
    let other = app.create_org("Other").await;
    let mk = org.master_key.clone();
    let pk = project_key.clone();

    type Case = (Method, String, Vec<(&'static str, Vec<u8>)>, Vec<u8>);
    let auth = |value: String| ("Authorization", value.into_bytes());
    let json_type = || ("Content-Type", b"application/json".to_vec());
    let mut cases: Vec<Case> = Vec::new();
    // Authorization header variants of every secret.
    for secret in [&mk, &pk, &revoked_key, &other.master_key, &app.admin_token] {
        for value in [
            format!("Bearer {}", with_last_char_changed(secret)),
            format!("Bearer {}", with_multibyte_across_the_tag(secret)),
            format!("Bearer {secret}{secret}"),
            format!("Bearer {secret}\u{e9}"),
            format!("Bearer {}", &secret[..secret.len() - 1]),
            format!("Basic {secret}"),
            format!("Token {secret}"),
            secret.to_string(),
            format!("Bearer {}", secret.to_uppercase()),
        ] {
            cases.push((
                Method::GET,
                "/api/v1/auth/verify".into(),
                vec![auth(value.clone())],
                vec![],
            ));
            cases.push((
                Method::GET,
                "/api/v1/keys".into(),
                vec![auth(value)],
                vec![],
            ));
        }
    }
    // The revoked key, used as it is.
    for path in ["/api/v1/auth/verify", "/api/v1/keys", "/api/v1/projects"] {
        cases.push((
            Method::GET,
            path.into(),
            vec![auth(format!("Bearer {revoked_key}"))],
            vec![],
        ));
    }
    // Keys where ids, names and bodies belong.
    for secret in [&mk, &pk, &revoked_key] {
        cases.push((
            Method::DELETE,
            format!("/api/v1/keys/{secret}"),
            vec![auth(format!("Bearer {mk}"))],
            vec![],
        ));
        cases.push((
            Method::DELETE,
            format!("/api/v1/keys/{secret}"),
            vec![auth(format!("Bearer {pk}"))],
            vec![],
        ));
        cases.push((
            Method::GET,
            format!("/api/v1/{secret}"),
            vec![auth(format!("Bearer {mk}"))],
            vec![],
        ));
        cases.push((
            Method::GET,
            format!("/api/v1/keys?key={secret}"),
            vec![],
            vec![],
        ));
        cases.push((
            Method::PATCH,
            format!("/api/v1/keys/{secret}"),
            vec![auth(format!("Bearer {mk}"))],
            vec![],
        ));
        for body in [
            json!({"project_id": secret, "type": "project", "name": "x"}),
            json!({"project_id": org.project_id, "type": secret, "name": "x"}),
            json!({"project_id": org.project_id, "type": "project", "name": format!("{secret}{}", "x".repeat(100))}),
            json!({"project_id": org.project_id, "type": "project", "name": format!("{secret}\u{0}")}),
            json!({"project_id": other.project_id, "type": "project", "name": secret}),
            json!([secret]),
            json!(secret),
        ] {
            cases.push((
                Method::POST,
                "/api/v1/keys".into(),
                vec![auth(format!("Bearer {mk}")), json_type()],
                body.to_string().into_bytes(),
            ));
        }
        cases.push((
            Method::POST,
            "/api/v1/keys".into(),
            vec![auth(format!("Bearer {mk}")), json_type()],
            format!("{{\"name\": \"{secret}").into_bytes(),
        ));
        cases.push((
            Method::POST,
            "/api/v1/keys".into(),
            vec![
                auth(format!("Bearer {mk}")),
                ("Content-Type", format!("text/{secret}").into_bytes()),
            ],
            b"{}".to_vec(),
        ));
        cases.push((
            Method::POST,
            "/api/v1/keys".into(),
            vec![auth(format!("Bearer {pk}")), json_type()],
            json!({"project_id": org.project_id, "type": "project", "name": secret})
                .to_string()
                .into_bytes(),
        ));
        cases.push((
            Method::POST,
            "/api/v1/projects".into(),
            vec![auth(format!("Bearer {mk}")), json_type()],
            json!({"name": format!("{secret}\u{7}")})
                .to_string()
                .into_bytes(),
        ));
        cases.push((
            Method::POST,
            "/api/v1/projects".into(),
            vec![auth(format!("Bearer {pk}")), json_type()],
            json!({"name": secret}).to_string().into_bytes(),
        ));
        cases.push((
            Method::POST,
            "/admin/v1/organizations".into(),
            vec![auth(format!("Bearer {secret}")), json_type()],
            json!({"name": secret}).to_string().into_bytes(),
        ));
        cases.push((
            Method::POST,
            "/admin/v1/organizations".into(),
            vec![auth(format!("Bearer {}", app.admin_token)), json_type()],
            json!({"name": format!("{secret}\n")})
                .to_string()
                .into_bytes(),
        ));
    }
    // Master keys may not be revoked: the 403 must not name the key either.
    let master_id = app.verify(&mk).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    cases.push((
        Method::DELETE,
        format!("/api/v1/keys/{master_id}"),
        vec![auth(format!("Bearer {mk}"))],
        vec![],
    ));

    let secrets = [
        ("the master key", mk.as_str()),
        ("a project key", pk.as_str()),
        ("a revoked key", revoked_key.as_str()),
        (
            "another organization's master key",
            other.master_key.as_str(),
        ),
        ("the admin token", app.admin_token.as_str()),
    ];
    let count = cases.len();
    for (method, path, headers, body) in cases {
        let headers_ref: Vec<(&str, &[u8])> =
            headers.iter().map(|(n, v)| (*n, v.as_slice())).collect();
        let reply = app.raw(method.clone(), &path, &headers_ref, body).await;
        let place = format!(
            "the reply to {method} {}",
            path.chars().take(60).collect::<String>()
        );
        assert!(reply.status.is_client_error(), "{place}: {reply:?}");
        assert_error(&reply, reply.status, reply.error_code());
        let headers_text: String = reply
            .headers
            .iter()
            .map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        assert_no_secret(&place, &format!("{headers_text}\n{}", reply.text), &secrets);
    }
    assert!(count >= 150, "only {count} cases");
    // Every key still does what it did.
    assert_eq!(app.verify(&mk).await.status, StatusCode::OK);
    assert_eq!(app.verify(&pk).await.status, StatusCode::OK);
    assert_eq!(app.verify(&revoked_key).await.error_code(), "key_revoked");
}

// ---------------------------------------------------------------------------------------------
// Tenant isolation matrix
// ---------------------------------------------------------------------------------------------

/// What a cell expects, checked after its request.
enum Expect {
    /// This status; for errors, the envelope with this code.
    Refused(StatusCode, &'static str),
    /// 201, and the new key verifies in this project.
    KeyCreatedIn(String),
    /// 200, and this key id is (or is not) in the returned list.
    KeyListed(String, bool),
    /// 200, and this project id is (or is not) in the returned list.
    ProjectListed(String, bool),
    /// 200 `{revoked: true}`, and this key now answers 401 key_revoked.
    Revoked(String),
    /// This refusal, and this key still verifies (200).
    RefusedAndStillWorks(StatusCode, &'static str, String),
    /// 200 with exactly this identity: (organization, project, key id).
    Identity(String, Option<String>, String),
    /// 200 `{usage: [...], request_id}`.
    UsageRead,
    /// 201, and the project is listed by the first master key and not by the second.
    ProjectCreated {
        listed_by: String,
        not_listed_by: String,
    },
}

struct Cell {
    route: &'static str,
    caller: &'static str,
    target: &'static str,
    method: Method,
    path: String,
    token: String,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
    expect: Expect,
}

impl Expect {
    fn describe(&self) -> String {
        match self {
            Expect::Refused(status, code) => format!("{} {code}", status.as_u16()),
            Expect::KeyCreatedIn(_) => "201, key works in that project".into(),
            Expect::KeyListed(_, true) => "200, listed".into(),
            Expect::KeyListed(_, false) => "200, not listed".into(),
            Expect::ProjectListed(_, true) => "200, listed".into(),
            Expect::ProjectListed(_, false) => "200, not listed".into(),
            Expect::Revoked(_) => "200, key now revoked".into(),
            Expect::RefusedAndStillWorks(status, code, _) => {
                format!("{} {code}, key still works", status.as_u16())
            }
            Expect::Identity(..) => "200, the caller's own identity".into(),
            Expect::ProjectCreated { .. } => "201, in the caller's org only".into(),
            Expect::UsageRead => "200, usage".into(),
        }
    }
}

async fn send_cell(app: &TestApp, cell: &Cell) -> Reply {
    let mut request = app
        .client
        .request(cell.method.clone(), format!("{}{}", app.address, cell.path))
        .insert_header(("Authorization", format!("Bearer {}", cell.token)));
    for (name, value) in &cell.headers {
        request = request.insert_header((*name, value.as_str()));
    }
    let response = match &cell.body {
        Some(body) => request.send_json(body).await,
        None => request.send().await,
    }
    .expect("request sent");
    crate::helpers::read_whole(response).await
}

/// Runs one cell: Ok(what happened) when it matched, Err(what happened) when not.
async fn run_cell(app: &TestApp, cell: &Cell) -> Result<String, String> {
    let reply = send_cell(app, cell).await;
    let got = format!("{} {}", reply.status.as_u16(), reply.error_code())
        .trim_end()
        .to_owned();
    let fail = |why: String| Err(format!("{got}: {why}"));
    let error_matches = |status: StatusCode, code: &str| {
        reply.status == status && reply.error_code() == code && reply.body["request_id"].is_string()
    };
    match &cell.expect {
        Expect::Refused(status, code) => {
            if !error_matches(*status, code) {
                return fail(reply.text.clone());
            }
        }
        Expect::UsageRead => {
            if reply.status != StatusCode::OK
                || !reply.body["usage"].is_array()
                || !reply.body["request_id"].is_string()
            {
                return fail(reply.text.clone());
            }
        }
        Expect::RefusedAndStillWorks(status, code, key) => {
            if !error_matches(*status, code) {
                return fail(reply.text.clone());
            }
            let after = app.verify(key).await;
            if after.status != StatusCode::OK {
                return fail(format!("the target key no longer works: {}", after.text));
            }
        }
        Expect::KeyCreatedIn(project) => {
            if reply.status != StatusCode::CREATED {
                return fail(reply.text.clone());
            }
            let key = reply.body["key"].as_str().unwrap_or_default();
            let verified = app.verify(key).await;
            if verified.body["project_id"] != project.as_str() {
                return fail(format!("the new key is in {}", verified.body["project_id"]));
            }
        }
        Expect::KeyListed(id, listed) | Expect::ProjectListed(id, listed) => {
            let field = if matches!(cell.expect, Expect::KeyListed(..)) {
                "keys"
            } else {
                "projects"
            };
            let Some(items) = reply.body[field]
                .as_array()
                .filter(|_| reply.status == StatusCode::OK)
            else {
                return fail(reply.text.clone());
            };
            let present = items.iter().any(|item| item["id"] == id.as_str());
            if present != *listed {
                return fail(format!("listed: {present}"));
            }
        }
        Expect::Revoked(key) => {
            if reply.status != StatusCode::OK || reply.body["revoked"] != true {
                return fail(reply.text.clone());
            }
            let after = app.verify(key).await;
            if after.error_code() != "key_revoked" {
                return fail(format!("the target key still answers {}", after.status));
            }
        }
        Expect::Identity(org, project, key_id) => {
            let body = &reply.body;
            let project_ok = match project {
                Some(project) => body["project_id"] == project.as_str(),
                None => body["project_id"].is_null(),
            };
            if reply.status != StatusCode::OK
                || body["organization_id"] != org.as_str()
                || body["key_id"] != key_id.as_str()
                || !project_ok
                || reply
                    .headers
                    .get("x-logstitch-organization-id")
                    .map(|v| v.as_bytes())
                    != Some(org.as_bytes())
            {
                return fail(reply.text.clone());
            }
        }
        Expect::ProjectCreated {
            listed_by,
            not_listed_by,
        } => {
            if reply.status != StatusCode::CREATED {
                return fail(reply.text.clone());
            }
            let id = reply.body["id"].as_str().unwrap_or_default().to_owned();
            for (token, expected) in [(listed_by, true), (not_listed_by, false)] {
                let list = app
                    .request(Method::GET, "/api/v1/projects", Some(token), None)
                    .await;
                let present = list.body["projects"]
                    .as_array()
                    .is_some_and(|items| items.iter().any(|item| item["id"] == id.as_str()));
                if present != expected {
                    return fail(format!(
                        "project listed by the wrong organization ({present})"
                    ));
                }
            }
        }
    }
    Ok(got)
}

/// A project key in `project_id`: (key id, plaintext).
async fn key_in(app: &TestApp, master_key: &str, project_id: &str) -> (String, String) {
    let created = app.create_key(master_key, project_id, "matrix").await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let key = created.body["key"].as_str().unwrap().to_owned();
    let id = app.verify(&key).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, key)
}

/// Every route x {own organization, other organization} x {own project, other project} x
/// {master key, project key}, each cell with the answer the README's table gives it.
/// Organization A has projects P (default) and Q; organization B has project R. Callers: A's
/// master key and a project key of P.
#[actix_web::test]
async fn tenant_isolation_matrix() {
    let app = spawn_app().await;
    let a = app.create_org("Org A").await;
    let b = app.create_org("Org B").await;
    let (p, r) = (a.project_id.clone(), b.project_id.clone());
    let q = app
        .request(
            Method::POST,
            "/api/v1/projects",
            Some(&a.master_key),
            Some(&json!({"name": "Q"})),
        )
        .await
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (ma, mb) = (a.master_key.clone(), b.master_key.clone());
    let (pp_id, pp) = key_in(&app, &ma, &p).await;
    let ma_id = app.verify(&ma).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mb_id = app.verify(&mb).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Keys to look for in lists.
    let (kp, _) = key_in(&app, &ma, &p).await;
    let (kq, _) = key_in(&app, &ma, &q).await;
    let (kr, _) = key_in(&app, &mb, &r).await;

    const MASTER: &str = "master A";
    const PROJECT: &str = "project key of P";
    const OWN_OWN: &str = "own org, own project";
    const OWN_OTHER: &str = "own org, other project";
    const OTHER: &str = "other org";
    let create_body =
        |project: &str| json!({"project_id": project, "type": "project", "name": "m"});
    let cell = |route,
                caller,
                target,
                method: Method,
                path: String,
                token: &str,
                body: Option<Value>,
                expect| Cell {
        route,
        caller,
        target,
        method,
        path,
        token: token.to_owned(),
        body,
        headers: Vec::new(),
        expect,
    };
    use Expect::*;
    let forbidden = || Refused(StatusCode::FORBIDDEN, "forbidden");
    let mut cells = vec![
        // POST /api/v1/keys
        cell(
            "POST /api/v1/keys",
            MASTER,
            OWN_OWN,
            Method::POST,
            "/api/v1/keys".into(),
            &ma,
            Some(create_body(&p)),
            KeyCreatedIn(p.clone()),
        ),
        cell(
            "POST /api/v1/keys",
            MASTER,
            OWN_OTHER,
            Method::POST,
            "/api/v1/keys".into(),
            &ma,
            Some(create_body(&q)),
            KeyCreatedIn(q.clone()),
        ),
        cell(
            "POST /api/v1/keys",
            MASTER,
            OTHER,
            Method::POST,
            "/api/v1/keys".into(),
            &ma,
            Some(create_body(&r)),
            Refused(StatusCode::NOT_FOUND, "not_found"),
        ),
        cell(
            "POST /api/v1/keys",
            PROJECT,
            OWN_OWN,
            Method::POST,
            "/api/v1/keys".into(),
            &pp,
            Some(create_body(&p)),
            forbidden(),
        ),
        cell(
            "POST /api/v1/keys",
            PROJECT,
            OWN_OTHER,
            Method::POST,
            "/api/v1/keys".into(),
            &pp,
            Some(create_body(&q)),
            forbidden(),
        ),
        cell(
            "POST /api/v1/keys",
            PROJECT,
            OTHER,
            Method::POST,
            "/api/v1/keys".into(),
            &pp,
            Some(create_body(&r)),
            forbidden(),
        ),
        // GET /api/v1/keys: which keys are listed.
        cell(
            "GET /api/v1/keys",
            MASTER,
            OWN_OWN,
            Method::GET,
            "/api/v1/keys".into(),
            &ma,
            None,
            KeyListed(kp.clone(), true),
        ),
        cell(
            "GET /api/v1/keys",
            MASTER,
            OWN_OTHER,
            Method::GET,
            "/api/v1/keys".into(),
            &ma,
            None,
            KeyListed(kq.clone(), true),
        ),
        cell(
            "GET /api/v1/keys",
            MASTER,
            "own org, master key",
            Method::GET,
            "/api/v1/keys".into(),
            &ma,
            None,
            KeyListed(ma_id.clone(), true),
        ),
        cell(
            "GET /api/v1/keys",
            MASTER,
            OTHER,
            Method::GET,
            "/api/v1/keys".into(),
            &ma,
            None,
            KeyListed(kr.clone(), false),
        ),
        cell(
            "GET /api/v1/keys",
            MASTER,
            "other org, master key",
            Method::GET,
            "/api/v1/keys".into(),
            &ma,
            None,
            KeyListed(mb_id.clone(), false),
        ),
        cell(
            "GET /api/v1/keys",
            MASTER,
            "other org, asked by query",
            Method::GET,
            format!(
                "/api/v1/keys?organization_id={}&project_id={r}",
                b.organization_id
            ),
            &ma,
            None,
            KeyListed(kr.clone(), false),
        ),
        cell(
            "GET /api/v1/keys",
            PROJECT,
            OWN_OWN,
            Method::GET,
            "/api/v1/keys".into(),
            &pp,
            None,
            KeyListed(kp.clone(), true),
        ),
        cell(
            "GET /api/v1/keys",
            PROJECT,
            "own org, own project (itself)",
            Method::GET,
            "/api/v1/keys".into(),
            &pp,
            None,
            KeyListed(pp_id.clone(), true),
        ),
        cell(
            "GET /api/v1/keys",
            PROJECT,
            OWN_OTHER,
            Method::GET,
            "/api/v1/keys".into(),
            &pp,
            None,
            KeyListed(kq.clone(), false),
        ),
        cell(
            "GET /api/v1/keys",
            PROJECT,
            "own org, master key",
            Method::GET,
            "/api/v1/keys".into(),
            &pp,
            None,
            KeyListed(ma_id.clone(), false),
        ),
        cell(
            "GET /api/v1/keys",
            PROJECT,
            OTHER,
            Method::GET,
            "/api/v1/keys".into(),
            &pp,
            None,
            KeyListed(kr.clone(), false),
        ),
        cell(
            "GET /api/v1/keys",
            PROJECT,
            "own org, other project, asked by query",
            Method::GET,
            format!("/api/v1/keys?project_id={q}"),
            &pp,
            None,
            KeyListed(kq.clone(), false),
        ),
    ];
    // DELETE /api/v1/keys/{id}: a fresh target key per cell.
    let delete_cells: Vec<(&'static str, &'static str, &str, &str, &str, bool)> = vec![
        // (caller label, target label, caller key, target project, target's master, allowed)
        (MASTER, OWN_OWN, &ma, &p, &ma, true),
        (MASTER, OWN_OTHER, &ma, &q, &ma, true),
        (MASTER, OTHER, &ma, &r, &mb, false),
        (PROJECT, OWN_OWN, &pp, &p, &ma, true),
        (PROJECT, OWN_OTHER, &pp, &q, &ma, false),
        (PROJECT, OTHER, &pp, &r, &mb, false),
    ];
    for (caller, target, token, project, owner, allowed) in delete_cells {
        let (id, key) = key_in(&app, owner, project).await;
        let expect = if allowed {
            Revoked(key)
        } else {
            RefusedAndStillWorks(StatusCode::NOT_FOUND, "not_found", key)
        };
        cells.push(cell(
            "DELETE /api/v1/keys/{id}",
            caller,
            target,
            Method::DELETE,
            format!("/api/v1/keys/{id}"),
            token,
            None,
            expect,
        ));
    }
    cells.extend([
        cell(
            "DELETE /api/v1/keys/{id}",
            MASTER,
            "own org, master key (itself)",
            Method::DELETE,
            format!("/api/v1/keys/{ma_id}"),
            &ma,
            None,
            RefusedAndStillWorks(StatusCode::FORBIDDEN, "forbidden", ma.clone()),
        ),
        cell(
            "DELETE /api/v1/keys/{id}",
            MASTER,
            "other org, master key",
            Method::DELETE,
            format!("/api/v1/keys/{mb_id}"),
            &ma,
            None,
            RefusedAndStillWorks(StatusCode::NOT_FOUND, "not_found", mb.clone()),
        ),
        cell(
            "DELETE /api/v1/keys/{id}",
            PROJECT,
            "own org, master key",
            Method::DELETE,
            format!("/api/v1/keys/{ma_id}"),
            &pp,
            None,
            RefusedAndStillWorks(StatusCode::NOT_FOUND, "not_found", ma.clone()),
        ),
        cell(
            "DELETE /api/v1/keys/{id}",
            PROJECT,
            "other org, master key",
            Method::DELETE,
            format!("/api/v1/keys/{mb_id}"),
            &pp,
            None,
            RefusedAndStillWorks(StatusCode::NOT_FOUND, "not_found", mb.clone()),
        ),
    ]);
    let (self_id, self_key) = key_in(&app, &ma, &p).await;
    cells.push(cell(
        "DELETE /api/v1/keys/{id}",
        "another project key of P",
        "own org, own project (itself)",
        Method::DELETE,
        format!("/api/v1/keys/{self_id}"),
        &self_key,
        None,
        Revoked(self_key.clone()),
    ));
    // GET /api/v1/auth/verify: the caller's identity, whatever it claims in headers.
    for (caller, token, project, key_id) in [
        (MASTER, &ma, None, &ma_id),
        (PROJECT, &pp, Some(p.clone()), &pp_id),
    ] {
        for (target, spoofed_org, spoofed_project) in [
            (OWN_OWN, None, None),
            (
                "own org, other project (X-LogStitch-Project-Id sent)",
                None,
                Some(q.clone()),
            ),
            (
                "other org (X-LogStitch-* headers sent)",
                Some(b.organization_id.clone()),
                Some(r.clone()),
            ),
        ] {
            let mut verify = cell(
                "GET /api/v1/auth/verify",
                caller,
                target,
                Method::GET,
                "/api/v1/auth/verify".into(),
                token,
                None,
                Identity(a.organization_id.clone(), project.clone(), key_id.clone()),
            );
            if let Some(org) = spoofed_org {
                verify.headers.push(("X-LogStitch-Organization-Id", org));
            }
            if let Some(project) = spoofed_project {
                verify.headers.push(("X-LogStitch-Project-Id", project));
            }
            cells.push(verify);
        }
    }
    // GET /api/v1/keys/{id}/usage: as the key list. GET /api/v1/usage: master only.
    for (caller, token) in [(MASTER, &ma), (PROJECT, &pp)] {
        for (target, key, project) in [(OWN_OWN, &kp, &p), (OWN_OTHER, &kq, &q), (OTHER, &kr, &r)] {
            let readable = target == OWN_OWN || (caller == MASTER && target == OWN_OTHER);
            cells.push(cell(
                "GET /api/v1/keys/{id}/usage",
                caller,
                target,
                Method::GET,
                format!("/api/v1/keys/{key}/usage"),
                token,
                None,
                if readable {
                    UsageRead
                } else {
                    Refused(StatusCode::NOT_FOUND, "not_found")
                },
            ));
            cells.push(cell(
                "GET /api/v1/usage?project_id=",
                caller,
                target,
                Method::GET,
                format!("/api/v1/usage?project_id={project}"),
                token,
                None,
                match (caller, target) {
                    (PROJECT, _) => forbidden(),
                    (_, OTHER) => Refused(StatusCode::NOT_FOUND, "not_found"),
                    _ => UsageRead,
                },
            ));
        }
    }
    cells.extend([
        // POST /api/v1/projects: always in the caller's organization.
        cell(
            "POST /api/v1/projects",
            MASTER,
            "own org",
            Method::POST,
            "/api/v1/projects".into(),
            &ma,
            Some(json!({"name": "mine"})),
            ProjectCreated {
                listed_by: ma.clone(),
                not_listed_by: mb.clone(),
            },
        ),
        cell(
            "POST /api/v1/projects",
            MASTER,
            "other org (organization_id in body)",
            Method::POST,
            "/api/v1/projects".into(),
            &ma,
            Some(json!({"name": "theirs", "organization_id": b.organization_id})),
            ProjectCreated {
                listed_by: ma.clone(),
                not_listed_by: mb.clone(),
            },
        ),
        cell(
            "POST /api/v1/projects",
            PROJECT,
            "own org",
            Method::POST,
            "/api/v1/projects".into(),
            &pp,
            Some(json!({"name": "x"})),
            forbidden(),
        ),
        cell(
            "POST /api/v1/projects",
            PROJECT,
            "other org (organization_id in body)",
            Method::POST,
            "/api/v1/projects".into(),
            &pp,
            Some(json!({"name": "x", "organization_id": b.organization_id})),
            forbidden(),
        ),
        // GET /api/v1/projects
        cell(
            "GET /api/v1/projects",
            MASTER,
            OWN_OWN,
            Method::GET,
            "/api/v1/projects".into(),
            &ma,
            None,
            ProjectListed(p.clone(), true),
        ),
        cell(
            "GET /api/v1/projects",
            MASTER,
            OWN_OTHER,
            Method::GET,
            "/api/v1/projects".into(),
            &ma,
            None,
            ProjectListed(q.clone(), true),
        ),
        cell(
            "GET /api/v1/projects",
            MASTER,
            OTHER,
            Method::GET,
            "/api/v1/projects".into(),
            &ma,
            None,
            ProjectListed(r.clone(), false),
        ),
        cell(
            "GET /api/v1/projects",
            MASTER,
            "other org, asked by query",
            Method::GET,
            format!("/api/v1/projects?organization_id={}", b.organization_id),
            &ma,
            None,
            ProjectListed(r.clone(), false),
        ),
        cell(
            "GET /api/v1/projects",
            PROJECT,
            OWN_OWN,
            Method::GET,
            "/api/v1/projects".into(),
            &pp,
            None,
            forbidden(),
        ),
        cell(
            "GET /api/v1/projects",
            PROJECT,
            OTHER,
            Method::GET,
            "/api/v1/projects".into(),
            &pp,
            None,
            forbidden(),
        ),
    ]);

    let mut rows = Vec::new();
    let mut failures = 0;
    for cell in &cells {
        let outcome = run_cell(&app, cell).await;
        failures += usize::from(outcome.is_err());
        rows.push(format!(
            "{:<4} {:<26} | {:<24} | {:<54} | {:<36} | {}",
            if outcome.is_ok() { "ok" } else { "FAIL" },
            cell.route,
            cell.caller,
            cell.target,
            cell.expect.describe(),
            outcome.unwrap_or_else(|e| e),
        ));
    }
    // Every route and both key types are covered.
    for route in [
        "POST /api/v1/keys",
        "GET /api/v1/keys",
        "DELETE /api/v1/keys/{id}",
        "GET /api/v1/auth/verify",
        "POST /api/v1/projects",
        "GET /api/v1/projects",
    ] {
        for caller in [MASTER, PROJECT] {
            assert!(
                cells.iter().any(|c| c.route == route && c.caller == caller),
                "no cell for {route} as {caller}"
            );
        }
    }
    assert!(
        failures == 0,
        "{failures} of {} cells differ from the README's rules:\n     {:<26} | {:<24} | {:<54} | {:<36} | got\n{}",
        cells.len(),
        "route",
        "caller",
        "target",
        "expected",
        rows.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Fuzzing through the server: the Authorization header and JSON bodies
// ---------------------------------------------------------------------------------------------

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

/// Bytes allowed in a header value by the HTTP parser (no CR, LF, NUL or other controls).
fn header_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => 0x21u8..=0x7e,
        1 => Just(b' '),
        1 => Just(b'\t'),
        2 => 0x80u8..=0xff,
    ]
}

/// Arbitrary Authorization values, mutations of a real key, and the real key padded.
fn authorization(valid_key: String) -> impl Strategy<Value = Vec<u8>> {
    let scheme = prop_oneof![
        Just("Bearer ".to_owned()),
        Just("bearer ".to_owned()),
        Just("BEARER ".to_owned()),
        Just("bEaReR  ".to_owned()),
        Just("Bearer\t".to_owned()),
        Just("Bearer".to_owned()),
        Just("Basic ".to_owned()),
        Just(String::new()),
        "[A-Za-z]{1,8} ",
    ];
    let key = valid_key.clone();
    // Characters the HTTP parser lets through (it answers 400 itself to ASCII controls but tab).
    let header_char =
        any::<char>().prop_filter("valid in a header", |c| !c.is_ascii_control() || *c == '\t');
    let mutated = (0usize..41, header_char).prop_filter_map("changed", move |(at, c)| {
        let mut chars: Vec<char> = key.chars().collect();
        (chars[at] != c).then(|| {
            chars[at] = c;
            chars.into_iter().collect::<String>()
        })
    });
    let key = valid_key.clone();
    let multibyte =
        (0usize..39, prop::char::range('\u{80}', '\u{10ffff}')).prop_map(move |(at, wide)| {
            let width = wide.len_utf8();
            let at = at.min(41 - width);
            format!("{}{wide}{}", &key[..at], &key[at + width..])
        });
    let key = valid_key.clone();
    let padded = ("[ \t]{0,3}", "[ \t]{0,3}")
        .prop_map(move |(before, after)| format!("{before}{key}{after}"));
    let token = prop_oneof![
        prop::collection::vec(header_byte(), 0..80),
        mutated.prop_map(String::into_bytes),
        multibyte.prop_map(String::into_bytes),
        "[A-Za-z0-9_]{38,44}".prop_map(String::into_bytes),
        padded.prop_map(String::into_bytes),
    ];
    (scheme, token).prop_map(|(scheme, token)| {
        let mut value = scheme.into_bytes();
        value.extend_from_slice(&token);
        value
    })
}

/// The README's rule: `Bearer` (any case), one space, the key; surrounding whitespace is
/// ignored (the HTTP parser drops it around the value, the service around the token).
fn carries_the_key(value: &[u8], key: &str) -> bool {
    let value = value.trim_ascii();
    value.len() > 7
        && value[..7].eq_ignore_ascii_case(b"bearer ")
        && std::str::from_utf8(&value[7..]).is_ok_and(|token| token.trim() == key)
}

/// Never a 5xx, never a dropped connection: 200 for a valid key however it is padded or its
/// scheme cased, else 401 in the envelope. Would have caught `check_format` panicking on a
/// multi-byte character across byte 3 (an empty reply instead of a 401).
#[actix_web::test]
async fn fuzzed_authorization_headers_are_answered_in_the_envelope() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db, |settings| {
        settings.rate_limit.failed_auth_burst = std::num::NonZeroU32::new(1_000_000).unwrap();
    })
    .await;
    let org = app.create_org("Fuzz").await;
    let (_, key) = app.new_project_key(&org).await;
    let port = app.port;
    let started = Instant::now();
    let result = blocking(move || {
        // First, deterministically: one character of every UTF-8 width across each of the first
        // bytes (where `check_format` once sliced a `&str` mid-character and panicked, so the
        // connection dropped without an answer).
        for at in 0..5 {
            for wide in ['é', '€', '🔑'] {
                let width = wide.len_utf8();
                let token = format!("{}{wide}{}", &key[..at], &key[at + width..]);
                let reply = raw_exchange(
                    port,
                    "GET",
                    "/api/v1/auth/verify",
                    &[("Authorization", format!("Bearer {token}").as_bytes())],
                    b"",
                );
                if reply.status != Some(401)
                    || check_envelope(&reply).as_deref() != Ok("invalid_api_key")
                {
                    return Err(format!("{token:?}: {reply:?}"));
                }
            }
        }
        runner(256)
            .run(&authorization(key.clone()), |value| {
                let valid = carries_the_key(&value, &key);
                let reply = raw_exchange(
                    port,
                    "GET",
                    "/api/v1/auth/verify",
                    &[("Authorization", &value)],
                    b"",
                );
                let shown = String::from_utf8_lossy(&value).into_owned();
                let status = reply.status.ok_or_else(|| {
                    TestCaseError::fail(format!(
                        "no reply to Authorization {shown:?} (closed: {})",
                        reply.closed
                    ))
                })?;
                if valid {
                    prop_assert_eq!(status, 200, "{:?}: {}", shown, reply.text());
                } else {
                    prop_assert_eq!(status, 401, "{:?}: {}", shown, reply.text());
                    let code = check_envelope(&reply).map_err(TestCaseError::fail)?;
                    prop_assert!(
                        code == "unauthorized" || code == "invalid_api_key",
                        "{}",
                        code
                    );
                }
                Ok(())
            })
            .map_err(|error| error.to_string())
    })
    .await;
    if let Err(error) = result {
        panic!("{error}");
    }
    eprintln!("authorization fuzz: 256 cases in {:?}", started.elapsed());
    // Control bytes never reach the service: actix's parser answers 400 (without the
    // envelope, which only the application writes) — never a 5xx — and keeps serving.
    let refused = blocking(move || {
        [
            &b"Bearer \x7fk_"[..],
            b"Bearer \x00",
            b"\x01Bearer x",
            b"Bearer a\x1bb",
        ]
        .iter()
        .map(|value| {
            raw_exchange(
                port,
                "GET",
                "/api/v1/auth/verify",
                &[("Authorization", value)],
                b"",
            )
        })
        .collect::<Vec<_>>()
    })
    .await;
    for reply in refused {
        assert_eq!(reply.status, Some(400), "{reply:?}");
    }
    assert_eq!(
        app.request(Method::GET, "/healthz", None, None)
            .await
            .status,
        StatusCode::OK
    );
}

/// Arbitrary JSON, plus objects shaped like the bodies (known fields with arbitrary or real
/// values, extra fields), so the field checks are reached and some creates succeed.
fn json_body(project_id: String, other_project: String) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
        "\\PC{0,120}".prop_map(Value::String),
        prop::sample::select(vec!["project", "master", "", " ", "\u{0}", "null"])
            .prop_map(|s| Value::String(s.into())),
    ];
    let value = leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let project = prop_oneof![
        3 => Just(Value::String(project_id)),
        1 => Just(Value::String(other_project)),
        1 => Just(Value::String(Uuid::new_v4().to_string())),
        1 => value.clone(),
    ];
    let key_type =
        prop_oneof![3 => Just(json!("project")), 1 => Just(json!("master")), 1 => value.clone()];
    let name = prop_oneof![
        3 => "[a-zA-Z0-9]{1,30}".prop_map(Value::String),
        1 => "\\PC{0,110}".prop_map(Value::String),
        1 => value.clone(),
    ];
    let shaped = (
        prop::option::weighted(0.9, project),
        prop::option::weighted(0.9, key_type),
        prop::option::weighted(0.9, name),
        prop::collection::btree_map("[a-z_]{1,12}", value.clone(), 0..3),
    )
        .prop_map(|(project, key_type, name, extra)| {
            let mut object: serde_json::Map<String, Value> = extra.into_iter().collect();
            for (field, value) in [("project_id", project), ("type", key_type), ("name", name)] {
                if let Some(value) = value {
                    object.insert(field.to_owned(), value);
                }
            }
            Value::Object(object)
        });
    prop_oneof![1 => value, 2 => shaped]
}

/// Success shapes of the two create routes.
fn check_created(path: &str, reply: &RawReply) -> Result<(), String> {
    let body = reply.json();
    let mut fields: Vec<&str> = body
        .as_object()
        .map(|o| o.keys().map(|k| k.as_str()).collect())
        .unwrap_or_default();
    fields.sort();
    let expected: &[&str] = if path == "/api/v1/keys" {
        &["key", "name", "prefix", "request_id", "scopes", "type"]
    } else {
        &["createdAt", "id", "name", "request_id"]
    };
    if fields != expected {
        return Err(format!("201 with fields {fields:?}: {}", reply.text()));
    }
    if path == "/api/v1/keys"
        && ApiKey::check_format(body["key"].as_str().unwrap_or_default()) != Ok(KeyType::Project)
    {
        return Err(format!("201 with a malformed key: {}", reply.text()));
    }
    Ok(())
}

/// Arbitrary JSON bodies to POST /api/v1/keys and /api/v1/projects with a valid master key:
/// never a 5xx, always the envelope (or the documented 201), bounded to 200 bodies.
#[actix_web::test]
async fn fuzzed_json_bodies_never_yield_a_5xx_and_always_the_envelope() {
    let app = spawn_app().await;
    let org = app.create_org("Bodies").await;
    let other = app.create_org("Other").await;
    let port = app.port;
    let master_key = org.master_key.clone();
    let projects = (org.project_id.clone(), other.project_id.clone());
    let started = Instant::now();
    let result = blocking(move || {
        // Built here: recursive strategies are not Send.
        let strategy = json_body(projects.0, projects.1);
        let authorization = format!("Bearer {master_key}");
        let send = |path: &str, body: &[u8]| {
            raw_exchange(
                port,
                "POST",
                path,
                &[
                    ("Authorization", authorization.as_bytes()),
                    ("Content-Type", b"application/json"),
                ],
                body,
            )
        };
        // Bodies no strategy is likely to produce: deep nesting, huge numbers, bad UTF-8.
        let mut fixed: Vec<Vec<u8>> = vec![
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            format!("{}1{}", "{\"a\":".repeat(3000), "}".repeat(3000)).into_bytes(),
            b"1e999999".to_vec(),
            b"{\"name\": 1e999999}".to_vec(),
            b"{\"name\": \"\xff\xfe\"}".to_vec(),
            b"{\"name\": \"\\ud800\"}".to_vec(),
            b"".to_vec(),
            b"\xef\xbb\xbf{}".to_vec(),
        ];
        fixed.push(format!("{{\"name\": \"{}\"}}", "x".repeat(60_000)).into_bytes());
        for body in &fixed {
            for path in ["/api/v1/keys", "/api/v1/projects"] {
                let reply = send(path, body);
                let status = reply
                    .status
                    .ok_or_else(|| format!("no reply to a fixed body on {path}"))?;
                if status != 400 {
                    return Err(format!("{path} answered {status}: {}", reply.text()));
                }
                check_envelope(&reply)?;
            }
        }
        // A repeated field: the last one counts (serde_json), as for any JSON object.
        let reply = send("/api/v1/projects", br#"{"name": "\u0000", "name": "last"}"#);
        if reply.status != Some(201) || reply.json()["name"] != "last" {
            return Err(format!("repeated field: {}", reply.text()));
        }
        let seen = std::cell::RefCell::new(std::collections::BTreeMap::<String, u32>::new());
        runner(200)
            .run(&strategy, |value| {
                let body = serde_json::to_vec(&value).unwrap();
                for (path, allowed) in [
                    ("/api/v1/keys", &[201u16, 400, 404][..]),
                    ("/api/v1/projects", &[201, 400][..]),
                ] {
                    let reply = send(path, &body);
                    let status = reply
                        .status
                        .ok_or_else(|| TestCaseError::fail(format!("no reply on {path}")))?;
                    prop_assert!(
                        allowed.contains(&status),
                        "{} answered {}: {}",
                        path,
                        status,
                        reply.text()
                    );
                    *seen
                        .borrow_mut()
                        .entry(format!("{path} {status}"))
                        .or_default() += 1;
                    if status == 201 {
                        check_created(path, &reply).map_err(TestCaseError::fail)?;
                    } else {
                        let code = check_envelope(&reply).map_err(TestCaseError::fail)?;
                        prop_assert!(
                            code == "validation_error" || code == "not_found",
                            "{}",
                            code
                        );
                    }
                }
                Ok(())
            })
            .map_err(|error| error.to_string())?;
        Ok(seen.into_inner())
    })
    .await;
    let seen = result.unwrap_or_else(|error| panic!("{error}"));
    eprintln!(
        "JSON body fuzz: 200 bodies x 2 routes in {:?}: {seen:?}",
        started.elapsed()
    );
    // The bodies reached past the JSON parser into the field checks, and some were valid.
    for outcome in [
        "/api/v1/keys 400",
        "/api/v1/keys 201",
        "/api/v1/keys 404",
        "/api/v1/projects 201",
    ] {
        assert!(seen.contains_key(outcome), "no {outcome} among {seen:?}");
    }
    assert_eq!(app.verify(&org.master_key).await.status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// Slow, oversized and too many clients
// ---------------------------------------------------------------------------------------------

/// (a) A client that sends its request head slower than `server.client_request_timeout_ms`
/// (500 ms here) is answered 408 or closed within 2 s — whether it sends nothing at all or
/// trickles one byte every 100 ms. (No lower bound: actix-http computes the deadline from a
/// clock it refreshes every 500 ms, so a 500 ms timeout may fire almost at once.)
#[actix_web::test]
async fn a_slow_request_head_is_cut_off() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db, |settings| {
        settings.server.client_request_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let port = app.port;
    let (silent, trickle) = blocking(move || {
        // Nothing at all after connecting.
        let mut stream = connect(port);
        let silent = read_raw_reply(&mut stream, Duration::from_secs(3));
        // One byte every 100 ms, never finishing the head.
        let mut stream = connect(port);
        let mut writer = stream.try_clone().unwrap();
        let trickler = std::thread::spawn(move || {
            for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                if writer.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let trickle = read_raw_reply(&mut stream, Duration::from_secs(3));
        let _ = stream.shutdown(Shutdown::Both);
        trickler.join().unwrap();
        (silent, trickle)
    })
    .await;
    for (what, reply) in [
        ("a silent client", &silent),
        ("a trickling client", &trickle),
    ] {
        assert!(
            reply.closed || reply.status == Some(408),
            "{what} was neither answered 408 nor closed within 3 s: {reply:?}"
        );
        assert!(
            reply.elapsed < Duration::from_secs(2),
            "{what} was cut off only after {:?}",
            reply.elapsed
        );
    }
    // The server still serves.
    assert_eq!(
        app.request(Method::GET, "/healthz", None, None)
            .await
            .status,
        StatusCode::OK
    );
}

/// (b) A JSON body slower than `server.body_read_timeout_ms` (500 ms here) gets 408
/// `request_timeout` in the envelope: a body announced (Content-Length: 100) and never sent,
/// and one trickled a byte every 100 ms; on the create routes and the admin route.
#[actix_web::test]
async fn a_slow_json_body_is_408_request_timeout() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db, |settings| {
        settings.server.body_read_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let org = app.create_org("Slow").await;
    let port = app.port;
    let before = app.row_counts().await;
    let cases = vec![
        ("/api/v1/keys", format!("Bearer {}", org.master_key), false),
        (
            "/api/v1/projects",
            format!("Bearer {}", org.master_key),
            true,
        ),
        (
            "/admin/v1/organizations",
            format!("Bearer {}", app.admin_token),
            false,
        ),
    ];
    let replies = blocking(move || {
        cases
            .into_iter()
            .map(|(path, authorization, trickle)| {
                let mut stream = connect(port);
                let head = format!(
                    "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {authorization}\r\n\
                     Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                );
                stream.write_all(head.as_bytes()).unwrap();
                let trickler = trickle.then(|| {
                    let mut writer = stream.try_clone().unwrap();
                    std::thread::spawn(move || {
                        for byte in b"{\"name\": \"slow".iter() {
                            if writer.write_all(&[*byte]).is_err() {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    })
                });
                let reply = read_raw_reply(&mut stream, Duration::from_secs(3));
                let _ = stream.shutdown(Shutdown::Both);
                if let Some(trickler) = trickler {
                    trickler.join().unwrap();
                }
                (path, reply)
            })
            .collect::<Vec<_>>()
    })
    .await;
    for (path, reply) in &replies {
        assert_eq!(reply.status, Some(408), "{path}: {reply:?}");
        assert_eq!(
            check_envelope(reply).as_deref(),
            Ok("request_timeout"),
            "{path}: {}",
            reply.text()
        );
        assert!(
            reply.elapsed >= Duration::from_millis(400) && reply.elapsed < Duration::from_secs(2),
            "{path}: 408 after {:?}",
            reply.elapsed
        );
    }
    assert_eq!(
        app.row_counts().await,
        before,
        "a timed-out body changed something"
    );
}

/// (c) A request head over actix-http's limit (128 KiB of head; a 40 KB header is within it)
/// or with more than its 96 headers is refused 431 — never a 5xx — and the next
/// request is served. A 40 KB header, being within the limit, is served normally.
#[actix_web::test]
async fn an_oversized_request_head_is_refused_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let org = app.create_org("Heads").await;
    let port = app.port;
    let master_key = org.master_key.clone();
    let (within, too_large, too_large_keyed, too_many, after) = blocking(move || {
        let big = |size: usize| vec![b'a'; size];
        let within = raw_exchange(port, "GET", "/healthz", &[("X-Big", &big(40 * 1024))], b"");
        let too_large = raw_exchange(port, "GET", "/healthz", &[("X-Big", &big(140 * 1024))], b"");
        let authorization = format!("Bearer {master_key}");
        let too_large_keyed = raw_exchange(
            port,
            "GET",
            "/api/v1/keys",
            &[
                ("Authorization", authorization.as_bytes()),
                ("X-Big", &big(200 * 1024)),
            ],
            b"",
        );
        let names: Vec<String> = (0..120).map(|i| format!("X-Many-{i}")).collect();
        let many: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"1"[..])).collect();
        let too_many = raw_exchange(port, "GET", "/healthz", &many, b"");
        let after = raw_exchange(port, "GET", "/healthz", &[], b"");
        (within, too_large, too_large_keyed, too_many, after)
    })
    .await;
    assert_eq!(
        within.status,
        Some(200),
        "a 40 KB header is within actix's limit: {within:?}"
    );
    for (what, reply, allowed) in [
        ("a 140 KB header", &too_large, &[431u16][..]),
        (
            "a 200 KB header with a valid key",
            &too_large_keyed,
            &[431][..],
        ),
        ("120 headers", &too_many, &[431][..]),
    ] {
        let status = reply
            .status
            .unwrap_or_else(|| panic!("{what}: no status: {reply:?}"));
        assert!(
            allowed.contains(&status),
            "{what} answered {status}: {reply:?}"
        );
    }
    assert_eq!(
        after.status,
        Some(200),
        "the server stopped serving: {after:?}"
    );
    assert_eq!(app.verify(&org.master_key).await.status, StatusCode::OK);
}

/// (d) `server.max_connections` = 2 with one worker: with two idle keep-alive connections
/// open, a third connection's request is not answered (it waits in the accept backlog) until
/// one of the two closes, and then it is.
#[actix_web::test]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let db = TestDatabase::create().await;
    let mut app = spawn_app_with(db, |settings| {
        settings.server.max_connections = std::num::NonZeroUsize::new(2).unwrap();
        settings.server.workers = 1;
        settings.server.keep_alive = std::time::Duration::from_secs(30);
    })
    .await;
    // The readiness checks left a pooled keep-alive connection in the test client: drop the
    // client (and with it that connection) so the two slots are ours.
    app.client = crate::http_client::Client::new();
    let port = app.port;
    let result = blocking(move || {
        std::thread::sleep(Duration::from_millis(200));
        let request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        let mut idle = Vec::new();
        for n in 0..2 {
            let mut stream = connect(port);
            stream.write_all(request).unwrap();
            let reply = read_raw_reply(&mut stream, Duration::from_secs(5));
            if reply.status != Some(200) {
                return Err(format!("keep-alive connection {n} not served: {reply:?}"));
            }
            idle.push(stream);
        }
        let mut third = connect(port);
        third.write_all(request).unwrap();
        let early = read_raw_reply(&mut third, Duration::from_millis(300));
        if early.status.is_some() || early.closed {
            return Err(format!(
                "the third connection was served while two were open: {early:?}"
            ));
        }
        drop(idle.remove(0));
        let late = read_raw_reply(&mut third, Duration::from_secs(3));
        if late.status != Some(200) {
            return Err(format!(
                "the third connection was not served after one closed: {late:?}"
            ));
        }
        Ok(late.elapsed)
    })
    .await;
    match result {
        Ok(waited) => assert!(
            waited < Duration::from_secs(2),
            "served {waited:?} after a slot freed"
        ),
        Err(problem) => panic!("{problem}"),
    }
}

/// A known gap, kept as a test of the behaviour we would want (run with `--ignored`): actix-http
/// 3 applies `client_request_timeout` to the *first* request of a connection only, and clears
/// the keep-alive timer as soon as any byte of the next request arrives. A client that sends
/// one complete request and then a few bytes of a second one holds the connection (and one of
/// `server.max_connections`) indefinitely. Mitigation until actix changes: a reverse proxy or
/// load balancer with per-request header timeouts in front (see SECURITY.md).
#[actix_web::test]
#[ignore = "actix-http 3 limitation: no head timeout after the first request (SECURITY.md)"]
async fn a_slow_second_request_head_on_a_keep_alive_connection_is_cut_off() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db, |settings| {
        settings.server.client_request_timeout = std::time::Duration::from_millis(500);
        settings.server.keep_alive = std::time::Duration::from_secs(1);
    })
    .await;
    let port = app.port;
    let reply = blocking(move || {
        let mut stream = connect(port);
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let first = read_raw_reply(&mut stream, Duration::from_secs(5));
        assert_eq!(first.status, Some(200), "{first:?}");
        stream.write_all(b"GET /heal").unwrap();
        read_raw_reply(&mut stream, Duration::from_secs(5))
    })
    .await;
    assert!(
        reply.closed || reply.status == Some(408),
        "a partial second request head held the connection open for 5 s: {reply:?}"
    );
}
