//! The `logstitch-gateway` binary: migrate, org create, project create, serve, and settings
//! errors. Each test runs the real binary against its own fresh database.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{assert_exact_fields, spawn_app_with, TestDatabase};

/// The binary, with `DATABASE_URL` set to `db` and no LOGSTITCH settings inherited.
pub fn gateway(db: &TestDatabase) -> Command {
    let mut command = crate::helpers::binary();
    command
        .env("DATABASE_URL", &db.url)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null());
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and exactly one line on stdout, a JSON object; returns it.
fn one_json_line(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}; stderr: {}",
        output.status,
        stderr(output)
    );
    let out = stdout(output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line on stdout: {out:?}");
    assert!(out.ends_with('\n'));
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"))
}

/// Asserts a non-zero exit with nothing on stdout and a message on stderr; returns stderr.
fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected failure; stdout: {}",
        stdout(output)
    );
    assert!(
        output.stdout.is_empty(),
        "nothing on stdout: {}",
        stdout(output)
    );
    let err = stderr(output);
    assert!(!err.trim().is_empty(), "a message on stderr");
    err
}

async fn org_create(db: &TestDatabase, name: &str) -> Value {
    let output = run(gateway(db).args(["org", "create", "--name", name]));
    one_json_line(&output)
}

/// How many rows `table` has, or None when it does not exist (not migrated).
async fn rows_in(db: &TestDatabase, table: &str) -> Option<i64> {
    let client = db.client().await;
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
        .await
        .unwrap()
        .get(0);
    if !exists {
        return None;
    }
    let row = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap();
    Some(row.get(0))
}

