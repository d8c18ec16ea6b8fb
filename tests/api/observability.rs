//! Metrics exposition and request logs, seen from outside.

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{serve_binary, spawn_app, spawn_app_with, TestDatabase};

/// Every metric the operators' issue names; all must be present after real traffic.
const EXPECTED_METRICS: &[&str] = &[
    "logstitch_http_requests_total",
    "logstitch_http_request_duration_seconds_bucket",
    "logstitch_auth_requests_total",
    "logstitch_auth_cache_hits_total",
    "logstitch_auth_cache_misses_total",
    "logstitch_auth_cache_entries",
    "logstitch_auth_db_lookups_total",
    "logstitch_cache_invalidations_total",
    "logstitch_invalidation_listener_up",
    "logstitch_keys_created_total",
    "logstitch_keys_revoked_total",
    "logstitch_org_actors",
    "logstitch_db_pool_size",
    "logstitch_db_pool_available",
    "logstitch_db_pool_waiting",
    "logstitch_last_used_flush_duration_seconds_bucket",
    "logstitch_last_used_pending",
    "logstitch_usage_flush_duration_seconds_bucket",
    "logstitch_usage_flush_errors_total",
    "logstitch_usage_flush_lag_seconds",
    "logstitch_usage_pending_requests",
    "logstitch_build_info",
];

