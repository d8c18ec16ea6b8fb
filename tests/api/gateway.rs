//! The forwarding gateway against a real upstream started by the test: what reaches the
//! upstream, streaming, upstream failures, rate limits and the failed-auth throttle.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures_util::StreamExt;
use logstitch_gateway::configuration::{GatewayRoute, RateLimitOverride, Settings};
use logstitch_gateway::domain::KeyType;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::helpers::{assert_error, spawn_app_with, TestApp, TestDatabase};

const BIG: usize = 8 * 1024 * 1024;

/// A small upstream: `…/slow` sleeps, `…/big` streams 8 MiB, `…/leaky` sets `X-LogStitch-*`
/// response headers, `…/refuses` is a bare 405, anything else echoes what it
/// received as JSON. Counts every request it sees.
pub struct Upstream {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
}

async fn echo(
    req: HttpRequest,
    mut body: web::Payload,
    hits: web::Data<AtomicUsize>,
) -> HttpResponse {
    hits.fetch_add(1, Ordering::SeqCst);
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let path = req.path();
    if path.ends_with("/slow") {
        actix_rt::time::sleep(Duration::from_secs(3)).await;
    }
    if path.ends_with("/leaky") {
        // An upstream that sets our header names, in both spellings.
        return HttpResponse::Ok()
            .insert_header(("x-logstitch-internal", "upstream-secret"))
            .insert_header(("x_logstitch_debug", "upstream-secret"))
            .insert_header(("x-upstream", "leaky"))
            .finish();
    }
    if path.ends_with("/refuses") {
        // A bare 405 whose headers describe a body it doesn't have.
        return HttpResponse::MethodNotAllowed()
            .insert_header(("allow", "GET"))
            .insert_header(("content-encoding", "gzip"))
            .insert_header(("content-language", "fr"))
            .insert_header(("x-upstream", "refuses"))
            .finish();
    }
    if path.ends_with("/big") {
        let chunks = (0..BIG / 65536)
            .map(|i| Ok::<_, actix_web::Error>(web::Bytes::from(vec![(i % 251) as u8; 65536])));
        return HttpResponse::Ok()
            .insert_header(("x-upstream", "big"))
            .streaming(futures_util::stream::iter(chunks));
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    HttpResponse::Created()
        .insert_header(("x-upstream", "echo"))
        .json(json!({
            "method": req.method().as_str(),
            "path": path,
            "query": req.query_string(),
            "headers": headers,
            "body_len": bytes.len(),
            "body_sha256": hex(&Sha256::digest(&bytes)),
            "body": if bytes.len() <= 65536 { String::from_utf8_lossy(&bytes).into_owned() } else { String::new() },
        }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn start_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let data = web::Data::from(hits.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
            .default_service(web::to(echo))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_rt::spawn(server);
    Upstream {
        url: format!("http://127.0.0.1:{port}"),
        hits,
    }
}

pub fn route(prefix: &str, upstream: &str, key_types: &[&str], timeout_ms: u64) -> GatewayRoute {
    GatewayRoute {
        prefix: prefix.to_owned(),
        upstream: upstream.to_owned(),
        key_types: key_types
            .iter()
            .map(|name| KeyType::from_name(name).expect("a key type"))
            .collect(),
        timeout: Duration::from_millis(timeout_ms),
        expose_logstitch_headers: false,
        scope: None,
        method_scopes: Default::default(),
    }
}

async fn gateway(upstream: &Upstream, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let url = upstream.url.clone();
    spawn_app_with(TestDatabase::create().await, move |settings| {
        settings.gateway.routes = vec![
            route("/api/v1/events", &url, &["project"], 1000),
            route("/api/v1/anything", &url, &["project", "master"], 1000),
            // Nothing listens on port 9 of loopback.
            route("/api/v1/down", "http://127.0.0.1:9", &["project"], 1000),
        ];
        customize(settings);
    })
    .await
}

pub fn header<'a>(seen: &'a Value, name: &str) -> Vec<&'a str> {
    seen["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap())
        .collect()
}

#[actix_web::test]
async fn forwards_what_the_client_sent_minus_authorization_plus_identity() {
    let upstream = start_upstream();
    let app = gateway(&upstream, |_| {}).await;
    let org = app.create_org("Fwd").await;
    let (key_id, key) = app.new_project_key(&org).await;
    let body = br#"{"action":"user.invited","tenant_id":"t1"}"#.to_vec();
    let reply = app
        .raw(
            Method::POST,
            "/api/v1/events/batch?tenant=t1&x=%20y",
            &[
                ("Authorization", format!("Bearer {key}").as_bytes()),
                ("Content-Type", b"application/json"),
                ("X-Custom", b"kept as is"),
                ("X-LogStitch-Organization-Id", b"spoofed-org"),
                ("X-LogStitch-Key-Type", b"master"),
            ],
            body.clone(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let seen = &reply.body;
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/api/v1/events/batch");
    assert_eq!(seen["query"], "tenant=t1&x=%20y");
    assert_eq!(seen["body"], String::from_utf8(body).unwrap());
    assert_eq!(header(seen, "x-custom"), ["kept as is"]);
    assert_eq!(header(seen, "content-type"), ["application/json"]);
    assert!(header(seen, "authorization").is_empty());
    // The client's spoofed "master" is gone; the real type stands.
    assert_eq!(header(seen, "x-logstitch-key-type"), ["project"]);
    assert_eq!(
        header(seen, "x-logstitch-organization-id"),
        [org.organization_id.as_str()]
    );
    assert_eq!(
        header(seen, "x-logstitch-project-id"),
        [org.project_id.as_str()]
    );
    assert_eq!(header(seen, "x-logstitch-key-id"), [key_id.as_str()]);
    let request_id = reply.headers.get("x-request-id").unwrap().to_str().unwrap();
    assert_eq!(header(seen, "x-request-id"), [request_id]);
    // The upstream's answer comes back with its status and headers (the same hop-by-hop
    // filter as requests, unit-tested in src/gateway/forward.rs).
    assert_eq!(reply.headers.get("x-upstream").unwrap(), "echo");
    assert!(reply.headers.get("ratelimit-remaining").is_some());
}

/// Raw HTTP/1.1, because HTTP client libraries manage `Connection` themselves.
#[actix_web::test]
async fn headers_named_by_connection_are_not_forwarded() {
    use std::io::{Read, Write};

    let upstream = start_upstream();
    let app = gateway(&upstream, |_| {}).await;
    let org = app.create_org("Hop").await;
    let (_, key) = app.new_project_key(&org).await;
    let port = app.port;
    let raw = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            stream,
            "GET /api/v1/events/hop HTTP/1.1\r\nHost: gateway.test\r\nAuthorization: Bearer {key}\r\n\
             Connection: close, X-Drop-Me\r\nX-Drop-Me: hop-by-hop\r\nKeep-Alive: timeout=5\r\n\
             X-Stay: end-to-end\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    let seen: Value = serde_json::from_str(body).expect("the echo's JSON");
    assert!(header(&seen, "x-drop-me").is_empty(), "{seen:#}");
    assert!(header(&seen, "keep-alive").is_empty());
    assert_eq!(header(&seen, "x-stay"), ["end-to-end"]);
    assert_eq!(header(&seen, "host"), ["gateway.test"]);
}

#[actix_web::test]
async fn invalid_revoked_and_disallowed_keys_never_reach_the_upstream() {
    let upstream = start_upstream();
    let app = gateway(&upstream, |_| {}).await;
    let org = app.create_org("Guard").await;
    let (key_id, key) = app.new_project_key(&org).await;
    let forged =
        logstitch_gateway::domain::ApiKey::generate(logstitch_gateway::domain::KeyType::Project);

    let none = app.request(Method::GET, "/api/v1/events", None, None).await;
    assert_eq!(none.error_code(), "unauthorized");
    let unknown = app
        .request(Method::GET, "/api/v1/events", Some(forged.expose()), None)
        .await;
    assert_eq!(unknown.error_code(), "invalid_api_key");
    // Project-only route: the master key is refused.
    let master = app
        .request(Method::GET, "/api/v1/events", Some(&org.master_key), None)
        .await;
    assert_eq!(master.status, StatusCode::FORBIDDEN);
    app.revoke_key(&org.master_key, &key_id).await;
    let revoked = app
        .request(Method::POST, "/api/v1/events", Some(&key), Some(&json!({})))
        .await;
    assert_eq!(revoked.error_code(), "key_revoked");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);

    // A route that admits master keys forwards them, without a project header.
    let allowed = app
        .request(
            Method::GET,
            "/api/v1/anything/x",
            Some(&org.master_key),
            None,
        )
        .await;
    assert_eq!(allowed.status, StatusCode::CREATED);
    assert!(header(&allowed.body, "x-logstitch-project-id").is_empty());
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 1);
}

#[actix_web::test]
async fn prefixes_match_at_segment_boundaries_only() {
    let upstream = start_upstream();
    let app = gateway(&upstream, |_| {}).await;
    let org = app.create_org("Bounds").await;
    let (_, key) = app.new_project_key(&org).await;
    let exact = app
        .request(Method::GET, "/api/v1/events", Some(&key), None)
        .await;
    assert_eq!(exact.status, StatusCode::CREATED);
    let sibling = app
        .request(Method::GET, "/api/v1/eventsx", Some(&key), None)
        .await;
    assert_eq!(sibling.error_code(), "not_found");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 1);
}

#[actix_web::test]
async fn large_bodies_stream_both_ways() {
    let upstream = start_upstream();
    let app = gateway(&upstream, |settings| {
        settings.gateway.routes[0].timeout = std::time::Duration::from_millis(20_000);
    })
    .await;
    let org = app.create_org("Stream").await;
    let (_, key) = app.new_project_key(&org).await;
    let body: Vec<u8> = (0..BIG).map(|i| (i % 253) as u8).collect();
    let up = app
        .raw(
            Method::PUT,
            "/api/v1/events/upload",
            &[("Authorization", format!("Bearer {key}").as_bytes())],
            body.clone(),
        )
        .await;
    assert_eq!(up.status, StatusCode::CREATED, "{:?}", up.status);
    assert_eq!(up.body["body_len"], BIG);
    assert_eq!(up.body["body_sha256"], hex(&Sha256::digest(&body)));

    let down = app
        .request(Method::GET, "/api/v1/events/big", Some(&key), None)
        .await;
    assert_eq!(down.status, StatusCode::OK);
    assert_eq!(down.headers.get("x-upstream").unwrap(), "big");
    assert_eq!(down.text.len(), BIG);
}

#[actix_web::test]
async fn upstream_down_is_502_and_slow_is_504_both_counted() {
    let upstream = start_upstream();
    let app = gateway(&upstream, |_| {}).await;
    let org = app.create_org("Faults").await;
    let (_, key) = app.new_project_key(&org).await;

    let down = app
        .request(Method::GET, "/api/v1/down/x", Some(&key), None)
        .await;
    assert_eq!(down.status, StatusCode::BAD_GATEWAY);
    assert_eq!(down.error_code(), "upstream_unavailable");
    assert!(down.body["request_id"]
        .as_str()
        .unwrap()
        .starts_with("req_"));

    let slow = app
        .request(Method::GET, "/api/v1/events/slow", Some(&key), None)
        .await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.error_code(), "upstream_timeout");

    assert_eq!(
        app.metric(
            r#"logstitch_gateway_upstream_errors_total{kind="unavailable",route="/api/v1/down"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        app.metric(
            r#"logstitch_gateway_upstream_errors_total{kind="timeout",route="/api/v1/events"}"#
        )
        .await,
        1.0
    );
}

#[actix_web::test]
async fn bursts_over_the_key_limit_get_429_and_other_keys_are_unaffected() {
    let upstream = start_upstream();
    let app = gateway(&upstream, |settings| {
        settings.rate_limit.requests_per_second = 0.5;
        settings.rate_limit.burst = std::num::NonZeroU32::new(3).unwrap();
    })
    .await;
    let org = app.create_org("Limits").await;
    let (_, first) = app.new_project_key(&org).await;
    let (_, second) = app.new_project_key(&org).await;

    for remaining in ["2", "1", "0"] {
        let ok = app
            .request(Method::GET, "/api/v1/events", Some(&first), None)
            .await;
        assert_eq!(ok.status, StatusCode::CREATED);
        assert_eq!(ok.headers.get("ratelimit-limit").unwrap(), "3");
        assert_eq!(ok.headers.get("ratelimit-remaining").unwrap(), remaining);
        assert!(ok.headers.get("ratelimit-reset").is_some());
    }
    let limited = app
        .request(Method::GET, "/api/v1/events", Some(&first), None)
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.error_code(), "rate_limited");
    let retry_after: u64 = limited
        .headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(limited.headers.get("ratelimit-remaining").unwrap(), "0");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 3);

    let other = app
        .request(Method::GET, "/api/v1/events", Some(&second), None)
        .await;
    assert_eq!(other.status, StatusCode::CREATED);
    // The key API itself is not rate limited per key.
    assert_eq!(app.verify(&first).await.status, StatusCode::OK);
    assert!(
        app.metric(r#"logstitch_rate_limited_total{kind="key"}"#)
            .await
            >= 1.0
    );
}

