//! `spawn_app()` and friends: a fresh database per test, the real `Application` on port 0,
//! and one small helper per endpoint.

// Each test module uses a different subset of these helpers.
#![allow(dead_code)]

use std::sync::Arc;

use actix_web::http::{header::HeaderMap, Method, StatusCode};
use actix_web::web;
use logstitch_gateway::configuration::Settings;
use logstitch_gateway::startup::{Application, StopHandle};
use logstitch_gateway::state::AppState;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// The server every test database is created on: `DATABASE_URL` (which `make test` sets),
/// else the URL in config/default.toml. Nothing else of the environment is read.
fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        let settings = Settings::defaults().expect("default settings");
        settings.database.url.expose_secret().to_owned()
    })
}

/// A database of its own, dropped (connections and all) when the last handle goes.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    maintenance_url: String,
}

impl TestDatabase {
    pub async fn create() -> Arc<TestDatabase> {
        let base = server_url();
        let mut config: tokio_postgres::Config = base.parse().expect("DATABASE_URL parses");
        let name = format!("logstitch_test_{}", Uuid::new_v4().simple());
        config.dbname("postgres");
        let (client, connection) = config.connect(NoTls).await.unwrap_or_else(|error| {
            panic!("cannot reach Postgres (run `make test`, or set DATABASE_URL): {error}")
        });
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create test database");
        drop(client);
        let _ = driver.await;
        Arc::new(TestDatabase {
            url: with_dbname(&base, &name),
            maintenance_url: with_dbname(&base, "postgres"),
            name,
        })
    }

    /// A plain client on the test database, for assertions about what is stored.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect to test database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (url, name) = (self.maintenance_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which can't be blocked on: use a thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// Replaces the database name in a libpq URL (`postgres://…/NAME?params`).
fn with_dbname(url: &str, dbname: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let scheme_end = head.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match head[scheme_end..].find('/') {
        Some(slash) => &head[..scheme_end + slash],
        None => head,
    };
    match query {
        Some(query) => format!("{base}/{dbname}?{query}"),
        None => format!("{base}/{dbname}"),
    }
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// Set when `server.metrics_listen` gave /metrics its own listener.
    pub metrics_port: Option<u16>,
    pub db: Arc<TestDatabase>,
    pub state: web::Data<AppState>,
    pub admin_token: String,
    pub client: crate::http_client::Client,
    server: StopHandle,
}

/// Settings for a test instance: the compiled-in defaults (never the developer's
/// `LOGSTITCH_CONFIG` or `LOGSTITCH__*`), its database, port 0, a random admin token.
pub fn test_settings(db: &TestDatabase) -> Settings {
    let mut settings = Settings::defaults().expect("default settings");
    settings.database.url = SecretString::from(db.url.clone());
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.workers = 2;
    settings.admin.token = SecretString::from(format!("admin-{}", Uuid::new_v4().simple()));
    settings
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestDatabase::create().await, |_| {}).await
}

/// Another instance on `db` (for multi-instance tests), with settings adjusted by `customize`.
pub async fn spawn_app_with(
    db: Arc<TestDatabase>,
    customize: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = test_settings(&db);
    customize(&mut settings);
    let admin_token = settings.admin.token.expose_secret().to_owned();
    let application = Application::build(settings)
        .await
        .expect("application builds");
    let port = application.port();
    let metrics_port = application.metrics_port();
    let state = application.state();
    let server = application.server_handle();
    actix_rt::spawn(application.run_until_stopped());
    let app = TestApp::started(port, metrics_port, db, state, admin_token, server).await;
    app
}

/// A response, read whole: status, headers, and the body as JSON (Null when it isn't JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// An organization made through the admin API.
#[derive(Debug, Clone)]
pub struct TestOrg {
    pub organization_id: String,
    pub project_id: String,
    pub master_key: String,
}

impl TestApp {
    /// The handle to an instance that was just started; returns once it is ready.
    async fn started(
        port: u16,
        metrics_port: Option<u16>,
        db: Arc<TestDatabase>,
        state: web::Data<AppState>,
        admin_token: String,
        server: StopHandle,
    ) -> TestApp {
        let app = TestApp {
            address: format!("http://127.0.0.1:{port}"),
            port,
            metrics_port,
            db,
            state,
            admin_token,
            client: crate::http_client::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .finish(),
            server,
        };
        app.wait_until_ready().await;
        app
    }