#[actix_web::test]
async fn metrics_name_every_series_after_traffic_with_bounded_route_labels() {
    let app = spawn_app().await;
    let org = app.create_org("Metrics").await;
    let (id, key) = app.new_project_key(&org).await;
    app.revoke_key(&org.master_key, &id).await;
    app.verify(&key).await;
    for n in 0..5 {
        let path = format!("/no/such/route/{n}");
        let reply = app.request(Method::GET, &path, None, None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    // Let one lastUsedAt flush happen so its histogram has a sample.
    actix_rt::time::sleep(Duration::from_millis(1300)).await;

    let scrape = app.request(Method::GET, "/metrics", None, None).await;
    assert_eq!(scrape.status, StatusCode::OK);
    for name in EXPECTED_METRICS {
        assert!(
            scrape.text.lines().any(|line| line.starts_with(name)),
            "{name} missing from /metrics"
        );
    }
    assert!(scrape.text.contains(r#"route="/api/v1/keys/{id}""#));
    assert!(scrape.text.contains(r#"route="unmatched""#));
    assert!(
        !scrape.text.contains("/no/such/route"),
        "raw paths leak into labels"
    );
    assert!(
        app.metric(r#"logstitch_auth_requests_total{result="revoked"}"#)
            .await
            >= 1.0
    );
    assert_eq!(app.metric("logstitch_invalidation_listener_up").await, 1.0);
}

#[actix_web::test]
async fn metrics_can_have_their_own_listener() {
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db, |settings| {
        settings.server.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let public = app.request(Method::GET, "/metrics", None, None).await;
    assert_eq!(public.status, StatusCode::NOT_FOUND);

    let port = app.metrics_port.expect("a metrics port");
    let mut response = app
        .client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.body().await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("logstitch_build_info"));
}

/// The real binary, logging JSON at debug level: one line per request with the fields
/// operators need, no plaintext key anywhere; on SIGTERM it drains, then lastUsedAt is flushed.
#[actix_web::test]
async fn the_binary_logs_json_request_lines_without_keys_and_flushes_on_sigterm() {
    let db = TestDatabase::create().await;
    let admin_token = "observability-admin-token";
    let mut served = serve_binary(|command| {
        command
            .env("DATABASE_URL", &db.url)
            .env("LOGSTITCH_ADMIN_TOKEN", admin_token)
            .env("LOGSTITCH__SERVER__WORKERS", "1")
            // Long enough that only the shutdown flush can write lastUsedAt.
            .env("LOGSTITCH__LAST_USED__FLUSH_INTERVAL_MS", "600000")
            .env("RUST_LOG", "debug");
    })
    .await;
    let client = crate::http_client::Client::new();
    let base = served.base.clone();
    let mut created = client
        .post(format!("{base}/admin/v1/organizations"))
        .insert_header(("Authorization", format!("Bearer {admin_token}")))
        .send_json(&serde_json::json!({"name": "Logs"}))
        .await
        .unwrap();
    let org: Value = created.json().await.unwrap();
    let master_key = org["master_key"].as_str().unwrap().to_owned();
    let mut key_reply = client
        .post(format!("{base}/api/v1/keys"))
        .insert_header(("Authorization", format!("Bearer {master_key}")))
        .send_json(&serde_json::json!({
            "project_id": org["project_id"], "type": "project", "name": "logged"
        }))
        .await
        .unwrap();
    let key_body: Value = key_reply.json().await.unwrap();
    let project_key = key_body["key"].as_str().unwrap().to_owned();
    let verified = client
        .get(format!("{base}/api/v1/auth/verify"))
        .insert_header(("Authorization", format!("Bearer {project_key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), StatusCode::OK);

    served.sigterm();
    // Draining (server.drain_delay_ms, 1 s by default): still answering, but not ready, and
    // closing each connection after its response so clients move elsewhere.
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let draining = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(draining.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        draining.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    let still_served = client
        .get(format!("{base}/api/v1/auth/verify"))
        .insert_header(("Authorization", format!("Bearer {project_key}")))
        .send()
        .await
        .unwrap();
    assert_eq!(still_served.status(), StatusCode::OK);
    let exit = served.exit_status(Duration::from_secs(20)).await;
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
    let seen = served.all_lines();

    let all = seen.join("\n");
    for secret in [&master_key, &project_key, &admin_token.to_owned()] {
        assert!(
            !all.contains(secret.as_str()),
            "a secret appears in the logs"
        );
        // Not even the random part without its type prefix.
        assert!(
            !all.contains(&secret[3..]),
            "a secret's body appears in the logs"
        );
    }
    let request_lines: Vec<Value> = seen
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == "request")
        .collect();
    let verify_line = request_lines
        .iter()
        .find(|line| line["route"] == "/api/v1/auth/verify")
        .expect("a log line for the verify request");
    assert!(verify_line["request_id"]
        .as_str()
        .unwrap()
        .starts_with("req_"));
    assert_eq!(verify_line["status"], 200);
    assert!(verify_line["latency_us"].is_u64());
    assert_eq!(verify_line["organization_id"], org["organization_id"]);

    let stored = db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM api_keys WHERE key_type = 'project' AND last_used_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(stored, 1, "lastUsedAt was not flushed on shutdown");
}

/// Counters that haven't fired yet are exported at 0 for every known label value (and every
/// configured gateway route), so a dashboard panel shows 0, not "no data".
#[actix_web::test]
async fn labelled_counters_are_exported_at_zero_before_anything_happens() {
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        settings.gateway.routes = vec![crate::gateway::route(
            "/api/v1/events",
            "http://127.0.0.1:9",
            &["project"],
            1000,
        )];
    })
    .await;
    let scrape = app.request(Method::GET, "/metrics", None, None).await.text;
    for series in [
        r#"logstitch_gateway_upstream_errors_total{kind="timeout",route="/api/v1/events"} 0"#,
        r#"logstitch_gateway_upstream_errors_total{kind="unavailable",route="/api/v1/events"} 0"#,
        r#"logstitch_rate_limited_total{kind="key"} 0"#,
        r#"logstitch_rate_limited_total{kind="ip"} 0"#,
        r#"logstitch_auth_requests_total{result="unavailable"} 0"#,
        r#"logstitch_cache_invalidations_total{source="notify"} 0"#,
    ] {
        assert!(
            scrape.lines().any(|line| line == series),
            "{series} missing:\n{scrape}"
        );
    }
}

/// Authentication is counted once per request, in the middleware: a key its route refuses
/// (403) still authenticated, and each request moves the counter by exactly one.
#[actix_web::test]
async fn each_request_counts_its_authentication_once() {
    let app = spawn_app().await;
    let org = app.create_org("Counted").await;
    let (_, key) = app.new_project_key(&org).await;
    let ok = r#"logstitch_auth_requests_total{result="ok"}"#;
    let invalid = r#"logstitch_auth_requests_total{result="invalid"}"#;
    let (ok_before, invalid_before) = (app.metric(ok).await, app.metric(invalid).await);
    let refused = app.create_key(&key, &org.project_id, "not allowed").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(app.list_keys(&key).await.status, StatusCode::OK);
    assert_eq!(
        app.verify("pk_not_a_key").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.metric(ok).await, ok_before + 2.0);
    assert_eq!(app.metric(invalid).await, invalid_before + 1.0);
}

/// Each answer is counted once under its route, method and status (per-route handles, issue
/// 13), and methods a client invents share one label value, so they can't grow the series.
#[actix_web::test]
async fn requests_are_counted_per_route_method_and_status_and_invented_methods_share_other() {
    let app = spawn_app().await;
    let org = app.create_org("Counting").await;
    let (_, key) = app.new_project_key(&org).await;
    let series = |method: &str, route: &str, status: u16| {
        format!(
            r#"logstitch_http_requests_total{{method="{method}",route="{route}",status="{status}"}}"#
        )
    };
    let verify_ok = series("GET", "/api/v1/auth/verify", 200);
    let verify_401 = series("GET", "/api/v1/auth/verify", 401);
    let brewed = series("OTHER", "/healthz", 405);
    let verify_count =
        r#"logstitch_http_request_duration_seconds_count{route="/api/v1/auth/verify"}"#;
    let (ok_before, refused_before, brewed_before, count_before) = (
        app.metric(&verify_ok).await,
        app.metric(&verify_401).await,
        app.metric(&brewed).await,
        app.metric(verify_count).await,
    );

    for _ in 0..3 {
        assert_eq!(app.verify(&key).await.status, StatusCode::OK);
    }
    let refused = app
        .request(Method::GET, "/api/v1/auth/verify", None, None)
        .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    for invented in ["BREW", "PROPFIND", "XYZZY", "get"] {
        let method = Method::from_bytes(invented.as_bytes()).unwrap();
        let reply = app.request(method, "/healthz", None, None).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{invented}");
    }

    assert_eq!(app.metric(&verify_ok).await, ok_before + 3.0);
    assert_eq!(app.metric(&verify_401).await, refused_before + 1.0);
    assert_eq!(app.metric(verify_count).await, count_before + 4.0);
    assert_eq!(app.metric(&brewed).await, brewed_before + 4.0);
    let scrape = app.request(Method::GET, "/metrics", None, None).await;
    for invented in ["BREW", "PROPFIND", "XYZZY", "method=\"get\""] {
        assert!(!scrape.text.contains(invented), "{invented} became a label");
    }
}

/// A gateway whose stderr reader went away (a dead log shipper, `| head`) keeps serving and
/// still stops on SIGTERM: a log line it can't write is dropped, not a panic per request.
#[actix_web::test]
async fn a_closed_log_pipe_neither_stops_serving_nor_blocks_sigterm() {
    let db = TestDatabase::create().await;
    let dir = std::env::temp_dir().join(format!("logstitch-pipe-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port_file = dir.join("port");
    let mut child = crate::helpers::binary()
        .args(["serve", "--listen", "127.0.0.1:0", "--port-file"])
        .arg(&port_file)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the binary");
    // The reading end closes: every log line from now on meets a broken pipe.
    drop(child.stderr.take());
    let port = crate::helpers::eventually(Duration::from_secs(30), || async {
        std::fs::read_to_string(&port_file).is_ok_and(|port| !port.trim().is_empty())
    })
    .await;
    assert!(port, "the binary never wrote its port");
    let port = std::fs::read_to_string(&port_file).unwrap();
    let base = format!("http://127.0.0.1:{}", port.trim());
    let client = crate::http_client::Client::new();
    for request in 0..20 {
        let status = client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .map(|reply| reply.status())
            .map_err(|error| error.to_string());
        assert_eq!(
            status,
            Ok(StatusCode::OK),
            "request {request} after the log pipe closed"
        );
    }
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let stopped = crate::helpers::eventually(Duration::from_secs(20), || {
        let exited = child.try_wait().expect("wait").is_some();
        async move { exited }
    })
    .await;
    if !stopped {
        let _ = child.kill();
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        stopped,
        "SIGTERM did not stop a gateway whose log pipe closed"
    );
}