#[actix_web::test]
async fn a_project_override_replaces_the_default_limit() {
    let upstream = start_upstream();
    let db = TestDatabase::create().await;
    // Set up the org first on a plain instance, to learn its project id.
    let setup = spawn_app_with(db.clone(), |_| {}).await;
    let org = setup.create_org("Override").await;
    let (_, key) = setup.new_project_key(&org).await;
    let project = logstitch_gateway::domain::ProjectId::parse(&org.project_id).unwrap();
    let url = upstream.url.clone();
    let app = spawn_app_with(db, move |settings| {
        settings.gateway.routes = vec![route("/api/v1/events", &url, &["project"], 1000)];
        settings.rate_limit.requests_per_second = 0.5;
        settings.rate_limit.burst = std::num::NonZeroU32::new(1).unwrap();
        settings.rate_limit.overrides = vec![RateLimitOverride {
            project_id: project,
            requests_per_second: 0.5,
            burst: std::num::NonZeroU32::new(4).unwrap(),
        }];
    })
    .await;
    for _ in 0..4 {
        let ok = app
            .request(Method::GET, "/api/v1/events", Some(&key), None)
            .await;
        assert_eq!(ok.status, StatusCode::CREATED);
        assert_eq!(ok.headers.get("ratelimit-limit").unwrap(), "4");
    }
    let limited = app
        .request(Method::GET, "/api/v1/events", Some(&key), None)
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
}