    /// Sends a request; `token` becomes `Authorization: Bearer <token>`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.address, path));
        if let Some(token) = token {
            request = request.insert_header(("Authorization", format!("Bearer {token}")));
        }
        let response = match body {
            Some(body) => request.send_json(body).await,
            None => request.send().await,
        };
        read_reply(response.expect("request sent")).await
    }

    /// Sends raw bytes with the headers given (for malformed-input tests).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &[u8])],
        body: Vec<u8>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.address, path));
        for (name, value) in headers {
            request = request.insert_header((
                *name,
                actix_web::http::header::HeaderValue::from_bytes(value).expect("header value"),
            ));
        }
        read_reply(request.send_body(body).await.expect("request sent")).await
    }

    pub async fn create_org(&self, name: &str) -> TestOrg {
        let reply = self
            .request(
                Method::POST,
                "/admin/v1/organizations",
                Some(&self.admin_token.clone()),
                Some(&serde_json::json!({ "name": name })),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        TestOrg {
            organization_id: reply.body["organization_id"].as_str().unwrap().to_owned(),
            project_id: reply.body["project_id"].as_str().unwrap().to_owned(),
            master_key: reply.body["master_key"].as_str().unwrap().to_owned(),
        }
    }

    pub async fn create_key(&self, token: &str, project_id: &str, name: &str) -> Reply {
        let body = serde_json::json!({ "project_id": project_id, "type": "project", "name": name });
        self.request(Method::POST, "/api/v1/keys", Some(token), Some(&body))
            .await
    }

    /// Creates a project key and returns (key id, plaintext key).
    pub async fn new_project_key(&self, org: &TestOrg) -> (String, String) {
        let created = self
            .create_key(&org.master_key, &org.project_id, "test key")
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
        let key = created.body["key"].as_str().unwrap().to_owned();
        let verified = self.verify(&key).await;
        assert_eq!(verified.status, StatusCode::OK, "{verified:?}");
        (verified.body["key_id"].as_str().unwrap().to_owned(), key)
    }

    pub async fn list_keys(&self, token: &str) -> Reply {
        self.request(Method::GET, "/api/v1/keys", Some(token), None)
            .await
    }

    pub async fn revoke_key(&self, token: &str, id: &str) -> Reply {
        self.request(
            Method::DELETE,
            &format!("/api/v1/keys/{id}"),
            Some(token),
            None,
        )
        .await
    }

    pub async fn verify(&self, token: &str) -> Reply {
        self.request(Method::GET, "/api/v1/auth/verify", Some(token), None)
            .await
    }

    /// The value of one sample in a live `/metrics` scrape (0 when absent).
    /// `series` is the metric name with labels as exposed, e.g. `x_total{result="ok"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let reply = self.request(Method::GET, "/metrics", None, None).await;
        reply
            .text
            .lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }

    /// Waits until `/readyz` answers 200 (the invalidation listener is up).
    pub async fn wait_until_ready(&self) {
        for _ in 0..200 {
            if let Ok(response) = self
                .client
                .get(format!("{}/readyz", self.address))
                .send()
                .await
            {
                if response.status() == StatusCode::OK {
                    return;
                }
            }
            actix_rt::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("server never became ready");
    }

    /// Terminates this instance's LISTEN connection from the database side.
    pub async fn kill_listener_connection(&self) -> u64 {
        let client = self.db.client().await;
        let name = logstitch_gateway::startup::listener_application_name(&self.state.instance_id);
        let row = client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .await
            .expect("terminate listener");
        row.get::<_, i64>(0) as u64
    }

    pub async fn stop(&self) {
        self.server.stop(true).await;
    }
}

async fn read_reply(mut response: crate::http_client::ClientResponse) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .body()
        .limit(16 * 1024 * 1024)
        .await
        .expect("body read");
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        text,
    }
}

