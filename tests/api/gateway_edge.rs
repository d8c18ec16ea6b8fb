//! The gateway's edge as an attacker meets it (issue 9 §1, §2): header names that read as ours,
//! forwarding headers and trusted proxies, upstream headers kept inside, path spellings that
//! would slip past a route, and conflicting framing. Raw TCP wherever the spelling matters:
//! client libraries resolve dot segments and normalise header names themselves.

use std::sync::atomic::Ordering;

use actix_web::http::StatusCode;
use serde_json::Value;

use crate::gateway::{header, route, start_upstream, Upstream};
use crate::helpers::{serve_binary, spawn_app_with, TestApp, TestDatabase, TestOrg};
use crate::raw_http::{blocking, raw_bytes, RawReply};

/// `/api/v1/events` admits project keys only; `/api/v1/open` admits both key types and shares
/// the upstream, as a route an attacker would climb out of; `/api/v1/exposed` lets the
/// upstream's `X-LogStitch-*` response headers through.
async fn edge_gateway(
    upstream: &Upstream,
    customize: impl FnOnce(&mut logstitch_gateway::configuration::Settings),
) -> TestApp {
    let url = upstream.url.clone();
    spawn_app_with(TestDatabase::create().await, move |settings| {
        let mut exposed = route("/api/v1/exposed", &url, &["project"], 2000);
        exposed.expose_logstitch_headers = true;
        settings.gateway.routes = vec![
            route("/api/v1/events", &url, &["project"], 2000),
            route("/api/v1/open", &url, &["project", "master"], 2000),
            exposed,
        ];
        customize(settings);
    })
    .await
}

