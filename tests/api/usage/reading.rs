//! Reading usage: who may read what, the query's validation, and hour and day buckets.

use actix_web::http::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{new_key, OUTCOMES};
use crate::helpers::{
    assert_error, assert_validation_error, spawn_app, spawn_app_with, Reply, TestApp, TestDatabase,
};

async fn get(app: &TestApp, path: &str, token: &str) -> Reply {
    app.request(Method::GET, path, Some(token), None).await
}

#[actix_web::test]
async fn a_key_s_usage_is_read_by_whoever_may_list_it() {
    let app = spawn_app().await;
    let org = app.create_org("Readers").await;
    let other_org = app.create_org("Others").await;
    let created = app
        .request(
            Method::POST,
            "/api/v1/projects",
            Some(&org.master_key),
            Some(&json!({"name": "Second"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let second_project = created.body["id"].as_str().unwrap().to_owned();
    let (reader_id, reader) = new_key(&app, &org, &org.project_id, json!({})).await;
    let (_, narrow) = new_key(
        &app,
        &org,
        &org.project_id,
        json!({"scopes": ["keys.write"]}),
    )
    .await;
    let (elsewhere_id, _) = new_key(&app, &org, &second_project, json!({})).await;
    let (foreign_id, _) = new_key(&app, &other_org, &other_org.project_id, json!({})).await;
    let usage = |id: &str| format!("/api/v1/keys/{id}/usage");

    // The master key: any key of its organization. A project key holding keys.read: its own
    // project's keys. Every answer has the documented envelope.
    for (token, id) in [
        (&org.master_key, &elsewhere_id),
        (&org.master_key, &reader_id),
        (&reader, &reader_id),
    ] {
        let reply = get(&app, &usage(id), token).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        crate::helpers::assert_exact_fields(&reply.body, &["usage", "request_id"]);
        crate::helpers::assert_request_id(&reply);
    }
    // Without keys.read: 403 insufficient_scope, before the key is even looked at.
    let reply = get(&app, &usage(&reader_id), &narrow).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "insufficient_scope");
    // Another project's key, another organization's, one that doesn't exist: 404.
    for (token, id) in [
        (&reader, elsewhere_id.clone()),
        (&reader, foreign_id.clone()),
        (&org.master_key, foreign_id.clone()),
        (&org.master_key, Uuid::new_v4().to_string()),
    ] {
        assert_error(
            &get(&app, &usage(&id), token).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    let malformed = get(&app, &usage("not-a-uuid"), &org.master_key).await;
    assert_eq!(assert_validation_error(&malformed), vec!["id"]);

    // The organization's usage: master only.
    let reply = get(&app, "/api/v1/usage", &reader).await;
    assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
    let reply = get(&app, "/api/v1/usage", &org.master_key).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let path = format!("/api/v1/usage?project_id={second_project}");
    assert_eq!(
        get(&app, &path, &org.master_key).await.status,
        StatusCode::OK
    );
    let path = format!("/api/v1/usage?project_id={}", other_org.project_id);
    assert_error(
        &get(&app, &path, &org.master_key).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let path = format!("/api/v1/usage?project_id={}", Uuid::new_v4());
    assert_error(
        &get(&app, &path, &org.master_key).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let malformed = get(&app, "/api/v1/usage?project_id=nope", &org.master_key).await;
    assert_eq!(assert_validation_error(&malformed), vec!["project_id"]);
}

#[actix_web::test]
async fn bad_ranges_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let org = app.create_org("Ranges").await;
    let (id, _) = new_key(&app, &org, &org.project_id, json!({})).await;
    let cases: &[(&str, &str)] = &[
        ("from=yesterday", "from"),
        ("to=2026-01-15", "to"),
        ("from=2026-01-15T10:00:00Z&to=2026-01-15T10:00:00Z", "to"),
        ("from=2026-01-15T10:00:00Z&to=2026-01-15T09:00:00Z", "to"),
        ("from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:01Z", "to"),
        (
            "from=2025-01-01T00:00:00Z&to=2026-01-02T00:00:01Z&granularity=day",
            "to",
        ),
        ("granularity=minute", "granularity"),
        ("granularity=Hour", "granularity"),
        ("granularity=hour&granularity=day", "granularity"),
        (
            "from=2026-01-15T10:00:00Z&from=2026-01-15T11:00:00Z",
            "from",
        ),
        ("limit=10", "limit"),
        (
            "project_id=3f1b0c4e-0000-4000-8000-000000000000",
            "project_id",
        ),
    ];
    for (query, field) in cases {
        let reply = get(
            &app,
            &format!("/api/v1/keys/{id}/usage?{query}"),
            &org.master_key,
        )
        .await;
        assert_eq!(
            assert_validation_error(&reply),
            vec![*field],
            "{query}: {reply:?}"
        );
    }
    for (query, field) in &cases[..9] {
        let reply = get(&app, &format!("/api/v1/usage?{query}"), &org.master_key).await;
        assert_eq!(
            assert_validation_error(&reply),
            vec![*field],
            "{query}: {reply:?}"
        );
    }
    // The longest ranges allowed.
    for query in [
        "from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
        "from=2025-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&granularity=day",
        "from=2026-01-15T10:00:00%2B01:00&to=2026-01-15T12:00:00-01:00&granularity=hour",
    ] {
        let reply = get(
            &app,
            &format!("/api/v1/keys/{id}/usage?{query}"),
            &org.master_key,
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {reply:?}");
        assert_eq!(reply.body["usage"], json!([]));
    }
}

/// Writes hourly usage rows as a flush would have (the counts of past hours can only come
/// from the past), then reads them back by hour and by day.
#[actix_web::test]
async fn hour_and_day_buckets_sum_the_hours_they_start() {
    let app = spawn_app_with(TestDatabase::create().await, |_| {}).await;
    let org = app.create_org("Buckets").await;
    let (id, _) = new_key(&app, &org, &org.project_id, json!({})).await;
    let (other_id, _) = new_key(&app, &org, &org.project_id, json!({})).await;
    let db = app.db.client().await;
    let rows = [
        (&id, "2026-01-15T09:00:00Z", 3i64, 1i64),
        (&id, "2026-01-15T10:00:00Z", 2, 0),
        (&id, "2026-01-15T23:00:00Z", 1, 0),
        (&id, "2026-01-16T03:00:00Z", 5, 2),
        (&other_id, "2026-01-15T10:00:00Z", 7, 0),
    ];
    for (key, hour, valid, revoked) in rows {
        db.execute(
            "INSERT INTO key_usage (key_id, hour, organization_id, project_id, valid, revoked)
             SELECT id, $2::text::timestamptz, organization_id, project_id, $3, $4
             FROM api_keys WHERE id = $1",
            &[&Uuid::parse_str(key).unwrap(), &hour, &valid, &revoked],
        )
        .await
        .unwrap();
    }
    let read = |path: String| {
        let app = &app;
        let token = org.master_key.clone();
        async move {
            let reply = get(app, &path, &token).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}: {reply:?}");
            reply.body["usage"].as_array().unwrap().clone()
        }
    };
    let starts = |buckets: &[Value]| -> Vec<String> {
        buckets
            .iter()
            .map(|b| b["start"].as_str().unwrap().to_owned())
            .collect()
    };

    // Hours: `from` truncated to its hour, `to` excluded, empty hours left out, oldest first.
    let hours = read(format!(
        "/api/v1/keys/{id}/usage?from=2026-01-15T09:59:59Z&to=2026-01-16T03:00:00Z"
    ))
    .await;
    assert_eq!(
        starts(&hours),
        [
            "2026-01-15T09:00:00Z",
            "2026-01-15T10:00:00Z",
            "2026-01-15T23:00:00Z"
        ]
    );
    assert_eq!(hours[0]["total"], 4);
    assert_eq!(hours[0]["valid"], 3);
    assert_eq!(hours[0]["revoked"], 1);
    for outcome in OUTCOMES
        .iter()
        .filter(|o| !["valid", "revoked"].contains(o))
    {
        assert_eq!(hours[0][*outcome], 0, "{outcome}");
    }

    // Days: a day is listed when it starts before `to`, with all of its hours.
    let days = read(format!(
        "/api/v1/keys/{id}/usage?from=2026-01-15T12:00:00Z&to=2026-01-16T01:00:00Z&granularity=day"
    ))
    .await;
    assert_eq!(
        starts(&days),
        ["2026-01-15T00:00:00Z", "2026-01-16T00:00:00Z"]
    );
    assert_eq!(
        (days[0]["valid"].clone(), days[0]["revoked"].clone()),
        (json!(6), json!(1))
    );
    assert_eq!(
        (days[1]["total"].clone(), days[1]["revoked"].clone()),
        (json!(7), json!(2))
    );

    // The organization: both keys summed per bucket.
    let org_days = read(
        "/api/v1/usage?from=2026-01-15T00:00:00Z&to=2026-01-17T00:00:00Z&granularity=day".into(),
    )
    .await;
    assert_eq!(org_days[0]["valid"], 13);
    assert_eq!(org_days[1]["valid"], 5);
    let project = read(format!(
        "/api/v1/usage?project_id={}&from=2026-01-15T10:00:00Z&to=2026-01-15T11:00:00Z",
        org.project_id
    ))
    .await;
    assert_eq!(starts(&project), ["2026-01-15T10:00:00Z"]);
    assert_eq!(project[0]["valid"], 9);
}