#[test]
fn with_dbname_replaces_only_the_database() {
    assert_eq!(
        with_dbname("postgres://u@h:5432/logstitch", "x"),
        "postgres://u@h:5432/x"
    );
    assert_eq!(
        with_dbname("postgres://u:p@h/logstitch?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_dbname("postgres://h", "x"), "postgres://h/x");
}

// ---- Multi-instance and hot-path helpers (appended for issue 3's tests). ----

/// Polls `check` every 20 ms until it holds or `within` has passed; true when it held.
pub async fn eventually<F, Fut>(within: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

impl TestApp {
    /// The status `/readyz` answers now.
    pub async fn readyz_status(&self) -> StatusCode {
        self.request(Method::GET, "/readyz", None, None)
            .await
            .status
    }
}

// ---- Shape assertions shared by the contract tests (keys, bad_input, routes, outage). ----

/// The field names of a JSON object, sorted (panics when `value` is not an object).
pub fn field_names(value: &Value) -> Vec<String> {
    let mut names: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("expected a JSON object, got {value}"))
        .keys()
        .cloned()
        .collect();
    names.sort();
    names
}

/// Asserts `value` is an object with exactly these fields, no more and no fewer.
pub fn assert_exact_fields(value: &Value, expected: &[&str]) {
    let mut expected: Vec<String> = expected.iter().map(|name| name.to_string()).collect();
    expected.sort();
    assert_eq!(field_names(value), expected, "fields of {value}");
}

/// `req_` followed by one or more ASCII letters or digits.
pub fn is_request_id(candidate: &str) -> bool {
    candidate.len() > 4
        && candidate.starts_with("req_")
        && candidate[4..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Asserts the reply carries a well-formed `request_id` in its JSON body and the same value
/// in `X-Request-Id`; returns it.
pub fn assert_request_id(reply: &Reply) -> String {
    let in_body = reply.body["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no request_id in the body: {reply:?}"))
        .to_owned();
    assert!(is_request_id(&in_body), "request_id {in_body:?}: {reply:?}");
    let in_header = reply
        .headers
        .get("x-request-id")
        .unwrap_or_else(|| panic!("no X-Request-Id header: {reply:?}"))
        .to_str()
        .expect("X-Request-Id is ASCII");
    assert_eq!(
        in_header, in_body,
        "X-Request-Id differs from the body's request_id"
    );
    in_body
}

/// Asserts the error envelope `{"error": {"code", "message", "details"?}, "request_id"}`
/// with this status and code.
pub fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{reply:?}");
    assert_exact_fields(&reply.body, &["error", "request_id"]);
    let error = &reply.body["error"];
    assert_eq!(error["code"], code, "{reply:?}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error.message must be a non-empty string: {reply:?}"
    );
    for name in field_names(error) {
        assert!(
            ["code", "message", "details"].contains(&name.as_str()),
            "unexpected error field {name:?}: {reply:?}"
        );
    }
    assert_request_id(reply);
}

/// Asserts a 400 validation_error whose `details` is a non-empty `[{field, message}]`;
/// returns the fields named.
pub fn assert_validation_error(reply: &Reply) -> Vec<String> {
    assert_error(reply, StatusCode::BAD_REQUEST, "validation_error");
    let details = reply.body["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("validation errors carry details: {reply:?}"));
    assert!(!details.is_empty(), "details must not be empty: {reply:?}");
    details
        .iter()
        .map(|detail| {
            assert_exact_fields(detail, &["field", "message"]);
            assert!(
                detail["message"].as_str().is_some_and(|m| !m.is_empty()),
                "detail message must be a non-empty string: {detail}"
            );
            detail["field"]
                .as_str()
                .unwrap_or_else(|| panic!("detail field must be a string: {detail}"))
                .to_owned()
        })
        .collect()
}

/// RFC 3339 UTC with milliseconds: `2026-01-15T09:30:00.000Z`.
pub fn is_api_timestamp(candidate: &str) -> bool {
    let bytes = candidate.as_bytes();
    const SHAPE: &[u8] = b"dddd-dd-ddTdd:dd:dd.dddZ";
    bytes.len() == SHAPE.len()
        && bytes.iter().zip(SHAPE).all(|(b, s)| match s {
            b'd' => b.is_ascii_digit(),
            other => b == other,
        })
        && chrono::DateTime::parse_from_rfc3339(candidate).is_ok()
}

/// A timestamp field as the API shows it (panics on any other form).
pub fn api_timestamp(value: &Value) -> chrono::DateTime<chrono::Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("expected a timestamp string, got {value}"));
    assert!(
        is_api_timestamp(text),
        "timestamp {text:?} is not RFC 3339 UTC with ms"
    );
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("valid RFC 3339")
        .with_timezone(&chrono::Utc)
}

impl TestApp {
    /// The items of `GET /api/v1/keys` as seen by `token` (asserts 200).
    pub async fn key_items(&self, token: &str) -> Vec<Value> {
        let listed = self.list_keys(token).await;
        assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
        listed.body["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("keys must be an array: {listed:?}"))
            .clone()
    }

    /// One key of the list, by id (panics when absent).
    pub async fn key_item(&self, token: &str, id: &str) -> Value {
        self.key_items(token)
            .await
            .into_iter()
            .find(|item| item["id"] == id)
            .unwrap_or_else(|| panic!("key {id} is not in the list"))
    }

    /// Rows in organizations, projects and api_keys, revoked keys, and audit events written on
    /// someone's request: what a refused request must leave unchanged. The service's own events
    /// (`system`: expiry warnings, written on its schedule) are left out, so a key created near
    /// its expiry can't make a refused request look as if it wrote one.
    pub async fn row_counts(&self) -> [i64; 5] {
        let row = self
            .db
            .client()
            .await
            .query_one(
                "SELECT (SELECT count(*) FROM organizations), (SELECT count(*) FROM projects),
                        (SELECT count(*) FROM api_keys),
                        (SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL),
                        (SELECT count(*) FROM audit_events WHERE actor_type <> 'system')",
                &[],
            )
            .await
            .expect("count rows");
        [row.get(0), row.get(1), row.get(2), row.get(3), row.get(4)]
    }
}

/// Reads a response sent some other way (a streamed body, a custom client) into a `Reply`.
pub async fn read_whole(response: crate::http_client::ClientResponse) -> Reply {
    read_reply(response).await
}

/// An instance on a thread and actix system of its own, as a separate process would be: its
/// background tasks (the invalidation listener, the lastUsedAt flusher) don't share the test's
/// single-threaded runtime with the test's own clients. Stopped when dropped.
pub struct IsolatedApp {
    app: TestApp,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for IsolatedApp {
    type Target = TestApp;

    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl Drop for IsolatedApp {
    fn drop(&mut self) {
        // The instance's own thread stops its servers and finishes the shutdown.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Like [`spawn_app_with`], but the instance runs on its own thread (see [`IsolatedApp`]).
pub async fn spawn_isolated_app_with(
    db: Arc<TestDatabase>,
    customize: impl FnOnce(&mut Settings),
) -> IsolatedApp {
    let mut settings = test_settings(&db);
    customize(&mut settings);
    let admin_token = settings.admin.token.expose_secret().to_owned();
    let (started, on_started) = tokio::sync::oneshot::channel();
    let (stop, on_stop) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let application = Application::build(settings)
                .await
                .expect("application builds");
            let server = application.server_handle();
            let handles = (
                application.port(),
                application.metrics_port(),
                application.state(),
                server.clone(),
            );
            actix_rt::spawn(async move {
                let _ = on_stop.await;
                server.stop(false).await;
            });
            if started.send(handles).is_ok() {
                let _ = application.run_until_stopped().await;
            }
        })
    });
    let (port, metrics_port, state, server) = on_started.await.expect("isolated instance started");
    let app = TestApp::started(port, metrics_port, db, state, admin_token, server).await;
    IsolatedApp {
        app,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// Two isolated instances on one fresh database, both adjusted by `customize`.
pub async fn spawn_isolated_pair(customize: impl Fn(&mut Settings)) -> (IsolatedApp, IsolatedApp) {
    let db = TestDatabase::create().await;
    let a = spawn_isolated_app_with(db.clone(), &customize).await;
    let b = spawn_isolated_app_with(db, &customize).await;
    (a, b)
}

/// The real binary, with no LOGSTITCH settings inherited from the developer's environment.
pub fn binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_logstitch-gateway"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LOGSTITCH") {
            command.env_remove(name);
        }
    }
    command
}

/// The real binary, `logstitch-gateway serve` on a port it picks, logging JSON, its stdout and
/// stderr lines collected; ready (its `/readyz` answered 200) when returned.
pub struct ServedBinary {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    lines_before_ready: Vec<String>,
    lines: std::sync::mpsc::Receiver<String>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

/// Starts the binary; `configure` adds the test's environment and arguments (the database
/// URL, `--config`, log level…) to `serve --listen 127.0.0.1:0` with JSON logs.
pub async fn serve_binary(configure: impl FnOnce(&mut std::process::Command)) -> ServedBinary {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let mut command = binary();
    command
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("LOGSTITCH__LOG__FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    configure(&mut command);
    let mut child = command.spawn().expect("start the binary");
    let (sender, lines) = std::sync::mpsc::channel::<String>();
    let streams: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stderr.take().expect("piped stderr")),
        Box::new(child.stdout.take().expect("piped stdout")),
    ];
    let readers = streams
        .into_iter()
        .map(|stream| {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = sender.send(line);
                }
            })
        })
        .collect();
    drop(sender);
    let mut lines_before_ready = Vec::new();
    let port = loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the server logs that it is serving");
        let parsed: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        lines_before_ready.push(line);
        if parsed["message"] == "serving" {
            break parsed["port"].as_u64().expect("a port field") as u16;
        }
    };
    let base = format!("http://127.0.0.1:{port}");
    let client = crate::http_client::Client::new();
    let ready = eventually(std::time::Duration::from_secs(10), || async {
        matches!(
            client.get(format!("{base}/readyz")).send().await,
            Ok(response) if response.status() == StatusCode::OK
        )
    })
    .await;
    assert!(ready, "the binary never became ready");
    ServedBinary {
        child,
        base,
        lines_before_ready,
        lines,
        readers,
    }
}