#[actix_web::test]
async fn failed_authentications_are_throttled_per_ip_before_any_lookup() {
    let upstream = start_upstream();
    let app = gateway(&upstream, |settings| {
        settings.rate_limit.failed_auth_per_second = 0.1;
        settings.rate_limit.failed_auth_burst = std::num::NonZeroU32::new(5).unwrap();
    })
    .await;
    let org = app.create_org("Guessing").await;
    for _ in 0..5 {
        let guess = logstitch_gateway::domain::ApiKey::generate(
            logstitch_gateway::domain::KeyType::Project,
        );
        assert_eq!(
            app.verify(guess.expose()).await.error_code(),
            "invalid_api_key"
        );
    }
    let lookups = app.metric("logstitch_auth_db_lookups_total").await;
    let guess =
        logstitch_gateway::domain::ApiKey::generate(logstitch_gateway::domain::KeyType::Project);
    let throttled = app.verify(guess.expose()).await;
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.error_code(), "rate_limited");
    assert!(throttled.headers.get("retry-after").is_some());
    // Refused before the lookup: the database was not asked.
    assert_eq!(app.metric("logstitch_auth_db_lookups_total").await, lookups);
    // While throttled, the address is refused whatever key it sends.
    assert_eq!(
        app.verify(&org.master_key).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

/// An upstream's bare 405 gets the envelope like the router's, with its other headers, but
/// none that would describe the JSON body wrongly (attacker review, issue 13).
#[actix_web::test]
async fn an_upstream_bare_405_is_enveloped_without_its_content_headers() {
    let upstream = start_upstream();
    let app = gateway(&upstream, |_| {}).await;
    let org = app.create_org("Refusing").await;
    let (_, key) = app.new_project_key(&org).await;
    let reply = app
        .request(Method::POST, "/api/v1/events/refuses", Some(&key), None)
        .await;
    assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let value = |name: &str| reply.headers.get(name).map(|v| v.to_str().unwrap());
    assert_eq!(value("content-type"), Some("application/json"));
    assert_eq!(value("content-encoding"), None, "{reply:?}");
    assert_eq!(value("content-language"), None, "{reply:?}");
    assert_eq!(value("allow"), Some("GET"));
    assert_eq!(value("x-upstream"), Some("refuses"));
    assert!(value("x-request-id").is_some_and(|id| id.starts_with("req_")));
}