fn temp_file(contents: &str) -> TempFile {
    let path = std::env::temp_dir().join(format!("logstitch-test-{}.toml", Uuid::new_v4()));
    std::fs::write(&path, contents).expect("write temp file");
    TempFile(path)
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

// ---- org create ----

#[actix_web::test]
async fn org_create_prints_one_json_line_with_a_working_master_key() {
    let db = TestDatabase::create().await;
    let created = org_create(&db, "Acme").await;
    assert_exact_fields(&created, &["organization_id", "project_id", "master_key"]);
    let organization_id = created["organization_id"].as_str().unwrap();
    let project_id = created["project_id"].as_str().unwrap();
    let master_key = created["master_key"].as_str().unwrap();
    assert!(Uuid::parse_str(organization_id).is_ok());
    assert!(Uuid::parse_str(project_id).is_ok());
    assert!(master_key.starts_with("mk_"), "{master_key}");

    // A server on the same database accepts the key.
    let app = spawn_app_with(Arc::clone(&db), |_| {}).await;
    let keys = app.key_items(master_key).await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_eq!(keys[0]["type"], "master");
    assert_eq!(keys[0]["prefix"], &master_key[..7]);
    let verified = app.verify(master_key).await;
    assert_eq!(verified.body["organization_id"], organization_id);
    let projects = app
        .request(Method::GET, "/api/v1/projects", Some(master_key), None)
        .await;
    assert_eq!(projects.status, StatusCode::OK, "{projects:?}");
    assert_eq!(projects.body["projects"][0]["id"], project_id);
    assert_eq!(projects.body["projects"][0]["name"], "Default");
    let key = app.create_key(master_key, project_id, "from cli org").await;
    assert_eq!(key.status, StatusCode::CREATED, "{key:?}");
}

#[actix_web::test]
async fn org_create_stores_only_the_hash_of_the_master_key() {
    let db = TestDatabase::create().await;
    let created = org_create(&db, "Acme").await;
    let master_key = created["master_key"].as_str().unwrap();
    let client = db.client().await;
    for table in ["organizations", "projects", "api_keys"] {
        let rows = client
            .query(&format!("SELECT row_to_json(t)::text FROM {table} t"), &[])
            .await
            .unwrap();
        for row in rows {
            let text: String = row.get(0);
            assert!(!text.contains(&master_key[3..]), "{table}: {text}");
        }
    }
}

#[actix_web::test]
async fn org_create_refuses_an_empty_blank_or_long_name() {
    let db = TestDatabase::create().await;
    for name in ["", "   ", &"a".repeat(101)] {
        let output = run(gateway(&db).args(["org", "create", "--name", name]));
        let err = failure(&output);
        assert!(err.contains("name"), "stderr names the argument: {err}");
    }
    assert!(matches!(
        rows_in(&db, "organizations").await,
        None | Some(0)
    ));
}

#[actix_web::test]
async fn org_create_without_a_name_fails() {
    let db = TestDatabase::create().await;
    let output = run(gateway(&db).args(["org", "create"]));
    failure(&output);
    assert!(matches!(
        rows_in(&db, "organizations").await,
        None | Some(0)
    ));
}

// ---- project create ----

#[actix_web::test]
async fn project_create_prints_id_name_and_organization() {
    let db = TestDatabase::create().await;
    let org = org_create(&db, "Acme").await;
    let organization_id = org["organization_id"].as_str().unwrap();
    let output = run(gateway(&db).args([
        "project",
        "create",
        "--org",
        organization_id,
        "--name",
        "Mobile app",
    ]));
    let project = one_json_line(&output);
    assert_exact_fields(&project, &["id", "name", "organization_id"]);
    assert_eq!(project["name"], "Mobile app");
    assert_eq!(project["organization_id"], organization_id);
    let project_id = project["id"].as_str().unwrap();
    assert!(Uuid::parse_str(project_id).is_ok());
    assert_ne!(project_id, org["project_id"].as_str().unwrap());

    let app = spawn_app_with(Arc::clone(&db), |_| {}).await;
    let master_key = org["master_key"].as_str().unwrap();
    let projects = app
        .request(Method::GET, "/api/v1/projects", Some(master_key), None)
        .await;
    let listed: Vec<&Value> = projects.body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert!(
        listed
            .iter()
            .any(|p| p["id"] == project_id && p["name"] == "Mobile app"),
        "{projects:?}"
    );
    let key = app.create_key(master_key, project_id, "mobile").await;
    assert_eq!(key.status, StatusCode::CREATED, "{key:?}");
}

#[actix_web::test]
async fn cli_changes_are_audited_with_the_cli_as_actor() {
    let db = TestDatabase::create().await;
    let org = org_create(&db, "Acme").await;
    let organization_id = org["organization_id"].as_str().unwrap();
    let project = one_json_line(&run(gateway(&db).args([
        "project",
        "create",
        "--org",
        organization_id,
        "--name",
        "From the shell",
    ])));
    let app = spawn_app_with(Arc::clone(&db), |_| {}).await;
    let master_key = org["master_key"].as_str().unwrap();
    let events = app
        .request(Method::GET, "/api/v1/audit-events", Some(master_key), None)
        .await;
    assert_eq!(events.status, StatusCode::OK, "{events:?}");
    let events = events.body["events"].as_array().unwrap();
    let summary: Vec<(&str, &Value)> = events
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), &e["target"]["id"]))
        .collect();
    assert_eq!(
        summary,
        [
            ("project.created", &project["id"]),
            ("organization.created", &org["organization_id"]),
        ]
    );
    for event in events {
        assert_eq!(event["actor"], serde_json::json!({"type": "cli"}));
        assert_eq!(event["ip"], Value::Null);
        assert_eq!(event["userAgent"], Value::Null);
        assert_eq!(event["requestId"], Value::Null);
    }
}

#[actix_web::test]
async fn project_create_with_a_bad_org_fails() {
    let db = TestDatabase::create().await;
    org_create(&db, "Acme").await;
    let unknown = Uuid::new_v4().to_string();
    for org in [unknown.as_str(), "not-a-uuid", ""] {
        let output = run(gateway(&db).args(["project", "create", "--org", org, "--name", "x"]));
        failure(&output);
    }
    assert_eq!(rows_in(&db, "projects").await, Some(1), "only Default");
}

#[actix_web::test]
async fn project_create_with_a_bad_name_fails() {
    let db = TestDatabase::create().await;
    let org = org_create(&db, "Acme").await;
    let organization_id = org["organization_id"].as_str().unwrap();
    for name in ["", "  ", &"x".repeat(101)] {
        let output = run(gateway(&db).args([
            "project",
            "create",
            "--org",
            organization_id,
            "--name",
            name,
        ]));
        failure(&output);
    }
    assert_eq!(rows_in(&db, "projects").await, Some(1), "only Default");
}

// ---- migrate ----