impl ServedBinary {
    pub fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to exit without blocking the test's runtime (other tasks may
    /// still be sending requests); kills it and fails after `limit`.
    pub async fn exit_status(&mut self, limit: std::time::Duration) -> std::process::ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(exit) = self.child.try_wait().expect("wait for the binary") {
                return exit;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("the binary did not exit within {limit:?}");
            }
            actix_rt::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Every line the process wrote, once it has exited.
    pub fn all_lines(mut self) -> Vec<String> {
        for reader in std::mem::take(&mut self.readers) {
            reader.join().expect("log reader");
        }
        let mut all = std::mem::take(&mut self.lines_before_ready);
        all.extend(self.lines.try_iter());
        all
    }
}

/// A test that ends without stopping its binary (it asserted what it needed, or it panicked)
/// leaves no server behind.
impl Drop for ServedBinary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How long outage tests wait for an answer before calling it a hang.
pub const GIVE_UP_AFTER: std::time::Duration = std::time::Duration::from_secs(6);

/// Sends a request with a client that gives up after [`GIVE_UP_AFTER`]: the reply and how
/// long it took, or Err when no answer came (a hang, a reset).
pub async fn try_timed(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(Reply, std::time::Duration), String> {
    let client = crate::http_client::Client::builder()
        .timeout(GIVE_UP_AFTER)
        .finish();
    let mut request = client.request(method.clone(), format!("{}{}", app.address, path));
    if let Some(token) = token {
        request = request.insert_header(("Authorization", format!("Bearer {token}")));
    }
    let started = std::time::Instant::now();
    let sent = match body {
        Some(body) => request.send_json(body).await,
        None => request.send().await,
    };
    let response = sent.map_err(|error| {
        format!("{method} {path}: no answer within {GIVE_UP_AFTER:?} (a hang, a reset): {error}")
    })?;
    Ok((read_whole(response).await, started.elapsed()))
}

// ---- Restricted keys (issue 20): key updates and creates with more fields. ----

impl TestApp {
    /// `PATCH /api/v1/keys/{id}` with `body` sent as JSON.
    pub async fn patch_key(&self, token: &str, id: &str, body: &Value) -> Reply {
        self.request(
            Method::PATCH,
            &format!("/api/v1/keys/{id}"),
            Some(token),
            Some(body),
        )
        .await
    }

    /// `POST /api/v1/keys` with `body` as given (for fields `create_key` doesn't send).
    pub async fn create_key_with(&self, token: &str, body: &Value) -> Reply {
        self.request(Method::POST, "/api/v1/keys", Some(token), Some(body))
            .await
    }
}
