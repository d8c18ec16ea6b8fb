//! Postgres unreachable: 503 service_unavailable within the pool's wait timeout, never a
//! hang, and recovery without a restart once Postgres is back.

use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use logstitch_gateway::domain::{ApiKey, KeyType};
use secrecy::SecretString;
use serde_json::{json, Value};

use crate::helpers::{
    assert_error, spawn_app_with, try_timed, Reply, TestApp, TestDatabase, TestOrg,
};
use crate::pg_proxy::PgProxy;

const POOL_TIMEOUT_MS: u64 = 500;
/// The pool waits 0.5 s; an answer later than this is a failure to bound the wait.
const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// An app whose every database connection goes through `proxy`.
async fn app_behind_proxy() -> (TestApp, PgProxy) {
    let db = TestDatabase::create().await;
    let proxy = PgProxy::in_front_of(&db.url).await;
    let url = proxy.url_through(&db.url);
    let app = spawn_app_with(db, |settings| {
        settings.database.url = SecretString::from(url);
        settings.database.pool_timeout = std::time::Duration::from_millis(POOL_TIMEOUT_MS);
    })
    .await;
    (app, proxy)
}

/// Like [`try_timed`], but a missing answer fails the test.
async fn timed(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (Reply, Duration) {
    try_timed(app, method.clone(), path, token, body)
        .await
        .unwrap_or_else(|problem| panic!("{method} {path}: {problem}"))
}

/// None when the answer is `503 service_unavailable` in the envelope within
/// [`ANSWER_WITHIN`]; else what was wrong.
fn unavailable_problem(answer: Result<(Reply, Duration), String>) -> Option<String> {
    let (reply, took) = match answer {
        Ok(answer) => answer,
        Err(problem) => return Some(problem),
    };
    if reply.status != StatusCode::SERVICE_UNAVAILABLE
        || reply.error_code() != "service_unavailable"
    {
        return Some(format!("answered {} {}", reply.status, reply.text));
    }
    assert_error(
        &reply,
        StatusCode::SERVICE_UNAVAILABLE,
        "service_unavailable",
    );
    (took >= ANSWER_WITHIN).then(|| format!("503 took {took:?}, more than {ANSWER_WITHIN:?}"))
}

/// (label, method, path, bearer token, JSON body)
type OutageRequest<'a> = (&'a str, Method, &'a str, Option<&'a str>, Option<&'a Value>);

/// The requests that need the database, as callers would make them during an outage: each
/// must be a prompt 503. Reports every one that is not, then fails.
async fn assert_every_database_request_is_unavailable(app: &TestApp, org: &TestOrg, known: &str) {
    let never_seen = ApiKey::generate(KeyType::Project);
    let create = json!({"project_id": org.project_id, "type": "project", "name": "during outage"});
    let project = json!({"name": "during outage"});
    let requests: [OutageRequest; 5] = [
        (
            "never-seen key",
            Method::GET,
            "/api/v1/keys",
            Some(never_seen.expose()),
            None,
        ),
        (
            "create key",
            Method::POST,
            "/api/v1/keys",
            Some(&org.master_key),
            Some(&create),
        ),
        ("list keys", Method::GET, "/api/v1/keys", Some(known), None),
        (
            "create project",
            Method::POST,
            "/api/v1/projects",
            Some(&org.master_key),
            Some(&project),
        ),
        ("readyz", Method::GET, "/readyz", None, None),
    ];
    let mut problems = Vec::new();
    for (label, method, path, token, body) in requests {
        if let Some(problem) = unavailable_problem(try_timed(app, method, path, token, body).await)
        {
            problems.push(format!("{label}: {problem}"));
        }
    }
    // The process itself is fine.
    match try_timed(app, Method::GET, "/healthz", None, None).await {
        Ok((health, _)) if health.status == StatusCode::OK => {}
        other => problems.push(format!("healthz: {other:?}")),
    }
    assert!(
        problems.is_empty(),
        "during the outage:\n{}",
        problems.join("\n")
    );
}

/// Polls until a key can be created and used again (at most 20 s).
async fn assert_recovers(app: &TestApp, org: &TestOrg, known: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let key = loop {
        let (created, _) = timed(
            app,
            Method::POST,
            "/api/v1/keys",
            Some(&org.master_key),
            Some(&json!({"project_id": org.project_id, "type": "project", "name": "after"})),
        )
        .await;
        if created.status == StatusCode::CREATED {
            break created.body["key"].as_str().unwrap().to_owned();
        }
        assert_error(
            &created,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
        );
        assert!(
            Instant::now() < deadline,
            "no recovery 20 s after Postgres came back"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(app.verify(&key).await.status, StatusCode::OK);
    assert_eq!(app.list_keys(known).await.status, StatusCode::OK);
    let unknown = ApiKey::generate(KeyType::Project);
    assert_error(
        &app.list_keys(unknown.expose()).await,
        StatusCode::UNAUTHORIZED,
        "invalid_api_key",
    );
    // Ready again, once the invalidation listener has reconnected.
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.request(Method::GET, "/readyz", None, None).await.status != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "/readyz not 200 20 s after recovery"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

#[actix_web::test]
async fn postgres_down_answers_503_quickly_and_recovers_by_itself() {
    let (app, proxy) = app_behind_proxy().await;
    let org = app.create_org("Acme").await;
    let (_, known) = app.new_project_key(&org).await;
    assert_eq!(app.list_keys(&known).await.status, StatusCode::OK);

    proxy.cut();
    assert_every_database_request_is_unavailable(&app, &org, &known).await;
    // A missing or malformed key is refused without any lookup, so not as an outage.
    let (missing, _) = timed(&app, Method::GET, "/api/v1/keys", None, None).await;
    assert_error(&missing, StatusCode::UNAUTHORIZED, "unauthorized");
    let typo = format!("{}x", &known[..known.len() - 1]);
    let typo = if typo == known {
        format!("{}y", &known[..known.len() - 1])
    } else {
        typo
    };
    let (malformed, _) = timed(&app, Method::GET, "/api/v1/keys", Some(&typo), None).await;
    assert_error(&malformed, StatusCode::UNAUTHORIZED, "invalid_api_key");
    // Still down a while later: still a prompt 503, not a queue of waiting requests.
    actix_rt::time::sleep(Duration::from_millis(700)).await;
    assert_every_database_request_is_unavailable(&app, &org, &known).await;

    proxy.restore();
    assert_recovers(&app, &org, &known).await;
}

#[actix_web::test]
async fn postgres_partitioned_answers_503_quickly_and_recovers_by_itself() {
    let (app, proxy) = app_behind_proxy().await;
    let org = app.create_org("Acme").await;
    let (_, known) = app.new_project_key(&org).await;
    assert_eq!(app.list_keys(&known).await.status, StatusCode::OK);

    // Connections stay open but nothing comes back: pooled connections hang mid-query.
    proxy.blackhole();
    assert_every_database_request_is_unavailable(&app, &org, &known).await;

    proxy.restore();
    assert_recovers(&app, &org, &known).await;
}

#[actix_web::test]
async fn concurrent_requests_during_an_outage_all_answer_503_promptly() {
    let (app, proxy) = app_behind_proxy().await;
    let org = app.create_org("Acme").await;
    proxy.cut();
    let started = Instant::now();
    let replies = futures_util::future::join_all((0..40).map(|_| {
        let key = ApiKey::generate(KeyType::Project);
        let app = &app;
        async move {
            timed(app, Method::GET, "/api/v1/keys", Some(key.expose()), None)
                .await
                .0
        }
    }))
    .await;
    for reply in &replies {
        assert_error(
            reply,
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
        );
    }
    assert!(
        started.elapsed() < ANSWER_WITHIN * 2,
        "40 concurrent requests took {:?}",
        started.elapsed()
    );
    proxy.restore();
    assert_recovers(&app, &org, &org.master_key).await;
}