/// One request, exactly as written, on its own connection.
async fn send(app: &TestApp, request_line: &str, headers: &[(&str, &str)]) -> RawReply {
    let mut request = format!("{request_line}\r\nHost: gateway.test\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");
    let port = app.port;
    blocking(move || raw_bytes(port, request.as_bytes())).await
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Every header the upstream saw whose name, read case-insensitively with `_` as `-`, is `name`.
fn seen_as(seen: &Value, name: &str) -> Vec<String> {
    seen["headers"]
        .as_array()
        .expect("the echo's headers")
        .iter()
        .filter(|pair| {
            pair[0]
                .as_str()
                .unwrap()
                .replace('_', "-")
                .eq_ignore_ascii_case(name)
        })
        .map(|pair| pair[1].as_str().unwrap().to_owned())
        .collect()
}

async fn setup(app: &TestApp) -> (TestOrg, String) {
    let org = app.create_org("Edge").await;
    let (_, key) = app.new_project_key(&org).await;
    (org, key)
}

// --- §1 identity and headers -----------------------------------------------------------------

#[actix_web::test]
async fn client_headers_that_read_as_ours_never_reach_the_upstream() {
    let upstream = start_upstream();
    let app = edge_gateway(&upstream, |_| {}).await;
    let (org, key) = setup(&app).await;
    let spoofs = [
        ("X_LogStitch_Project_Id", "spoofed"),
        ("X_LogStitch_Organization_Id", "spoofed"),
        ("x_logstitch_key_type", "spoofed"),
        ("X_Request_Id", "spoofed"),
        ("X-LogStitch-Project-Id", "spoofed"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("X_Custom", "dropped by default"),
        ("X-Custom", "kept"),
    ];
    // A master key carries no project of ours: exactly where a spoofed one would win.
    for credential in [org.master_key.as_str(), key.as_str()] {
        let authorization = bearer(credential);
        let mut headers = vec![("Authorization", authorization.as_str())];
        headers.extend(spoofs);
        let reply = send(&app, "GET /api/v1/open/whoami HTTP/1.1", &headers).await;
        assert_eq!(reply.status, Some(201), "{}", reply.text());
        let seen = reply.json();
        let all_values: Vec<&str> = seen["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| pair[1].as_str().unwrap())
            .collect();
        assert!(!all_values.contains(&"spoofed"), "{seen:#}");
        assert!(!all_values.contains(&"6.6.6.6, 127.0.0.1"), "{seen:#}");
        assert!(seen_as(&seen, "x-custom") == ["kept"], "{seen:#}");
        // Ours are there once each, with our values and our spelling.
        let request_id = reply
            .head
            .lines()
            .find_map(|line| line.strip_prefix("x-request-id: "))
            .expect("the reply's request id")
            .to_owned();
        assert_eq!(seen_as(&seen, "x-request-id"), [request_id]);
        assert_eq!(header(&seen, "x-request-id").len(), 1);
        let project = seen_as(&seen, "x-logstitch-project-id");
        if credential == org.master_key {
            assert!(project.is_empty(), "{seen:#}");
        } else {
            assert_eq!(project, std::slice::from_ref(&org.project_id));
        }
        assert_eq!(seen_as(&seen, "x-forwarded-for"), ["127.0.0.1"]);
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 2);
}

#[actix_web::test]
async fn underscored_names_pass_only_when_enabled_and_ours_never_do() {
    let upstream = start_upstream();
    let app = edge_gateway(&upstream, |settings| {
        settings.gateway.forward_underscore_headers = true;
    })
    .await;
    let (_, key) = setup(&app).await;
    let authorization = bearer(&key);
    let reply = send(
        &app,
        "GET /api/v1/events/x HTTP/1.1",
        &[
            ("Authorization", &authorization),
            ("X_Custom", "forwarded when enabled"),
            ("X_LogStitch_Key_Id", "spoofed"),
            ("X_Request_Id", "spoofed"),
            ("X_Forwarded_Host", "spoofed"),
        ],
    )
    .await;
    assert_eq!(reply.status, Some(201), "{}", reply.text());
    let seen = reply.json();
    assert_eq!(header(&seen, "x_custom"), ["forwarded when enabled"]);
    for ours in ["x-logstitch-key-id", "x-request-id", "x-forwarded-host"] {
        assert!(
            !seen_as(&seen, ours).iter().any(|value| value == "spoofed"),
            "{ours}: {seen:#}"
        );
    }
}

#[actix_web::test]
async fn forwarded_requests_say_who_called_and_ignore_an_untrusted_peer_s_claims() {
    let upstream = start_upstream();
    let app = edge_gateway(&upstream, |_| {}).await;
    let (_, key) = setup(&app).await;
    let authorization = bearer(&key);
    let reply = send(
        &app,
        "POST /api/v1/events/batch HTTP/1.1",
        &[
            ("Authorization", &authorization),
            ("Content-Length", "0"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.test"),
            ("Forwarded", "for=203.0.113.9;proto=https"),
        ],
    )
    .await;
    assert_eq!(reply.status, Some(201), "{}", reply.text());
    let seen = reply.json();
    assert_eq!(header(&seen, "x-forwarded-for"), ["203.0.113.9, 127.0.0.1"]);
    assert_eq!(header(&seen, "x-forwarded-proto"), ["http"]);
    assert_eq!(header(&seen, "x-forwarded-host"), ["gateway.test"]);
    assert_eq!(
        header(&seen, "forwarded"),
        // The untrusted client's proto claim is gone; its `for` stays in the chain.
        ["for=203.0.113.9, for=127.0.0.1;proto=http;host=gateway.test"]
    );
    // The Host the client asked for still reaches the upstream.
    assert_eq!(header(&seen, "host"), ["gateway.test"]);
}

#[actix_web::test]
async fn behind_a_trusted_proxy_its_proto_and_host_are_believed() {
    let upstream = start_upstream();
    let app = edge_gateway(&upstream, |settings| {
        settings.server.trusted_proxies =
            serde_json::from_str(r#"["127.0.0.1/32"]"#).expect("trusted proxies");
    })
    .await;
    let (_, key) = setup(&app).await;
    let authorization = bearer(&key);
    let reply = send(
        &app,
        "GET /api/v1/events/x HTTP/1.1",
        &[
            ("Authorization", &authorization),
            ("X-Forwarded-For", "198.51.100.7"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "api.example.com"),
        ],
    )
    .await;
    let seen = reply.json();
    assert_eq!(
        header(&seen, "x-forwarded-for"),
        ["198.51.100.7, 127.0.0.1"]
    );
    assert_eq!(header(&seen, "x-forwarded-proto"), ["https"]);
    assert_eq!(header(&seen, "x-forwarded-host"), ["api.example.com"]);
    assert_eq!(
        header(&seen, "forwarded"),
        ["for=127.0.0.1;proto=https;host=api.example.com"]
    );
}

/// Bad keys from `client` (as told by `X-Forwarded-For`) until the throttle answers.
async fn failures_until_throttled(app: &TestApp, client: &str) -> Vec<u16> {
    let forged =
        logstitch_gateway::domain::ApiKey::generate(logstitch_gateway::domain::KeyType::Project);
    let authorization = bearer(forged.expose());
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let reply = send(
            app,
            "GET /api/v1/auth/verify HTTP/1.1",
            &[
                ("Authorization", &authorization),
                ("X-Forwarded-For", client),
            ],
        )
        .await;
        statuses.push(reply.status.unwrap_or(0));
    }
    statuses
}

#[actix_web::test]
async fn the_failed_auth_throttle_sees_the_client_only_behind_a_trusted_proxy() {
    let throttle = |settings: &mut logstitch_gateway::configuration::Settings| {
        settings.rate_limit.failed_auth_burst = std::num::NonZeroU32::new(3).unwrap();
        settings.rate_limit.failed_auth_per_second = 0.001;
    };
    let upstream = start_upstream();
    let behind_lb = edge_gateway(&upstream, |settings| {
        throttle(settings);
        settings.server.trusted_proxies =
            serde_json::from_str(r#"["127.0.0.0/8"]"#).expect("trusted proxies");
    })
    .await;
    assert_eq!(
        failures_until_throttled(&behind_lb, "203.0.113.7").await,
        [401, 401, 401, 429]
    );
    // Another client behind the same load balancer has a bucket of its own.
    assert_eq!(
        failures_until_throttled(&behind_lb, "198.51.100.2").await,
        [401, 401, 401, 429]
    );

    // Without trusted proxies the header is the client's word only: one bucket, the peer's.
    let exposed = edge_gateway(&upstream, throttle).await;
    assert_eq!(
        failures_until_throttled(&exposed, "203.0.113.7").await,
        [401, 401, 401, 429]
    );
    assert_eq!(
        failures_until_throttled(&exposed, "198.51.100.2").await,
        [429, 429, 429, 429]
    );
}

#[actix_web::test]
async fn the_request_log_names_the_client_behind_a_trusted_proxy() {
    let db = TestDatabase::create().await;
    let dir = std::env::temp_dir().join(format!("logstitch-edge-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("trusted.toml");
    std::fs::write(&config, "[server]\ntrusted_proxies = [\"127.0.0.1/32\"]\n").unwrap();
    let mut served = serve_binary(|command| {
        command
            .env("DATABASE_URL", &db.url)
            .arg("--config")
            .arg(&config);
    })
    .await;
    let port: u16 = served.base.rsplit(':').next().unwrap().parse().unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 1.1.1.1, 203.0.113.77\r\nConnection: close\r\n\r\n";
    let reply = blocking(move || raw_bytes(port, request)).await;
    assert_eq!(reply.status, Some(200));
    served.sigterm();
    served.exit_status(std::time::Duration::from_secs(20)).await;
    let lines = served.all_lines();
    let logged: Vec<Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "request" && line["route"] == "/healthz")
        .collect();
    assert_eq!(logged.len(), 1, "{lines:#?}");
    assert_eq!(logged[0]["client_ip"], "203.0.113.77");
    let _ = std::fs::remove_dir_all(dir);
}

#[actix_web::test]
async fn upstream_logstitch_headers_reach_clients_only_where_a_route_exposes_them() {
    let upstream = start_upstream();
    let app = edge_gateway(&upstream, |_| {}).await;
    let (_, key) = setup(&app).await;
    for (path, exposed) in [
        ("/api/v1/events/leaky", false),
        ("/api/v1/exposed/leaky", true),
    ] {
        let reply = app
            .request(actix_web::http::Method::GET, path, Some(&key), None)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
        assert_eq!(reply.headers.get("x-upstream").unwrap(), "leaky");
        for name in ["x-logstitch-internal", "x_logstitch_debug"] {
            assert_eq!(reply.headers.contains_key(name), exposed, "{path} {name}");
        }
    }
}

/// Route order is explicit: the most specific prefix wins whatever the settings' order, and
/// a prefix under `/api/v1` is found before the key API's scope.
#[actix_web::test]
async fn the_longest_matching_prefix_wins_whatever_the_settings_order() {
    let general = start_upstream();
    let special = start_upstream();
    let (general_url, special_url) = (general.url.clone(), special.url.clone());
    let app = spawn_app_with(TestDatabase::create().await, move |settings| {
        settings.gateway.routes = vec![
            route("/api/v1/events", &general_url, &["project"], 2000),
            route("/api/v1/events/special", &special_url, &["project"], 2000),
        ];
    })
    .await;
    let (_, key) = setup(&app).await;
    for (path, to_special) in [
        ("/api/v1/events/special/x", true),
        ("/api/v1/events/special", true),
        ("/api/v1/events/specialx", false),
        ("/api/v1/events/x", false),
    ] {
        let before = (
            general.hits.load(Ordering::SeqCst),
            special.hits.load(Ordering::SeqCst),
        );
        let reply = app
            .request(actix_web::http::Method::GET, path, Some(&key), None)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{path}");
        let after = (
            general.hits.load(Ordering::SeqCst),
            special.hits.load(Ordering::SeqCst),
        );
        let expected = if to_special {
            (before.0, before.1 + 1)
        } else {
            (before.0 + 1, before.1)
        };
        assert_eq!(after, expected, "{path}");
    }
    // The key API beside them is untouched.
    assert_eq!(app.list_keys(&key).await.status, StatusCode::OK);
}

// --- §2 paths and framing ----------------------------------------------------------------------

#[actix_web::test]
async fn dot_segments_cannot_climb_from_one_route_into_another() {
    let upstream = start_upstream();
    let app = edge_gateway(&upstream, |_| {}).await;
    let (org, _) = setup(&app).await;
    let master = bearer(&org.master_key);
    // Each would reach /api/v1/events/x (project keys only) through /api/v1/open (master ok).
    for path in [
        "/api/v1/open/../events/x",
        "/api/v1/open/%2e%2e/events/x",
        "/api/v1/open/.%2E/events/x",
        "/api/v1/open/%2E./events/x",
        "/api/v1/open/./../events/x",
    ] {
        let reply = send(
            &app,
            &format!("GET {path} HTTP/1.1"),
            &[("Authorization", &master)],
        )
        .await;
        assert_eq!(reply.status, Some(403), "{path}: {}", reply.text());
        assert_eq!(reply.json()["error"]["code"], "forbidden", "{path}");
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

#[actix_web::test]
async fn what_a_route_matched_is_exactly_what_is_forwarded() {
    let upstream = start_upstream();
    let app = edge_gateway(&upstream, |_| {}).await;
    let (_, key) = setup(&app).await;
    let authorization = bearer(&key);
    for (sent, forwarded) in [
        ("/api/v1/open/../events/x?q=1", "/api/v1/events/x"),
        ("/api/v1/%65vents/x", "/api/v1/events/x"),
        ("/api/v1/events/a%2cb/./c", "/api/v1/events/a%2Cb/c"),
        ("/api/v1/events/caf%c3%a9", "/api/v1/events/caf%C3%A9"),
    ] {
        let reply = send(
            &app,
            &format!("GET {sent} HTTP/1.1"),
            &[("Authorization", &authorization)],
        )
        .await;
        assert_eq!(reply.status, Some(201), "{sent}: {}", reply.text());
        assert_eq!(reply.json()["path"], forwarded, "{sent}");
    }
    let with_query = send(
        &app,
        "GET /api/v1/open/../events/x?q=%2e%2e HTTP/1.1",
        &[("Authorization", &authorization)],
    )
    .await;
    assert_eq!(with_query.json()["query"], "q=%2e%2e");
}

#[actix_web::test]
async fn ambiguous_paths_are_refused_400_and_never_forwarded() {
    let upstream = start_upstream();
    let app = edge_gateway(&upstream, |_| {}).await;
    let (org, key) = setup(&app).await;
    for credential in [key.as_str(), org.master_key.as_str()] {
        let authorization = bearer(credential);
        for path in [
            "/api/v1/open%2F..%2Fevents/x",
            "/api/v1/open/..%2fevents/x",
            "/api/v1/open/..%5Cevents/x",
            "/api/v1/open\\..\\events/x",
            "/api/v1/open/a%00b",
            "/api/v1/open/a%0d%0ab",
            "/../api/v1/events/x",
            "/api/v1/open/../../../../x",
            "/api/v1/open/..;/events/x",
            "/api/v1/open/%252e%252e/events/x",
            "/api/v1/open/%zz",
        ] {
            let reply = send(
                &app,
                &format!("GET {path} HTTP/1.1"),
                &[("Authorization", &authorization)],
            )
            .await;
            assert_eq!(reply.status, Some(400), "{path}: {}", reply.text());
            let body = reply.json();
            assert_eq!(body["error"]["code"], "validation_error", "{path}");
            assert_eq!(body["error"]["details"][0]["field"], "path", "{path}");
            assert!(body["request_id"].as_str().unwrap().starts_with("req_"));
        }
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

#[actix_web::test]
async fn conflicting_framing_is_refused_400_and_never_forwarded() {
    let upstream = start_upstream();
    let app = edge_gateway(&upstream, |_| {}).await;
    let (_, key) = setup(&app).await;
    let port = app.port;
    let cases = [
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        "Content-Length: 5, 5\r\n\r\nhello",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    ];
    for framing in cases {
        let request = format!(
            "POST /api/v1/events/smuggle HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n{framing}"
        );
        let reply = blocking(move || raw_bytes(port, request.as_bytes())).await;
        assert_eq!(reply.status, Some(400), "{framing:?}: {}", reply.text());
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
    // The gateway still forwards a well-framed request afterwards.
    let request = format!(
        "POST /api/v1/events/ok HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    let reply = blocking(move || raw_bytes(port, request.as_bytes())).await;
    assert_eq!(reply.status, Some(201), "{}", reply.text());
    assert_eq!(reply.json()["body"], "hello");
}

// --- §5 dependencies ---------------------------------------------------------------------------

/// RUSTSEC-2026-0258 (h2 < 0.4.16) came in through HTTP/2 features nothing here uses; the
/// lock file is what `cargo audit` reads, so it is what this checks.
#[test]
fn no_vulnerable_h2_in_the_dependency_tree() {
    let lock = include_str!("../../Cargo.lock");
    let h2_versions: Vec<&str> = lock
        .split("[[package]]")
        .filter(|package| package.contains("\nname = \"h2\"\n"))
        .filter_map(|package| {
            package
                .lines()
                .find_map(|line| line.strip_prefix("version = "))
        })
        .collect();
    let vulnerable = h2_versions.iter().any(|version| {
        let version = version.trim_matches('"');
        let mut parts = version
            .split('.')
            .map(|part| part.parse::<u32>().unwrap_or(0));
        let (major, minor, patch) = (
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
            parts.next().unwrap_or(0),
        );
        (major, minor, patch) < (0, 4, 16)
    });
    assert!(!vulnerable, "h2 versions in Cargo.lock: {h2_versions:?}");
}

// --- from the attacker's-eye review -------------------------------------------------------------

/// An upstream that answers every request with `response`, as written (for answers an actix
/// upstream would never give: a 204 with a length, a 101 nobody asked for).
fn canned_upstream(response: &'static str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    // One request head (no bodies are sent here), then the canned answer.
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    if stream.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

async fn canned_gateway(response: &'static str) -> (TestApp, String) {
    let url = canned_upstream(response);
    let app = spawn_app_with(TestDatabase::create().await, move |settings| {
        settings.gateway.routes = vec![route("/api/v1/events", &url, &["project"], 2000)];
    })
    .await;
    let (_, key) = setup(&app).await;
    (app, key)
}

/// Two requests on one keep-alive connection; both replies, read for at most 10 s.
async fn twice_on_one_connection(
    app: &TestApp,
    first: String,
    second: String,
) -> (RawReply, RawReply) {
    use std::io::Write;
    let port = app.port;
    blocking(move || {
        let mut stream = crate::raw_http::connect(port);
        stream.write_all(first.as_bytes()).unwrap();
        let head_only = first.starts_with("HEAD ");
        let within = std::time::Duration::from_secs(10);
        let one = crate::raw_http::read_raw_reply_for(&mut stream, within, !head_only);
        stream.write_all(second.as_bytes()).unwrap();
        let two = crate::raw_http::read_raw_reply(&mut stream, std::time::Duration::from_secs(10));
        (one, two)
    })
    .await
}

#[actix_web::test]
async fn bodiless_answers_with_a_content_length_end_at_their_head() {
    for (canned, method, status) in [
        (
            "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
            "GET",
            204,
        ),
        (
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
            "GET",
            304,
        ),
        ("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", "HEAD", 200),
    ] {
        let (app, key) = canned_gateway(canned).await;
        let request = format!(
            "{method} /api/v1/events/x HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\r\n"
        );
        let then = format!(
            "GET /api/v1/auth/verify HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer {key}\r\n\r\n"
        );
        let (one, two) = twice_on_one_connection(&app, request, then).await;
        assert_eq!(one.status, Some(status), "{canned:?}: {}", one.text());
        assert!(one.body.is_empty(), "{canned:?}");
        // The connection is still in step: the next answer on it is the next request's.
        assert_eq!(
            two.status,
            Some(200),
            "{canned:?} then verify: {}",
            two.text()
        );
        if method == "HEAD" {
            assert!(
                one.head.to_ascii_lowercase().contains("content-length: 50"),
                "{}",
                one.head
            );
        }
    }
}

#[actix_web::test]
async fn an_upstream_101_is_a_502_never_a_tunnel() {
    let (app, key) = canned_gateway(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    )
    .await;
    let reply = send(
        &app,
        "GET /api/v1/events/ws HTTP/1.1",
        &[("Authorization", &bearer(&key))],
    )
    .await;
    assert_eq!(reply.status, Some(502), "{}", reply.text());
    assert_eq!(reply.json()["error"]["code"], "upstream_unavailable");
}

#[actix_web::test]
async fn nested_routes_cannot_be_slipped_past_with_slashes_or_parameters() {
    let upstream = start_upstream();
    let url = upstream.url.clone();
    let app = spawn_app_with(TestDatabase::create().await, move |settings| {
        settings.gateway.routes = vec![
            route("/api/v1/open", &url, &["project", "master"], 2000),
            route("/api/v1/open/admin", &url, &["master"], 2000),
        ];
    })
    .await;
    let (_, key) = setup(&app).await;
    let project = bearer(&key);
    // `//` merges, so the stricter route matches and refuses the project key.
    let merged = send(
        &app,
        "GET /api/v1/open//admin/x HTTP/1.1",
        &[("Authorization", &project)],
    )
    .await;
    assert_eq!(merged.status, Some(403), "{}", merged.text());
    for path in ["/api/v1/open/admin;a/x", "/api/v1/open/admin;/x"] {
        let reply = send(
            &app,
            &format!("GET {path} HTTP/1.1"),
            &[("Authorization", &project)],
        )
        .await;
        assert_eq!(reply.status, Some(400), "{path}: {}", reply.text());
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

#[actix_web::test]
async fn url_override_client_address_and_proxy_headers_never_reach_the_upstream() {
    let upstream = start_upstream();
    let app = edge_gateway(&upstream, |_| {}).await;
    let (_, key) = setup(&app).await;
    let authorization = bearer(&key);
    let reply = send(
        &app,
        "GET /api/v1/events/x HTTP/1.1",
        &[
            ("Authorization", &authorization),
            ("X-Original-URL", "/api/v1/open/admin"),
            ("X-Rewrite-URL", "/api/v1/open/admin"),
            ("X-HTTP-Method-Override", "DELETE"),
            ("X-Real-IP", "6.6.6.6"),
            ("True-Client-IP", "6.6.6.6"),
            ("Proxy-Authorization", "Basic eDp5"),
            ("Forwarded", "for=9.9.9.9;proto=https;host=admin.internal"),
        ],
    )
    .await;
    let seen = reply.json();
    for name in [
        "x-original-url",
        "x-rewrite-url",
        "x-http-method-override",
        "x-real-ip",
        "true-client-ip",
        "proxy-authorization",
    ] {
        assert!(header(&seen, name).is_empty(), "{name}: {seen:#}");
    }
    assert_eq!(
        header(&seen, "forwarded"),
        ["for=9.9.9.9, for=127.0.0.1;proto=http;host=gateway.test"]
    );
}