#[actix_web::test]
async fn migrate_creates_the_schema_and_is_idempotent() {
    let db = TestDatabase::create().await;
    assert_eq!(rows_in(&db, "api_keys").await, None);
    for _ in 0..2 {
        let output = run(gateway(&db).arg("migrate"));
        assert!(output.status.success(), "stderr: {}", stderr(&output));
        assert!(output.stdout.is_empty(), "{}", stdout(&output));
    }
    for table in ["organizations", "projects", "api_keys"] {
        assert_eq!(rows_in(&db, table).await, Some(0), "{table}");
    }
}

#[actix_web::test]
async fn migrate_against_an_unreachable_database_fails() {
    let db = TestDatabase::create().await;
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = Instant::now();
    let output = run(gateway(&db)
        .env(
            "DATABASE_URL",
            format!("postgres://postgres@127.0.0.1:{closed_port}/nope"),
        )
        .arg("migrate"));
    failure(&output);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[actix_web::test]
async fn an_unreachable_database_is_named_by_address_and_setting_never_by_password() {
    let db = TestDatabase::create().await;
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres:pa55word@127.0.0.1:{closed_port}/nope");
    for args in [
        &["migrate"][..],
        &["org", "list"],
        &["serve", "--listen", "127.0.0.1:0"],
    ] {
        let err = failure(&run(gateway(&db).env("DATABASE_URL", &url).args(args)));
        assert!(
            err.contains(&format!(
                "127.0.0.1:{closed_port}/nope (user postgres, from DATABASE_URL)"
            )),
            "{args:?}: {err}"
        );
        assert!(err.contains("error connecting"), "{args:?}: {err}");
        assert!(
            !err.contains("pa55word"),
            "{args:?}: the password is shown: {err}"
        );
    }
    // The same URL from a settings file names database.url.
    let file = temp_file(&format!("[database]\nurl = \"{url}\"\n"));
    let err = failure(&run(gateway(&db)
        .env_remove("DATABASE_URL")
        .arg("--config")
        .arg(&file.0)
        .arg("migrate")));
    assert!(
        err.contains(&format!("127.0.0.1:{closed_port}/nope")),
        "{err}"
    );
    assert!(err.contains("from database.url"), "{err}");
    assert!(!err.contains("pa55word"), "{err}");
}

// ---- settings ----

#[actix_web::test]
async fn a_bad_environment_setting_is_named_and_exits_non_zero() {
    let db = TestDatabase::create().await;
    for (name, value, named) in [
        ("LOGSTITCH__AUTH__CACHE_TTL_SECS", "abc", "cache_ttl_secs"),
        ("LOGSTITCH__DATABASE__POOL_MAX_SIZE", "0", "pool_max_size"),
        ("LOGSTITCH__SERVER__LISTEN", "not an address", "listen"),
        ("LOGSTITCH__LOG__FORMAT", "xml", "format"),
    ] {
        for args in [&["migrate"][..], &["org", "create", "--name", "X"][..]] {
            let output = run(gateway(&db).env(name, value).args(args));
            let err = failure(&output);
            assert!(err.contains(named), "{name}={value}: {err}");
        }
    }
    // Refused before touching the database.
    assert_eq!(rows_in(&db, "organizations").await, None);
}

#[actix_web::test]
async fn an_unknown_key_in_a_config_file_is_named_and_exits_non_zero() {
    let db = TestDatabase::create().await;
    let file = temp_file("[auth]\ncache_ttl = 3\n");
    let output = run(gateway(&db)
        .arg("--config")
        .arg(&file.0)
        .args(["org", "create", "--name", "X"]));
    let err = failure(&output);
    assert!(err.contains("cache_ttl"), "{err}");

    // The same file named by LOGSTITCH_CONFIG.
    let output = run(gateway(&db).env("LOGSTITCH_CONFIG", &file.0).arg("migrate"));
    let err = failure(&output);
    assert!(err.contains("cache_ttl"), "{err}");

    let unknown_section = temp_file("[nope]\nx = 1\n");
    let output = run(gateway(&db)
        .arg("--config")
        .arg(&unknown_section.0)
        .arg("migrate"));
    let err = failure(&output);
    assert!(err.contains("nope"), "{err}");
    assert_eq!(rows_in(&db, "organizations").await, None);
}

#[actix_web::test]
async fn a_bad_value_in_a_config_file_is_named_and_exits_non_zero() {
    let db = TestDatabase::create().await;
    let file = temp_file("[database]\npool_timeout_ms = \"soon\"\n");
    let output = run(gateway(&db).arg("--config").arg(&file.0).arg("migrate"));
    let err = failure(&output);
    assert!(err.contains("pool_timeout_ms"), "{err}");
    let missing = std::env::temp_dir().join(format!("missing-{}.toml", Uuid::new_v4()));
    let output = run(gateway(&db).arg("--config").arg(&missing).arg("migrate"));
    let err = failure(&output);
    assert!(err.contains(&*missing.to_string_lossy()), "{err}");
    assert_eq!(rows_in(&db, "organizations").await, None);
}

// ---- serve ----

/// A child process killed (by its own handle) when the test ends, pass or fail.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for `/readyz` on `port` to answer 200.
async fn wait_ready(served: &mut Served, port: u16) {
    let client = crate::http_client::Client::builder()
        .timeout(Duration::from_secs(2))
        .finish();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = served.0.try_wait().unwrap() {
            panic!("serve exited early: {status}");
        }
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if response.status() == StatusCode::OK {
                return;
            }
        }
        assert!(Instant::now() < deadline, "serve never became ready");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn admin_create_org(port: u16, token: &str) -> (StatusCode, Value) {
    let client = crate::http_client::Client::builder()
        .timeout(Duration::from_secs(10))
        .finish();
    let mut response = client
        .post(format!("http://127.0.0.1:{port}/admin/v1/organizations"))
        .insert_header(("Authorization", format!("Bearer {token}")))
        .send_json(&json!({"name": "Served"}))
        .await
        .expect("request sent");
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (response.status(), body)
}

#[actix_web::test]
async fn serve_migrates_then_serves_on_the_given_address() {
    let db = TestDatabase::create().await;
    let port = free_port();
    let mut served = Served(
        gateway(&db)
            .env("LOGSTITCH_ADMIN_TOKEN", "serve-test-token")
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts"),
    );
    wait_ready(&mut served, port).await;
    assert_eq!(rows_in(&db, "api_keys").await, Some(0), "migrated");
    let (status, body) = admin_create_org(port, "serve-test-token").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let master_key = body["master_key"].as_str().unwrap();
    let client = crate::http_client::Client::default();
    let response = client
        .get(format!("http://127.0.0.1:{port}/api/v1/keys"))
        .insert_header(("Authorization", format!("Bearer {master_key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[actix_web::test]
async fn serve_on_port_0_writes_the_port_it_got_to_the_port_file() {
    let db = TestDatabase::create().await;
    let dir = std::env::temp_dir().join(format!("logstitch-port-{}", Uuid::new_v4()));
    std::fs::create_dir(&dir).unwrap();
    let port_file = dir.join("port");
    let mut served = Served(
        gateway(&db)
            .args(["serve", "--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let port = loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            break text;
        }
        if let Some(status) = served.0.try_wait().unwrap() {
            panic!("serve exited before writing its port file: {status}");
        }
        assert!(Instant::now() < deadline, "no port file after 30 s");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        port.ends_with('\n') && port.lines().count() == 1,
        "{port:?}"
    );
    let port: u16 = port.trim().parse().expect("a port number");
    assert_ne!(port, 0);
    wait_ready(&mut served, port).await;
    drop(served);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[actix_web::test]
async fn a_busy_address_is_named_with_the_setting_it_came_from() {
    let db = TestDatabase::create().await;
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let err = failure(&run(gateway(&db).args(["serve", "--listen", &address])));
    assert!(
        err.contains(&format!("cannot listen on {address} (serve --listen)")),
        "{err}"
    );
    let err = failure(&run(gateway(&db)
        .env("LOGSTITCH__SERVER__LISTEN", &address)
        .arg("serve")));
    assert!(
        err.contains(&format!("cannot listen on {address} (server.listen)")),
        "{err}"
    );
    let err = failure(&run(gateway(&db)
        .env("LOGSTITCH__SERVER__METRICS_LISTEN", &address)
        .args(["serve", "--listen", "127.0.0.1:0"])));
    assert!(
        err.contains(&format!(
            "cannot listen on {address} (server.metrics_listen)"
        )),
        "{err}"
    );
    drop(taken);
}

#[actix_web::test]
async fn settings_layer_file_then_environment_with_database_url_on_top() {
    let db = TestDatabase::create().await;
    let (file_port, env_port) = (free_port(), free_port());
    // The file's database URL is unreachable: DATABASE_URL must win.
    let file = temp_file(&format!(
        "[server]\nlisten = \"127.0.0.1:{file_port}\"\n\
         [database]\nurl = \"postgres://nobody@127.0.0.1:1/nope\"\n\
         [admin]\ntoken = \"file-token\"\n"
    ));

    // The file's listen address and admin token.
    let mut served = Served(
        gateway(&db)
            .arg("--config")
            .arg(&file.0)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts"),
    );
    wait_ready(&mut served, file_port).await;
    assert_eq!(
        admin_create_org(file_port, "file-token").await.0,
        StatusCode::CREATED
    );
    drop(served);

    // LOGSTITCH_CONFIG names the file; environment variables override it.
    let mut served = Served(
        gateway(&db)
            .env("LOGSTITCH_CONFIG", &file.0)
            .env("LOGSTITCH__SERVER__LISTEN", format!("127.0.0.1:{env_port}"))
            .env("LOGSTITCH_ADMIN_TOKEN", "env-token")
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("serve starts"),
    );
    wait_ready(&mut served, env_port).await;
    assert_eq!(
        admin_create_org(env_port, "file-token").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        admin_create_org(env_port, "env-token").await.0,
        StatusCode::CREATED
    );
}

#[actix_web::test]
async fn served_keys_never_appear_in_the_logs() {
    let db = TestDatabase::create().await;
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("logstitch-log-{}.txt", Uuid::new_v4()));
    let log = TempFile(log_path.clone());
    let mut served = Served(
        gateway(&db)
            .env("LOGSTITCH_ADMIN_TOKEN", "log-test-token")
            .env("RUST_LOG", "debug")
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log.0).expect("log file"))
            .spawn()
            .expect("serve starts"),
    );
    wait_ready(&mut served, port).await;
    let (status, org) = admin_create_org(port, "log-test-token").await;
    assert_eq!(status, StatusCode::CREATED, "{org}");
    let master_key = org["master_key"].as_str().unwrap().to_owned();
    let client = crate::http_client::Client::default();
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let bearer = |key: &str| ("Authorization", format!("Bearer {key}"));
    let mut created = client
        .post(url("/api/v1/keys"))
        .insert_header(bearer(&master_key))
        .send_json(&json!({"project_id": org["project_id"], "type": "project", "name": "logged"}))
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let project_key = created.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut verified = client
        .get(url("/api/v1/auth/verify"))
        .insert_header(bearer(&project_key))
        .send()
        .await
        .unwrap();
    let key_id = verified.json::<Value>().await.unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let typo = format!("{}{}", &project_key[..project_key.len() - 1], "0");
    for key in [&master_key, &project_key, &typo] {
        let _ = client
            .get(url("/api/v1/keys"))
            .insert_header(bearer(key))
            .send()
            .await
            .unwrap();
    }
    let revoked = client
        .delete(url(&format!("/api/v1/keys/{key_id}")))
        .insert_header(bearer(&master_key))
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    let _ = client
        .get(url("/api/v1/keys"))
        .insert_header(bearer(&project_key))
        .send()
        .await
        .unwrap();
    drop(served);

    let logged = std::fs::read_to_string(&log.0).expect("read the log");
    assert!(
        logged.contains("req_"),
        "requests are logged with their ids: {logged}"
    );
    for key in [&master_key, &project_key, &typo] {
        // Neither the whole key nor its secret part after the public prefix.
        assert!(!logged.contains(&key[7..]), "a key appears in the log");
    }
    assert!(
        !logged.contains("log-test-token"),
        "the admin token appears in the log"
    );
}

/// `org list | head -n1` (or `| grep -q`, as `make run` once did): the list stops quietly when
/// its reader goes away — exit 0, no panic — however many organizations are left unprinted.
#[actix_web::test]
async fn org_list_stops_quietly_when_its_reader_goes_away() {
    let db = TestDatabase::create().await;
    for i in 0..5 {
        org_create(&db, &format!("Org {i}")).await;
    }
    for _ in 0..5 {
        let mut child = gateway(&db)
            .args(["org", "list"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary runs");
        // Read nothing, close the pipe: every write after this fails with EPIPE.
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("the binary exits");
        let err = stderr(&output);
        assert!(output.status.success(), "exit {:?}: {err}", output.status);
        assert!(!err.contains("panicked"), "{err}");
    }
}
