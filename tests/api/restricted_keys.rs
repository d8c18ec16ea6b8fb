//! Restricted keys (issue 20): scopes held by keys and needed by routes (gateway routes,
//! the key API, verify's `?scope=`), key updates (`PATCH /api/v1/keys/{id}`) that never
//! escalate and that every instance enforces as soon as they answer, disabled keys, and
//! per-key rate limits (local and shared through Redis).
//!
//! Gateway routes are built from the settings' own spelling (`scope`, `method_scopes`) by
//! [`route_from`], through the route's deserializer: the one place that knows those fields.

use std::num::NonZeroU32;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use chrono::{DateTime, SecondsFormat, Utc};
use logstitch_gateway::configuration::{
    GatewayRoute, OnRedisError, RateLimitOverride, RateLimitStore, Settings,
};
use logstitch_gateway::domain::{ApiKey, KeyType, ProjectId};
use secrecy::SecretString;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::external::{self, WorkDir};
use crate::gateway::{header, start_upstream, Upstream};
use crate::helpers::{
    api_timestamp, assert_error, assert_exact_fields, assert_request_id, assert_validation_error,
    spawn_app_with, spawn_isolated_app_with, spawn_isolated_pair, Reply, TestApp, TestDatabase,
    TestOrg,
};
use crate::keys::KEY_ITEM_FIELDS;
use crate::nginx::{get as nginx_get, Nginx};

const CREATED_FIELDS: &[&str] = &["key", "prefix", "type", "name", "scopes", "request_id"];
const VERIFIED_FIELDS: &[&str] = &[
    "valid",
    "key_id",
    "organization_id",
    "project_id",
    "type",
    "expires_at",
    "scopes",
    "request_id",
];
const EVENT_FIELDS: &[&str] = &[
    "id",
    "action",
    "occurredAt",
    "actor",
    "target",
    "projectId",
    "ip",
    "userAgent",
    "requestId",
    "changes",
];

// ---- Settings ----

/// A gateway route as a settings file spells it (`[[gateway.routes]]`), read by the route's
/// own deserializer, so `scope` and `method_scopes` (issue 20) need no struct literal here.
fn route_from(spec: Value) -> GatewayRoute {
    serde_json::from_value(spec.clone())
        .unwrap_or_else(|error| panic!("route settings {spec}: {error}"))
}

/// A route with `scope` and `method_scopes` as given (left out when None / empty).
fn scoped_route(
    prefix: &str,
    upstream: &str,
    key_types: &[&str],
    scope: Option<&str>,
    method_scopes: &[(&str, &str)],
) -> GatewayRoute {
    let mut spec = json!({
        "prefix": prefix,
        "upstream": upstream,
        "key_types": key_types,
        "timeout_ms": 5000,
    });
    if let Some(scope) = scope {
        spec["scope"] = json!(scope);
    }
    if !method_scopes.is_empty() {
        let methods: Map<String, Value> = method_scopes
            .iter()
            .map(|(method, scope)| (method.to_string(), json!(scope)))
            .collect();
        spec["method_scopes"] = Value::Object(methods);
    }
    route_from(spec)
}

/// The routes most tests here run with (catalog: keys.read, keys.write, events.read,
/// events.write, reports.read, internal.read):
/// - `/api/v1/events`, project keys: GET needs events.read, POST events.write (its
///   `method_scopes`), any other method events.write (its `scope`);
/// - `/api/v1/reports`, project keys: GET needs reports.read, other methods nothing (no
///   `scope`);
/// - `/api/v1/open`, project keys, no scope: any project key, as before issue 20;
/// - `/api/v1/internal`, master keys only, needs internal.read.
fn events_routes(upstream: &str) -> Vec<GatewayRoute> {
    vec![
        scoped_route(
            "/api/v1/events",
            upstream,
            &["project"],
            Some("events.write"),
            &[("GET", "events.read"), ("POST", "events.write")],
        ),
        scoped_route(
            "/api/v1/reports",
            upstream,
            &["project"],
            None,
            &[("GET", "reports.read")],
        ),
        scoped_route("/api/v1/open", upstream, &["project"], None, &[]),
        scoped_route(
            "/api/v1/internal",
            upstream,
            &["master"],
            Some("internal.read"),
            &[],
        ),
    ]
}

/// A resource or action part of the longest allowed length (32).
fn part_of_32(first: char) -> String {
    format!("{first}{}", "x".repeat(31))
}

/// `bulk00.read` … `bulk39.read`.
fn bulk_scope(i: usize) -> String {
    format!("bulk{i:02}.read")
}

/// The events routes plus 40 routes naming `bulk00.read`…`bulk39.read`, one naming a scope
/// whose parts are 32 characters long, one with `-` and `_` in both parts.
fn catalog_routes(upstream: &str) -> Vec<GatewayRoute> {
    let mut routes = events_routes(upstream);
    for i in 0..40 {
        let prefix = format!("/api/v1/bulk{i:02}");
        routes.push(scoped_route(
            &prefix,
            upstream,
            &["project"],
            Some(&bulk_scope(i)),
            &[],
        ));
    }
    let long = format!("{}.{}", part_of_32('r'), part_of_32('a'));
    routes.push(scoped_route(
        "/api/v1/long",
        upstream,
        &["project"],
        Some(&long),
        &[],
    ));
    routes.push(scoped_route(
        "/api/v1/dashed",
        upstream,
        &["project"],
        Some("audit-log_v2.read_all-x"),
        &[],
    ));
    routes
}

/// Default key limits, stated here so the tests don't depend on config/default.toml.
fn default_limits(settings: &mut Settings, per_second: f64, burst: u32) {
    settings.rate_limit.requests_per_second = per_second;
    settings.rate_limit.burst = NonZeroU32::new(burst).unwrap();
}

/// An instance on a fresh database with [`events_routes`] to `upstream`, default limits of
/// 100/s and 200, then `customize`.
/// A PATCH of the key's own rate limit that must succeed; returns the body.
async fn limit_patched(
    app: &TestApp,
    org: &TestOrg,
    token: &str,
    id: &str,
    requests_per_second: f64,
    burst: u32,
) -> Value {
    let limit = json!({"requests_per_second": requests_per_second, "burst": burst});
    patched(app, org, token, id, json!({ "rate_limit": limit })).await
}

/// Each (rate, burst) PATCHed by `caller` onto `target` is refused for `rate_limit`.
async fn assert_limits_refused(app: &TestApp, caller: &str, target: &str, limits: &[(f64, u32)]) {
    for (per_second, burst) in limits {
        let reply = app
            .patch_key(
                caller,
                target,
                &json!({"rate_limit": {"requests_per_second": per_second, "burst": burst}}),
            )
            .await;
        assert_refused_fields(&reply, &["rate_limit"], &format!("{per_second}/{burst}"));
    }
}

/// Settings with the events routes, `default` limits (rate, burst) and `project`'s override.
fn overridden_limits(
    upstream: &str,
    project: ProjectId,
    default: (f64, u32),
    overridden: (f64, u32),
) -> impl FnOnce(&mut Settings) {
    let url = upstream.to_owned();
    move |settings| {
        settings.gateway.routes = events_routes(&url);
        default_limits(settings, default.0, default.1);
        settings.rate_limit.overrides = vec![RateLimitOverride {
            project_id: project,
            requests_per_second: overridden.0,
            burst: NonZeroU32::new(overridden.1).unwrap(),
        }];
    }
}

async fn scoped_gateway(upstream: &Upstream, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let url = upstream.url.clone();
    spawn_app_with(TestDatabase::create().await, move |settings| {
        settings.gateway.routes = events_routes(&url);
        default_limits(settings, 100.0, 200);
        customize(settings);
    })
    .await
}

// ---- Keys and answers ----

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Now plus `seconds`, to the millisecond (as stored).
fn from_now(seconds: i64) -> DateTime<Utc> {
    let at = Utc::now() + chrono::Duration::seconds(seconds);
    api_timestamp(&json!(rfc3339(at)))
}

/// Sleeps until `at` has passed (plus a little, for the clock reads on each side).
async fn sleep_past(at: DateTime<Utc>) {
    let left = (at - Utc::now()).to_std().unwrap_or_default();
    actix_rt::time::sleep(left + Duration::from_millis(50)).await;
}

/// Creates a project key in the org's default project with the master key, `extra` added to
/// the body (`scopes`, `expires_at`); returns (id, plaintext). The id comes from the master's
/// list, so the new key is never used (its lastUsedAt stays null).
async fn new_key(app: &TestApp, org: &TestOrg, extra: Value) -> (String, String) {
    new_key_in(app, org, &org.project_id, extra).await
}

async fn new_key_in(
    app: &TestApp,
    org: &TestOrg,
    project_id: &str,
    extra: Value,
) -> (String, String) {
    let name = format!("k-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let mut body = json!({"project_id": project_id, "type": "project", "name": name});
    for (field, value) in extra.as_object().expect("extra fields are an object") {
        body[field] = value.clone();
    }
    let created = app.create_key_with(&org.master_key, &body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{body}: {created:?}");
    let key = created.body["key"].as_str().unwrap().to_owned();
    let item = app
        .key_items(&org.master_key)
        .await
        .into_iter()
        .find(|item| item["name"] == name.as_str() && item["prefix"] == key[..7])
        .unwrap_or_else(|| panic!("created key {name:?} is not listed"));
    (item["id"].as_str().unwrap().to_owned(), key)
}

/// The master key's id (from verify).
async fn master_key_id(app: &TestApp, org: &TestOrg) -> String {
    app.verify(&org.master_key).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A PATCH that must succeed: asserts 200 with exactly the list item's fields plus
/// `request_id`, in the list's order, equal to the item the master key's list now shows
/// (lastUsedAt aside: a key in use may have it flushed in between); returns the body.
async fn patched(app: &TestApp, org: &TestOrg, token: &str, id: &str, body: Value) -> Value {
    let reply = app.patch_key(token, id, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "PATCH {body}: {reply:?}");
    let mut fields = KEY_ITEM_FIELDS.to_vec();
    fields.push("request_id");
    assert_exact_fields(&reply.body, &fields);
    assert_request_id(&reply);
    assert_in_order(&reply.text, KEY_ITEM_FIELDS);
    let listed = app.key_item(&org.master_key, id).await;
    for field in KEY_ITEM_FIELDS {
        if *field != "lastUsedAt" {
            assert_eq!(
                reply.body[field], listed[field],
                "PATCH {body}: {field} answered differs from the list"
            );
        }
    }
    assert_eq!(reply.body["id"], id);
    reply.body
}

/// Asserts the first occurrence of each `"name"` in `text` comes in this order (the first
/// object that has them all: each list item and PATCH answer has every one).
fn assert_in_order(text: &str, names: &[&str]) {
    let mut from = 0;
    for name in names {
        let quoted = format!("\"{name}\":");
        let at = text[from..]
            .find(&quoted)
            .unwrap_or_else(|| panic!("{name} missing or out of order in {text}"));
        from += at + quoted.len();
    }
}

/// 403 `insufficient_scope` naming `scope`.
fn assert_insufficient_scope(reply: &Reply, scope: &str) {
    assert_error(reply, StatusCode::FORBIDDEN, "insufficient_scope");
    assert_eq!(
        reply.body["error"]["message"],
        format!("This key lacks the scope {scope}"),
        "{reply:?}"
    );
}

/// 401 with `code` (and the message issue 20 gives for `key_disabled`).
fn assert_unauthorized(reply: &Reply, code: &str) {
    assert_error(reply, StatusCode::UNAUTHORIZED, code);
    if code == "key_disabled" {
        assert_eq!(reply.body["error"]["message"], "API key is disabled");
    }
}

/// 400 `validation_error` with exactly one detail, for `field`; when `quoted` is given, the
/// detail's message names that entry in double quotes.
fn assert_one_detail(reply: &Reply, field: &str, quoted: Option<&str>, case: &str) {
    let fields = assert_validation_error(reply);
    assert_eq!(fields, [field], "{case}: {reply:?}");
    if let Some(entry) = quoted {
        let message = reply.body["error"]["details"][0]["message"]
            .as_str()
            .unwrap();
        assert!(
            message.contains(&format!("\"{entry}\"")),
            "{case}: the message must quote {entry:?}: {message}"
        );
    }
}

/// 403 `forbidden` with one `{field, message}` detail per refused field, exactly `fields`.
fn assert_refused_fields(reply: &Reply, fields: &[&str], case: &str) {
    assert_error(reply, StatusCode::FORBIDDEN, "forbidden");
    let details = reply.body["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("{case}: an escalation refusal carries details: {reply:?}"));
    let mut named: Vec<&str> = details
        .iter()
        .map(|detail| {
            assert_exact_fields(detail, &["field", "message"]);
            assert!(
                detail["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{case}: {detail}"
            );
            detail["field"].as_str().unwrap()
        })
        .collect();
    named.sort_unstable();
    let mut expected = fields.to_vec();
    expected.sort_unstable();
    assert_eq!(named, expected, "{case}: {reply:?}");
}

/// `{"requestsPerSecond": r, "burst": b}`, compared numerically (1 and 1.0 alike).
fn assert_rate_limit(value: &Value, per_second: f64, burst: u64) {
    assert_exact_fields(value, &["requestsPerSecond", "burst"]);
    assert_eq!(
        value["requestsPerSecond"].as_f64(),
        Some(per_second),
        "{value}"
    );
    assert_eq!(value["burst"].as_u64(), Some(burst), "{value}");
}

fn scopes_header(reply: &Reply) -> Option<&str> {
    reply
        .headers
        .get("x-logstitch-scopes")
        .map(|value| value.to_str().expect("ASCII header"))
}

fn ratelimit_limit(reply: &Reply) -> Option<&str> {
    reply
        .headers
        .get("ratelimit-limit")
        .map(|value| value.to_str().unwrap())
}

async fn verify_scope(app: &TestApp, token: &str, query: &str) -> Reply {
    app.request(
        Method::GET,
        &format!("/api/v1/auth/verify?{query}"),
        Some(token),
        None,
    )
    .await
}

async fn roll(app: &TestApp, token: &str, id: &str) -> Reply {
    app.request(
        Method::POST,
        &format!("/api/v1/keys/{id}/roll"),
        Some(token),
        None,
    )
    .await
}

/// Rows in audit_events.
async fn event_count(app: &TestApp) -> i64 {
    app.row_counts().await[4]
}

/// The organization's `key.updated` events, newest first.
async fn updated_events(app: &TestApp, org: &TestOrg) -> Vec<Value> {
    let page = app
        .request(
            Method::GET,
            "/api/v1/audit-events?action=key.updated&limit=100",
            Some(&org.master_key),
            None,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    page.body["events"].as_array().unwrap().clone()
}

fn hex_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---- 1. Scopes on create, list and verify ----

#[actix_web::test]
async fn create_stores_scopes_sorted_and_leaving_them_out_means_everything() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Scopes").await;

    let created = app
        .create_key_with(
            &org.master_key,
            &json!({"project_id": org.project_id, "type": "project", "name": "ingest",
                    "scopes": ["keys.read", "events.write", "events.read"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    assert_exact_fields(&created.body, CREATED_FIELDS);
    assert_eq!(
        created.body["scopes"],
        json!(["events.read", "events.write", "keys.read"])
    );

    // Left out: everything, as before issue 20.
    let everything = app
        .create_key(&org.master_key, &org.project_id, "all")
        .await;
    assert_eq!(everything.status, StatusCode::CREATED, "{everything:?}");
    assert_exact_fields(&everything.body, CREATED_FIELDS);
    assert_eq!(everything.body["scopes"], json!(["*"]));
    let key = everything.body["key"].as_str().unwrap();
    assert_eq!(app.verify(key).await.body["scopes"], json!(["*"]));

    // `*` always; a wildcard when it covers a catalog scope; sorted byte-wise.
    for (scopes, stored) in [
        (json!(["*"]), json!(["*"])),
        (json!(["events.*"]), json!(["events.*"])),
        (json!(["keys.*"]), json!(["keys.*"])),
        (json!(["internal.*"]), json!(["internal.*"])),
        (
            json!(["keys.write", "events.read", "events.*"]),
            json!(["events.*", "events.read", "keys.write"]),
        ),
    ] {
        let created = app
            .create_key_with(
                &org.master_key,
                &json!({"project_id": org.project_id, "type": "project", "name": "w",
                        "scopes": scopes}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{scopes}: {created:?}");
        assert_eq!(created.body["scopes"], stored, "{scopes}");
        let verified = app.verify(created.body["key"].as_str().unwrap()).await;
        assert_eq!(verified.status, StatusCode::OK, "{verified:?}");
        assert_eq!(verified.body["scopes"], stored, "{scopes}");
    }
}

#[actix_web::test]
async fn invalid_scopes_are_refused_naming_the_entry_and_create_nothing() {
    let upstream = start_upstream();
    let url = upstream.url.clone();
    let app = spawn_app_with(TestDatabase::create().await, move |settings| {
        settings.gateway.routes = catalog_routes(&url);
    })
    .await;
    let org = app.create_org("Invalid").await;
    let too_long = format!("{}x.read", part_of_32('r'));
    let thirty_three: Vec<String> = (0..33).map(bulk_scope).collect();
    let cases: Vec<(Value, &str, Option<&str>)> = vec![
        // Malformed.
        (json!(["Events.write"]), "scopes[0]", Some("Events.write")),
        (json!(["events"]), "scopes[0]", Some("events")),
        (
            json!(["events.write.all"]),
            "scopes[0]",
            Some("events.write.all"),
        ),
        (
            json!(["events.write", "1events.read"]),
            "scopes[1]",
            Some("1events.read"),
        ),
        (json!([""]), "scopes[0]", Some("")),
        (json!(["events. read"]), "scopes[0]", Some("events. read")),
        (json!(["*.read"]), "scopes[0]", Some("*.read")),
        (json!(["events.**"]), "scopes[0]", Some("events.**")),
        (
            json!([too_long.clone()]),
            "scopes[0]",
            Some(too_long.as_str()),
        ),
        // Well-formed but unknown to this instance's catalog.
        (json!(["events.bogus"]), "scopes[0]", Some("events.bogus")),
        (json!(["keys.delete"]), "scopes[0]", Some("keys.delete")),
        // A wildcard that covers no catalog scope.
        (
            json!(["keys.read", "bogus.*"]),
            "scopes[1]",
            Some("bogus.*"),
        ),
        // Duplicates: the later one is named.
        (
            json!(["events.read", "keys.read", "events.read"]),
            "scopes[2]",
            Some("events.read"),
        ),
        (json!(["*", "*"]), "scopes[1]", Some("*")),
        // The array itself.
        (json!([]), "scopes", None),
        (json!(thirty_three), "scopes", None),
        (json!("events.write"), "scopes", None),
        (json!({"events": "write"}), "scopes", None),
        (json!(7), "scopes", None),
        (json!(true), "scopes", None),
        // Entries that are not strings.
        (json!([7]), "scopes[0]", None),
        (json!(["events.read", null]), "scopes[1]", None),
    ];
    let before = app.row_counts().await;
    for (scopes, field, quoted) in cases {
        let reply = app
            .create_key_with(
                &org.master_key,
                &json!({"project_id": org.project_id, "type": "project", "name": "bad",
                        "scopes": scopes}),
            )
            .await;
        assert_one_detail(&reply, field, quoted, &scopes.to_string());
    }
    assert_eq!(
        app.row_counts().await,
        before,
        "a refused create changed something"
    );

    // The limits themselves are fine: 32 entries, parts of 32 characters, `-` and `_`.
    let thirty_two: Vec<String> = (0..32).rev().map(bulk_scope).collect();
    let mut sorted = thirty_two.clone();
    sorted.sort();
    let long = format!("{}.{}", part_of_32('r'), part_of_32('a'));
    for (scopes, stored) in [
        (json!(thirty_two), json!(sorted)),
        (json!([long]), json!([long])),
        (
            json!(["audit-log_v2.read_all-x", "bulk39.read"]),
            json!(["audit-log_v2.read_all-x", "bulk39.read"]),
        ),
    ] {
        let created = app
            .create_key_with(
                &org.master_key,
                &json!({"project_id": org.project_id, "type": "project", "name": "edge",
                        "scopes": scopes}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{scopes}: {created:?}");
        assert_eq!(created.body["scopes"], stored);
    }
}

#[actix_web::test]
async fn list_verify_and_identity_headers_show_scopes_and_master_keys_hold_everything() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Shown").await;
    let (id, key) = new_key(
        &app,
        &org,
        json!({"scopes": ["keys.read", "events.write", "events.read"]}),
    )
    .await;
    let sorted = json!(["events.read", "events.write", "keys.read"]);

    // The list: every item has the new fields, after expiresAt, in this order.
    let listed = app.list_keys(&org.master_key).await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    for item in listed.body["keys"].as_array().unwrap() {
        assert_exact_fields(item, KEY_ITEM_FIELDS);
        assert_eq!(item["enabled"], true);
        assert_eq!(item["rateLimit"], Value::Null);
    }
    assert_in_order(&listed.text, KEY_ITEM_FIELDS);
    let item = app.key_item(&org.master_key, &id).await;
    assert_eq!(item["scopes"], sorted);
    let master_item = app
        .key_items(&org.master_key)
        .await
        .into_iter()
        .find(|item| item["type"] == "master")
        .unwrap();
    assert_eq!(master_item["scopes"], json!(["*"]));
    // The same through the project key's own list (it holds keys.read).
    let own = app.key_item(&key, &id).await;
    assert_eq!(own["scopes"], sorted);
    assert_exact_fields(&own, KEY_ITEM_FIELDS);

    // Verify: the body and X-LogStitch-Scopes, space-separated in the stored order.
    let verified = app.verify(&key).await;
    assert_eq!(verified.status, StatusCode::OK, "{verified:?}");
    assert_exact_fields(&verified.body, VERIFIED_FIELDS);
    assert_eq!(verified.body["scopes"], sorted);
    assert_eq!(
        scopes_header(&verified),
        Some("events.read events.write keys.read")
    );
    let master = app.verify(&org.master_key).await;
    assert_exact_fields(&master.body, VERIFIED_FIELDS);
    assert_eq!(master.body["scopes"], json!(["*"]));
    assert_eq!(scopes_header(&master), Some("*"));
    let (_, everything) = new_key(&app, &org, json!({})).await;
    assert_eq!(scopes_header(&app.verify(&everything).await), Some("*"));

    // The gateway's identity headers: the real scopes, whatever the client claims.
    let forwarded = app
        .raw(
            Method::POST,
            "/api/v1/events",
            &[
                ("Authorization", format!("Bearer {key}").as_bytes()),
                ("X-LogStitch-Scopes", b"*"),
                ("X_LogStitch_Scopes", b"*"),
            ],
            Vec::new(),
        )
        .await;
    assert_eq!(forwarded.status, StatusCode::CREATED, "{forwarded:?}");
    assert_eq!(
        header(&forwarded.body, "x-logstitch-scopes"),
        ["events.read events.write keys.read"]
    );
    let as_master = app
        .request(
            Method::GET,
            "/api/v1/internal/x",
            Some(&org.master_key),
            None,
        )
        .await;
    assert_eq!(as_master.status, StatusCode::CREATED, "{as_master:?}");
    assert_eq!(header(&as_master.body, "x-logstitch-scopes"), ["*"]);
}

// ---- 2. Scopes needed by routes ----

#[actix_web::test]
async fn an_events_write_only_key_is_forwarded_on_post_and_refused_everything_else_it_lacks() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Least privilege").await;
    let (_, writer) = new_key(&app, &org, json!({"scopes": ["events.write"]})).await;
    let (sibling_id, sibling) = new_key(&app, &org, json!({})).await;

    let posted = app
        .request(
            Method::POST,
            "/api/v1/events",
            Some(&writer),
            Some(&json!({"action": "user.invited"})),
        )
        .await;
    assert_eq!(posted.status, StatusCode::CREATED, "{posted:?}");
    assert_eq!(posted.body["method"], "POST");
    // A method method_scopes doesn't list needs the route's `scope`.
    let put = app
        .request(Method::PUT, "/api/v1/events/x", Some(&writer), None)
        .await;
    assert_eq!(put.status, StatusCode::CREATED, "{put:?}");
    // A route that names no scope admits any project key.
    let open = app
        .request(Method::GET, "/api/v1/open/x", Some(&writer), None)
        .await;
    assert_eq!(open.status, StatusCode::CREATED, "{open:?}");
    // A method a route's method_scopes doesn't list, on a route without `scope`: nothing.
    let report = app
        .request(Method::POST, "/api/v1/reports", Some(&writer), None)
        .await;
    assert_eq!(report.status, StatusCode::CREATED, "{report:?}");
    let hits = upstream.hits.load(Ordering::SeqCst);
    assert_eq!(hits, 4);
    assert_insufficient_scope(
        &app.request(Method::GET, "/api/v1/reports", Some(&writer), None)
            .await,
        "reports.read",
    );

    // GET of the same route needs events.read.
    for path in ["/api/v1/events", "/api/v1/events/batch?x=1"] {
        let read = app.request(Method::GET, path, Some(&writer), None).await;
        assert_insufficient_scope(&read, "events.read");
    }
    assert_eq!(
        upstream.hits.load(Ordering::SeqCst),
        hits,
        "refused, not forwarded"
    );

    // The key API: list needs keys.read; revoke, roll and update need keys.write.
    assert_insufficient_scope(&app.list_keys(&writer).await, "keys.read");
    assert_insufficient_scope(&app.revoke_key(&writer, &sibling_id).await, "keys.write");
    assert_insufficient_scope(&roll(&app, &writer, &sibling_id).await, "keys.write");
    assert_insufficient_scope(
        &app.patch_key(&writer, &sibling_id, &json!({"name": "mine now"}))
            .await,
        "keys.write",
    );
    // Verify needs no scope.
    let verified = app.verify(&writer).await;
    assert_eq!(verified.status, StatusCode::OK, "{verified:?}");
    assert_eq!(verified.body["scopes"], json!(["events.write"]));

    // The sibling is untouched and still works.
    let item = app.key_item(&org.master_key, &sibling_id).await;
    assert_eq!(item["revokedAt"], Value::Null);
    assert_eq!(item["expiresAt"], Value::Null);
    assert!(item["name"].as_str().unwrap().starts_with("k-"));
    assert_eq!(app.verify(&sibling).await.status, StatusCode::OK);
    let listed = app.list_keys(&sibling).await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");

    // The mirror image: a read-only key reads and can't write.
    let (_, reader) = new_key(&app, &org, json!({"scopes": ["events.read"]})).await;
    let read = app
        .request(Method::GET, "/api/v1/events", Some(&reader), None)
        .await;
    assert_eq!(read.status, StatusCode::CREATED, "{read:?}");
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let write = app
            .request(method.clone(), "/api/v1/events", Some(&reader), None)
            .await;
        assert_insufficient_scope(&write, "events.write");
    }
}

#[actix_web::test]
async fn wildcards_grant_every_action_of_their_resource_and_key_types_are_checked_first() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Wildcards").await;
    let (_, events_any) = new_key(&app, &org, json!({"scopes": ["events.*"]})).await;
    for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
        let reply = app
            .request(method.clone(), "/api/v1/events/x", Some(&events_any), None)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{method}: {reply:?}");
    }
    assert_insufficient_scope(&app.list_keys(&events_any).await, "keys.read");

    let (_, keys_any) = new_key(&app, &org, json!({"scopes": ["keys.*"]})).await;
    let (doomed_id, _) = new_key(&app, &org, json!({})).await;
    assert_eq!(app.list_keys(&keys_any).await.status, StatusCode::OK);
    assert_eq!(
        app.revoke_key(&keys_any, &doomed_id).await.status,
        StatusCode::OK
    );
    assert_insufficient_scope(
        &app.request(Method::GET, "/api/v1/events", Some(&keys_any), None)
            .await,
        "events.read",
    );

    // keys.write alone: revoke yes, list no.
    let (_, keys_write) = new_key(&app, &org, json!({"scopes": ["keys.write"]})).await;
    let (other_id, _) = new_key(&app, &org, json!({})).await;
    assert_insufficient_scope(&app.list_keys(&keys_write).await, "keys.read");
    assert_eq!(
        app.revoke_key(&keys_write, &other_id).await.status,
        StatusCode::OK
    );

    // The key type is checked before the scope: a project key on a master-only route is
    // `forbidden`, whatever it holds or lacks.
    let hits = upstream.hits.load(Ordering::SeqCst);
    for key in [&events_any, &keys_any] {
        let reply = app
            .request(Method::GET, "/api/v1/internal", Some(key), None)
            .await;
        assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
    }
    // And a master key (which holds `*`) on a project-only route.
    let reply = app
        .request(Method::GET, "/api/v1/events", Some(&org.master_key), None)
        .await;
    assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), hits);
}

#[actix_web::test]
async fn unknown_revoked_expired_and_disabled_keys_get_their_401_before_any_403() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Order").await;
    let master_id = master_key_id(&app, &org).await;
    // Every key below holds events.read only: each route tried needs something else.
    let read_only = |expires: Option<DateTime<Utc>>| match expires {
        Some(at) => json!({"scopes": ["events.read"], "expires_at": rfc3339(at)}),
        None => json!({"scopes": ["events.read"]}),
    };
    let expires = from_now(6);
    // Revoked, expired and disabled: revoked wins.
    let (revoked_id, revoked) = new_key(&app, &org, read_only(Some(expires))).await;
    // Expired and disabled: expired wins.
    let (expired_id, expired) = new_key(&app, &org, read_only(Some(expires))).await;
    let (disabled_id, disabled) = new_key(&app, &org, read_only(None)).await;
    for key in [&revoked, &expired, &disabled] {
        // Cached as valid on this instance first.
        assert_eq!(app.verify(key).await.status, StatusCode::OK);
    }
    for id in [&revoked_id, &expired_id, &disabled_id] {
        patched(&app, &org, &org.master_key, id, json!({"enabled": false})).await;
    }
    assert_eq!(
        app.revoke_key(&org.master_key, &revoked_id).await.status,
        StatusCode::OK
    );
    sleep_past(expires).await;

    let forged = ApiKey::generate(KeyType::Project);
    let cases: [(Option<&str>, &str); 5] = [
        (None, "unauthorized"),
        (Some(forged.expose()), "invalid_api_key"),
        (Some(revoked.as_str()), "key_revoked"),
        (Some(expired.as_str()), "key_expired"),
        (Some(disabled.as_str()), "key_disabled"),
    ];
    let requests: Vec<(Method, String)> = vec![
        (Method::POST, "/api/v1/events".to_owned()),
        (Method::PUT, "/api/v1/events/x".to_owned()),
        (Method::GET, "/api/v1/internal".to_owned()),
        (Method::GET, "/api/v1/keys".to_owned()),
        (Method::DELETE, format!("/api/v1/keys/{master_id}")),
        (Method::POST, format!("/api/v1/keys/{disabled_id}/roll")),
        (Method::PATCH, format!("/api/v1/keys/{disabled_id}")),
        (
            Method::GET,
            "/api/v1/auth/verify?scope=events.write".to_owned(),
        ),
    ];
    for (key, code) in cases {
        for (method, path) in &requests {
            let body = (*method == Method::PATCH).then(|| json!({"name": "x"}));
            let reply = app.request(method.clone(), path, key, body.as_ref()).await;
            assert_unauthorized(&reply, code);
        }
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

#[actix_web::test]
async fn a_request_refused_403_spends_no_rate_limit_token() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |settings| default_limits(settings, 0.01, 2)).await;
    let org = app.create_org("Tokens").await;
    let (_, writer) = new_key(&app, &org, json!({"scopes": ["events.write"]})).await;
    for _ in 0..10 {
        let reply = app
            .request(Method::GET, "/api/v1/events", Some(&writer), None)
            .await;
        assert_insufficient_scope(&reply, "events.read");
    }
    for _ in 0..5 {
        let reply = app
            .request(Method::GET, "/api/v1/internal", Some(&writer), None)
            .await;
        assert_error(&reply, StatusCode::FORBIDDEN, "forbidden");
    }
    for remaining in ["1", "0"] {
        let reply = app
            .request(Method::POST, "/api/v1/events", Some(&writer), None)
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        assert_eq!(ratelimit_limit(&reply), Some("2"));
        assert_eq!(reply.headers.get("ratelimit-remaining").unwrap(), remaining);
    }
    let limited = app
        .request(Method::POST, "/api/v1/events", Some(&writer), None)
        .await;
    assert_error(&limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 2);
}

// ---- 3. Verify with ?scope= ----

#[actix_web::test]
async fn verify_with_a_scope_answers_403_when_the_key_lacks_it_and_400_for_a_bad_one() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Verify").await;
    let (writer_id, writer) = new_key(&app, &org, json!({"scopes": ["events.write"]})).await;
    let (_, events_any) = new_key(&app, &org, json!({"scopes": ["events.*"]})).await;
    let (_, everything) = new_key(&app, &org, json!({})).await;

    let held = verify_scope(&app, &writer, "scope=events.write").await;
    assert_eq!(held.status, StatusCode::OK, "{held:?}");
    assert_exact_fields(&held.body, VERIFIED_FIELDS);
    assert_eq!(held.body["key_id"], writer_id.as_str());
    assert_eq!(held.body["scopes"], json!(["events.write"]));
    assert_eq!(scopes_header(&held), Some("events.write"));
    assert_eq!(
        held.headers.get("x-logstitch-key-id").unwrap(),
        writer_id.as_str()
    );
    for lacking in ["events.read", "keys.read", "internal.read"] {
        let reply = verify_scope(&app, &writer, &format!("scope={lacking}")).await;
        assert_insufficient_scope(&reply, lacking);
    }
    // Without a scope, verify needs none.
    assert_eq!(app.verify(&writer).await.status, StatusCode::OK);

    // A well-formed scope outside the catalog is judged like any other.
    assert_insufficient_scope(
        &verify_scope(&app, &writer, "scope=reports.export").await,
        "reports.export",
    );
    for (key, scope) in [
        (&events_any, "events.read"),
        (&events_any, "events.write"),
        (&events_any, "events.replay"),
        (&everything, "reports.export"),
        (&org.master_key, "reports.export"),
        (&org.master_key, "keys.write"),
    ] {
        let reply = verify_scope(&app, key, &format!("scope={scope}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{scope}: {reply:?}");
    }
    assert_insufficient_scope(
        &verify_scope(&app, &events_any, "scope=keys.read").await,
        "keys.read",
    );

    // One plain scope, or 400 naming `scope`.
    for query in [
        "scope=events.*",
        "scope=*",
        "scope=%2A",
        "scope=",
        "scope",
        "scope=events.write&scope=events.read",
        "scope=events.write&scope=events.write",
        "scope=Bad.Scope",
        "scope=events",
        "scope=events.write.x",
        "scope=events.%20write",
    ] {
        for key in [&writer, &org.master_key] {
            let reply = verify_scope(&app, key, query).await;
            assert_one_detail(&reply, "scope", None, query);
        }
    }
}

#[actix_web::test]
async fn nginx_auth_request_with_a_scope_proxies_keys_that_hold_it_and_refuses_others() {
    let Some(nginx) = external::program("nginx", "nginx auth_request with ?scope=") else {
        return;
    };
    let build = external::run_ok(&nginx, &["-V"]);
    assert!(
        build.contains("--with-http_auth_request_module"),
        "{} is built without auth_request: {build}",
        nginx.display()
    );
    let upstream = start_upstream();
    let url = upstream.url.clone();
    let app = spawn_isolated_app_with(TestDatabase::create().await, move |settings| {
        settings.gateway.routes = events_routes(&url);
    })
    .await;
    let org = app.create_org("nginx-scopes").await;
    let (writer_id, writer) = new_key(&app, &org, json!({"scopes": ["events.write"]})).await;
    let (_, reader) = new_key(&app, &org, json!({"scopes": ["events.read"]})).await;

    let work = WorkDir::new("nginx-scopes");
    for dir in ["tmp", "html"] {
        std::fs::create_dir_all(work.path(dir)).unwrap();
    }
    std::fs::write(work.path("html/protected.txt"), "protected ok\n").unwrap();
    std::fs::write(
        work.path("nginx.conf"),
        scoped_nginx_config(&work, &build, app.port),
    )
    .unwrap();
    let _nginx = start_nginx(&nginx, &work);
    let socket = work.path("nginx.sock");
    let ask = |path: &str, bearer: Option<&str>| {
        nginx_get(&socket, path, bearer).unwrap_or_else(|error| {
            panic!(
                "no answer from nginx ({error}):\n{}",
                work.tail("error.log")
            )
        })
    };

    assert_eq!(ask("/write/", None).status, 401, "no key");
    let admitted = ask("/write/", Some(&writer));
    assert_eq!(admitted.status, 200, "writer on /write/: {}", admitted.body);
    assert_eq!(admitted.body, "protected ok\n");
    assert_eq!(admitted.header("x-scopes"), Some("events.write"));
    assert_eq!(ask("/read/", Some(&writer)).status, 403, "writer on /read/");
    assert_eq!(ask("/read/", Some(&reader)).status, 200, "reader on /read/");
    assert_eq!(
        ask("/write/", Some(&reader)).status,
        403,
        "reader on /write/"
    );
    assert_eq!(ask("/write/", Some(&org.master_key)).status, 200, "master");

    // A narrowing applies to the very next request behind nginx, and so does a disable.
    patched(
        &app,
        &org,
        &org.master_key,
        &writer_id,
        json!({"scopes": ["events.read"]}),
    )
    .await;
    assert_eq!(ask("/write/", Some(&writer)).status, 403, "after narrowing");
    assert_eq!(ask("/read/", Some(&writer)).status, 200, "after narrowing");
    patched(
        &app,
        &org,
        &org.master_key,
        &writer_id,
        json!({"enabled": false}),
    )
    .await;
    assert_eq!(ask("/read/", Some(&writer)).status, 401, "disabled");
}

/// nginx with `/write/` and `/read/` behind `auth_request` subrequests to verify with
/// `?scope=events.write` and `?scope=events.read`.
fn scoped_nginx_config(work: &WorkDir, nginx_build: &str, gateway_port: u16) -> String {
    let dir = work.0.display();
    let optional_temp_paths: String = ["fastcgi", "uwsgi", "scgi"]
        .iter()
        .filter(|module| !nginx_build.contains(&format!("--without-http_{module}_module")))
        .map(|module| format!("    {module}_temp_path {dir}/tmp/{module};\n"))
        .collect();
    let auth = |name: &str, scope: &str| {
        format!(
            r#"
        location = /_auth_{name} {{
            internal;
            proxy_pass http://127.0.0.1:{gateway_port}/api/v1/auth/verify?scope={scope};
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Authorization $http_authorization;
        }}
"#
        )
    };
    let protected = |name: &str| {
        format!(
            r#"
        location /{name}/ {{
            auth_request /_auth_{name};
            auth_request_set $scopes $upstream_http_x_logstitch_scopes;
            add_header X-Scopes $scopes;
            root {dir}/html;
            try_files /protected.txt =404;
        }}
"#
        )
    };
    format!(
        r#"# Written by tests/api/restricted_keys.rs for one run; everything lives in {dir}.
daemon off;
master_process off;
pid {dir}/nginx.pid;
error_log {dir}/error.log notice;

events {{
    worker_connections 64;
}}

http {{
    access_log {dir}/access.log;
    default_type text/plain;
    client_body_temp_path {dir}/tmp/client_body;
    proxy_temp_path {dir}/tmp/proxy;
{optional_temp_paths}
    server {{
        listen unix:{dir}/nginx.sock;

        location = /_ready {{
            return 204;
        }}
{write}{read}{auth_write}{auth_read}    }}
}}
"#,
        write = protected("write"),
        read = protected("read"),
        auth_write = auth("write", "events.write"),
        auth_read = auth("read", "events.read"),
    )
}

/// Checks the config, starts nginx on it and waits until it answers.
fn start_nginx(nginx: &Path, work: &WorkDir) -> Nginx {
    let conf = work.path("nginx.conf");
    let prefix = format!("{}/", work.0.display());
    let error_log = work.path("error.log").display().to_string();
    let args = [
        "-p",
        &prefix,
        "-c",
        conf.to_str().unwrap(),
        "-e",
        &error_log,
    ];
    let mut test_args = vec!["-t", "-q"];
    test_args.extend(args);
    external::run_ok(nginx, &test_args);
    let running = Nginx(
        Command::new(nginx)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path("nginx.out")).unwrap())
            .spawn()
            .expect("nginx starts"),
    );
    let socket = work.path("nginx.sock");
    let started = Instant::now();
    while !nginx_get(&socket, "/_ready", None).is_ok_and(|answer| answer.status == 204) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "nginx did not answer within 10 s:\n{}\n{}",
            work.tail("error.log"),
            work.tail("nginx.out")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    running
}

// ---- 4. The catalog is the configuration's ----

#[actix_web::test]
async fn a_stored_scope_no_route_names_any_more_stays_on_the_key_and_grants_only_itself() {
    let upstream = start_upstream();
    let db = TestDatabase::create().await;
    let url = upstream.url.clone();
    let configured = spawn_app_with(db.clone(), move |settings| {
        settings.gateway.routes = events_routes(&url);
    })
    .await;
    let org = configured.create_org("Catalog").await;
    let (id, key) = new_key(
        &configured,
        &org,
        json!({"scopes": ["events.read", "keys.read"]}),
    )
    .await;
    // Another instance whose configuration names no route: its catalog is keys.read and
    // keys.write.
    let bare = spawn_app_with(db, |settings| settings.gateway.routes = Vec::new()).await;
    let item = bare.key_item(&org.master_key, &id).await;
    assert_eq!(item["scopes"], json!(["events.read", "keys.read"]));
    let verified = bare.verify(&key).await;
    assert_eq!(verified.body["scopes"], json!(["events.read", "keys.read"]));
    assert_eq!(scopes_header(&verified), Some("events.read keys.read"));
    assert_eq!(
        verify_scope(&bare, &key, "scope=events.read").await.status,
        StatusCode::OK
    );
    assert_insufficient_scope(
        &verify_scope(&bare, &key, "scope=events.write").await,
        "events.write",
    );
    assert_eq!(bare.list_keys(&key).await.status, StatusCode::OK);
    // An update of something else keeps it.
    let renamed = patched(&bare, &org, &org.master_key, &id, json!({"name": "kept"})).await;
    assert_eq!(renamed["scopes"], json!(["events.read", "keys.read"]));

    // The built-ins are in every catalog; events.* is not in this one.
    for (scopes, accepted) in [
        (json!(["keys.read", "keys.write"]), true),
        (json!(["keys.*"]), true),
        (json!(["*"]), true),
        (json!(["events.read"]), false),
        (json!(["events.*"]), false),
    ] {
        let reply = bare
            .create_key_with(
                &org.master_key,
                &json!({"project_id": org.project_id, "type": "project", "name": "c",
                        "scopes": scopes}),
            )
            .await;
        if accepted {
            assert_eq!(reply.status, StatusCode::CREATED, "{scopes}: {reply:?}");
        } else {
            let entry = scopes[0].as_str().unwrap();
            assert_one_detail(&reply, "scopes[0]", Some(entry), &scopes.to_string());
        }
    }
}

// ---- 5. Settings ----

#[actix_web::test]
async fn a_wildcard_or_malformed_route_scope_stops_the_binary_with_code_2() {
    let db = TestDatabase::create().await;
    let dir = WorkDir::new("route-scopes");
    let route = |prefix: &str, extra: &str| {
        format!(
            "[[gateway.routes]]\nprefix = \"{prefix}\"\nupstream = \"http://127.0.0.1:9\"\n{extra}\n"
        )
    };
    let run = |toml: &str| {
        let file = dir.path(&format!("{}.toml", Uuid::new_v4().simple()));
        std::fs::write(&file, toml).unwrap();
        crate::helpers::binary()
            .arg("--config")
            .arg(&file)
            .arg("migrate")
            .env("DATABASE_URL", &db.url)
            .stdin(Stdio::null())
            .output()
            .expect("run the binary")
    };
    let cases = [
        (route("/api/v1/events", "scope = \"events.*\""), "gateway.routes[0].scope"),
        (route("/api/v1/events", "scope = \"*\""), "gateway.routes[0].scope"),
        (route("/api/v1/events", "scope = \"Events.write\""), "gateway.routes[0].scope"),
        (route("/api/v1/events", "scope = \"events\""), "gateway.routes[0].scope"),
        (route("/api/v1/events", "scope = \"\""), "gateway.routes[0].scope"),
        (
            route("/api/v1/events", "method_scopes = { GET = \"events.*\" }"),
            "gateway.routes[0].method_scopes.GET",
        ),
        (
            route(
                "/api/v1/events",
                "scope = \"events.write\"\nmethod_scopes = { POST = \"events.write\", GET = \"events read\" }",
            ),
            "gateway.routes[0].method_scopes.GET",
        ),
        (
            format!(
                "{}{}",
                route("/api/v1/events", "scope = \"events.write\""),
                route("/api/v1/exports", "scope = \"exports.*\"")
            ),
            "gateway.routes[1].scope",
        ),
    ];
    for (toml, setting) in cases {
        let refused = run(&toml);
        assert_eq!(refused.status.code(), Some(2), "{toml}\n{refused:?}");
        assert!(refused.stdout.is_empty(), "{refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains(&format!("invalid setting `{setting}`")),
            "{toml}\nstderr: {stderr}"
        );
    }
    // The same routes with plain scopes start.
    let accepted = run(&route(
        "/api/v1/events",
        "scope = \"events.write\"\nmethod_scopes = { GET = \"events.read\", POST = \"events.write\" }",
    ));
    assert!(accepted.status.success(), "{accepted:?}");
}

// ---- 6. PATCH /api/v1/keys/{id} ----

#[actix_web::test]
async fn patch_sets_each_field_and_answers_the_updated_list_item() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Updates").await;
    let (id, key) = new_key(&app, &org, json!({})).await;
    let mk = &org.master_key;

    let item = patched(&app, &org, mk, &id, json!({"name": "Renamed key"})).await;
    assert_eq!(item["name"], "Renamed key");
    assert_eq!(item["scopes"], json!(["*"]));

    let item = patched(
        &app,
        &org,
        mk,
        &id,
        json!({"scopes": ["keys.read", "events.write"]}),
    )
    .await;
    assert_eq!(item["scopes"], json!(["events.write", "keys.read"]));
    assert_eq!(item["name"], "Renamed key", "other fields stay");

    let item = patched(
        &app,
        &org,
        mk,
        &id,
        json!({"expires_at": "2030-06-30T12:00:00.123456+02:00"}),
    )
    .await;
    assert_eq!(item["expiresAt"], "2030-06-30T10:00:00.123Z");
    let verified = app.verify(&key).await;
    assert_eq!(verified.body["expires_at"], "2030-06-30T10:00:00.123Z");
    assert_eq!(
        verified.body["scopes"],
        json!(["events.write", "keys.read"])
    );
    let item = patched(&app, &org, mk, &id, json!({"expires_at": null})).await;
    assert_eq!(item["expiresAt"], Value::Null);

    let item = patched(&app, &org, mk, &id, json!({"enabled": false})).await;
    assert_eq!(item["enabled"], false);
    assert_unauthorized(&app.verify(&key).await, "key_disabled");
    let item = patched(&app, &org, mk, &id, json!({"enabled": true})).await;
    assert_eq!(item["enabled"], true);
    assert_eq!(app.verify(&key).await.status, StatusCode::OK);

    let item = patched(
        &app,
        &org,
        mk,
        &id,
        json!({"rate_limit": {"requests_per_second": 2.5, "burst": 7}}),
    )
    .await;
    assert_rate_limit(&item["rateLimit"], 2.5, 7);
    let item = patched(&app, &org, mk, &id, json!({"rate_limit": null})).await;
    assert_eq!(item["rateLimit"], Value::Null);
    for (per_second, burst) in [(1_000_000.0, 1_000_000), (0.001, 1), (1.0, 3)] {
        let item = patched(
            &app,
            &org,
            mk,
            &id,
            json!({"rate_limit": {"requests_per_second": per_second, "burst": burst}}),
        )
        .await;
        assert_rate_limit(&item["rateLimit"], per_second, burst);
    }

    // Everything at once; unknown fields are ignored.
    let expires = from_now(86_400);
    let item = patched(
        &app,
        &org,
        mk,
        &id,
        json!({"name": "All at once", "scopes": ["events.read"], "expires_at": rfc3339(expires),
               "enabled": false, "rate_limit": {"requests_per_second": 4, "burst": 8},
               "colour": "red", "type": "master", "prefix": "pk_zzzz"}),
    )
    .await;
    assert_eq!(item["name"], "All at once");
    assert_eq!(item["scopes"], json!(["events.read"]));
    assert_eq!(api_timestamp(&item["expiresAt"]), expires);
    assert_eq!(item["enabled"], false);
    assert_rate_limit(&item["rateLimit"], 4.0, 8);
    assert_eq!(item["type"], "project");
    assert_eq!(item["prefix"], &key[..7]);

    // A project key with keys.write updates a sibling, and itself.
    let (own_id, own_key) = new_key(&app, &org, json!({})).await;
    let item = patched(&app, &org, &own_key, &id, json!({"name": "By a sibling"})).await;
    assert_eq!(item["name"], "By a sibling");
    let item = patched(&app, &org, &own_key, &own_id, json!({"name": "Myself"})).await;
    assert_eq!(item["name"], "Myself");
}

#[actix_web::test]
async fn a_bad_patch_body_is_a_validation_error_and_changes_nothing() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Bad updates").await;
    let (id, _) = new_key(&app, &org, json!({})).await;
    let before_item = app.key_item(&org.master_key, &id).await;
    let before = app.row_counts().await;
    let past = rfc3339(Utc::now() - chrono::Duration::seconds(5));
    let too_far = rfc3339(Utc::now() + chrono::Duration::days(3653 + 2));
    let cases: Vec<(Value, &str)> = vec![
        (json!({"name": ""}), "name"),
        (json!({"name": "a".repeat(101)}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"scopes": ["events.bogus"]}), "scopes[0]"),
        (
            json!({"scopes": ["events.read", "events.read"]}),
            "scopes[1]",
        ),
        (json!({"scopes": []}), "scopes"),
        (json!({"scopes": "events.read"}), "scopes"),
        (json!({"expires_at": past}), "expires_at"),
        (json!({"expires_at": too_far}), "expires_at"),
        (json!({"expires_at": "next week"}), "expires_at"),
        (json!({"expires_at": 1893456000}), "expires_at"),
        (json!({"enabled": "false"}), "enabled"),
        (json!({"enabled": 0}), "enabled"),
    ];
    for (body, field) in cases {
        let reply = app.patch_key(&org.master_key, &id, &body).await;
        assert_one_detail(&reply, field, None, &body.to_string());
    }
    // rate_limit: r a number, 0 < r ≤ 1,000,000; b an integer, 1 ≤ b ≤ 1,000,000; both
    // required. The detail names rate_limit (or a field of it).
    for rate_limit in [
        json!({"requests_per_second": 0, "burst": 1}),
        json!({"requests_per_second": -1, "burst": 1}),
        json!({"requests_per_second": 1_000_000.5, "burst": 1}),
        json!({"requests_per_second": "1", "burst": 1}),
        json!({"requests_per_second": null, "burst": 1}),
        json!({"burst": 1}),
        json!({"requests_per_second": 1}),
        json!({"requests_per_second": 1, "burst": 0}),
        json!({"requests_per_second": 1, "burst": 1.5}),
        json!({"requests_per_second": 1, "burst": 1_000_001}),
        json!({"requests_per_second": 1, "burst": "2"}),
        json!({}),
        json!("fast"),
        json!(5),
        json!([1, 2]),
    ] {
        let body = json!({"rate_limit": rate_limit});
        let reply = app.patch_key(&org.master_key, &id, &body).await;
        let fields = assert_validation_error(&reply);
        assert!(
            fields.iter().all(|field| field.starts_with("rate_limit")),
            "{body}: {reply:?}"
        );
    }
    // Every problem is listed.
    let both = app
        .patch_key(&org.master_key, &id, &json!({"name": "", "enabled": "yes"}))
        .await;
    let mut fields = assert_validation_error(&both);
    fields.sort();
    assert_eq!(fields, ["enabled", "name"], "{both:?}");
    // Not an object, an empty object, only unknown fields, nulls where a value is needed.
    for body in [
        json!({"name": null}),
        json!({"enabled": null}),
        json!([]),
        json!("x"),
        json!(3),
        json!(null),
        json!({}),
        json!({"colour": "red"}),
    ] {
        let reply = app.patch_key(&org.master_key, &id, &body).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error");
    }
    let broken = app
        .raw(
            Method::PATCH,
            &format!("/api/v1/keys/{id}"),
            &[
                (
                    "Authorization",
                    format!("Bearer {}", org.master_key).as_bytes(),
                ),
                ("Content-Type", b"application/json"),
            ],
            b"{\"name\":".to_vec(),
        )
        .await;
    assert_error(&broken, StatusCode::BAD_REQUEST, "validation_error");

    assert_eq!(
        app.row_counts().await,
        before,
        "a refused PATCH changed something"
    );
    assert_eq!(app.key_item(&org.master_key, &id).await, before_item);
}

#[actix_web::test]
async fn a_change_writes_one_key_updated_event_with_its_changes_and_a_no_op_writes_none() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Updated").await;
    let master_id = master_key_id(&app, &org).await;
    let (id, key) = new_key(&app, &org, json!({})).await;
    let original_name = app.key_item(&org.master_key, &id).await["name"].clone();
    let mk = &org.master_key;

    // Nothing changes: 200, and no event.
    let events = event_count(&app).await;
    for body in [
        json!({"name": original_name}),
        json!({"scopes": ["*"]}),
        json!({"expires_at": null}),
        json!({"enabled": true}),
        json!({"rate_limit": null}),
        json!({"name": original_name, "scopes": ["*"], "expires_at": null, "enabled": true,
               "rate_limit": null}),
    ] {
        let item = patched(&app, &org, mk, &id, body.clone()).await;
        assert_eq!(item["scopes"], json!(["*"]), "{body}");
    }
    assert_eq!(
        event_count(&app).await,
        events,
        "a no-op PATCH wrote an event"
    );

    // The issue's own examples, in one PATCH: one event, both changes.
    let first = app
        .patch_key(
            mk,
            &id,
            &json!({"scopes": ["events.write"],
                    "rate_limit": {"requests_per_second": 1, "burst": 3}}),
        )
        .await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(event_count(&app).await, events + 1);
    let updated = updated_events(&app, &org).await;
    assert_eq!(updated.len(), 1, "{updated:#?}");
    let event = &updated[0];
    assert_exact_fields(event, EVENT_FIELDS);
    assert_eq!(event["action"], "key.updated");
    assert_eq!(event["target"], json!({"type": "key", "id": id}));
    assert_eq!(event["projectId"], org.project_id.as_str());
    assert_eq!(event["requestId"], first.body["request_id"]);
    assert_eq!(
        event["actor"],
        json!({"type": "master", "keyId": master_id, "prefix": &org.master_key[..7]})
    );
    let changes = &event["changes"];
    assert_exact_fields(changes, &["scopes", "rate_limit"]);
    assert_eq!(
        changes["scopes"],
        json!({"from": ["*"], "to": ["events.write"]})
    );
    assert_exact_fields(&changes["rate_limit"], &["from", "to"]);
    assert_eq!(changes["rate_limit"]["from"], Value::Null);
    assert_rate_limit(&changes["rate_limit"]["to"], 1.0, 3);

    // Only what changed is listed, with values as the list shows them.
    let second = app
        .patch_key(
            mk,
            &id,
            &json!({"name": "Renamed", "expires_at": "2030-01-01T01:00:00+01:00",
                    "enabled": false, "scopes": ["keys.read", "events.write"],
                    "rate_limit": {"requests_per_second": 1.0, "burst": 3}}),
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{second:?}");
    assert_eq!(event_count(&app).await, events + 2);
    let updated = updated_events(&app, &org).await;
    let changes = &updated[0]["changes"];
    assert_exact_fields(changes, &["name", "expires_at", "enabled", "scopes"]);
    assert_eq!(
        changes["name"],
        json!({"from": original_name, "to": "Renamed"})
    );
    assert_eq!(
        changes["expires_at"],
        json!({"from": null, "to": "2030-01-01T00:00:00.000Z"})
    );
    assert_eq!(changes["enabled"], json!({"from": true, "to": false}));
    assert_eq!(
        changes["scopes"],
        json!({"from": ["events.write"], "to": ["events.write", "keys.read"]})
    );
    assert_eq!(updated[0]["requestId"], second.body["request_id"]);

    // The same values spelt differently are no change: no event.
    let item = patched(
        &app,
        &org,
        mk,
        &id,
        json!({"name": "Renamed", "expires_at": "2030-01-01T00:00:00Z", "enabled": false,
               "scopes": ["keys.read", "events.write"],
               "rate_limit": {"requests_per_second": 1.0, "burst": 3}}),
    )
    .await;
    assert_eq!(item["expiresAt"], "2030-01-01T00:00:00.000Z");
    assert_eq!(event_count(&app).await, events + 2);

    // A project key's update names it as the actor.
    let (actor_id, actor_key) = new_key(&app, &org, json!({})).await;
    let third = app
        .patch_key(
            &actor_key,
            &id,
            &json!({"rate_limit": {"requests_per_second": 0.5, "burst": 2}}),
        )
        .await;
    assert_eq!(third.status, StatusCode::OK, "{third:?}");
    let updated = updated_events(&app, &org).await;
    assert_eq!(updated.len(), 3);
    assert_eq!(
        updated[0]["actor"],
        json!({"type": "project", "keyId": actor_id, "prefix": &actor_key[..7]})
    );
    let changes = &updated[0]["changes"];
    assert_exact_fields(changes, &["rate_limit"]);
    assert_rate_limit(&changes["rate_limit"]["from"], 1.0, 3);
    assert_rate_limit(&changes["rate_limit"]["to"], 0.5, 2);

    // Never key material, as served or as stored.
    let served = app
        .request(
            Method::GET,
            "/api/v1/audit-events?limit=100",
            Some(mk),
            None,
        )
        .await
        .text;
    let stored: String = app
        .db
        .client()
        .await
        .query_one(
            "SELECT string_agg(row_to_json(audit_events)::text, '') FROM audit_events",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    for secret in [&key, &actor_key, &org.master_key] {
        for text in [&served, &stored] {
            assert!(
                !text.contains(secret.as_str()),
                "a plaintext key in an event"
            );
            assert!(
                !text.contains(&hex_sha256(secret)),
                "a key hash in an event"
            );
        }
    }
}

#[actix_web::test]
async fn patch_permissions_are_those_of_revoke() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Who may").await;
    let other = app.create_org("Other").await;
    let mk = &org.master_key;
    let master_id = master_key_id(&app, &org).await;
    let second_project = app
        .request(
            Method::POST,
            "/api/v1/projects",
            Some(mk),
            Some(&json!({"name": "Second"})),
        )
        .await;
    assert_eq!(
        second_project.status,
        StatusCode::CREATED,
        "{second_project:?}"
    );
    let second_project = second_project.body["id"].as_str().unwrap().to_owned();
    let (elsewhere_id, _) = new_key_in(&app, &org, &second_project, json!({})).await;
    let (own_id, own_key) = new_key(&app, &org, json!({})).await;
    let (sibling_id, _) = new_key(&app, &org, json!({})).await;
    let (_, reader) = new_key(&app, &org, json!({"scopes": ["keys.read"]})).await;
    let (foreign_id, _) = new_key(&app, &other, json!({})).await;
    let (revoked_id, _) = new_key(&app, &org, json!({})).await;
    assert_eq!(app.revoke_key(mk, &revoked_id).await.status, StatusCode::OK);
    let expires = from_now(2);
    let (expired_id, _) = new_key(&app, &org, json!({"expires_at": rfc3339(expires)})).await;
    sleep_past(expires).await;
    let unknown = Uuid::new_v4().to_string();
    let body = json!({"name": "Changed"});

    let before = app.row_counts().await;
    // The master key: not another organization's keys, not a master key.
    for id in [&foreign_id, &unknown] {
        assert_error(
            &app.patch_key(mk, id, &body).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    assert_error(
        &app.patch_key(mk, &master_id, &body).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    let bad_id = app.patch_key(mk, "not-a-uuid", &body).await;
    assert_one_detail(&bad_id, "id", None, "not-a-uuid");
    // A project key: only its own project's keys; a master key is out of its scope.
    for id in [&elsewhere_id, &foreign_id, &master_id, &unknown] {
        assert_error(
            &app.patch_key(&own_key, id, &body).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    // Without keys.write, not even a sibling.
    assert_insufficient_scope(
        &app.patch_key(&reader, &sibling_id, &body).await,
        "keys.write",
    );
    // Revoked or expired keys are not updated, by anyone.
    for token in [mk, &own_key] {
        for id in [&revoked_id, &expired_id] {
            assert_error(
                &app.patch_key(token, id, &body).await,
                StatusCode::CONFLICT,
                "conflict",
            );
        }
    }
    assert_eq!(
        app.row_counts().await,
        before,
        "a refused PATCH changed something"
    );

    // What is allowed.
    patched(&app, &org, mk, &elsewhere_id, body.clone()).await;
    patched(&app, &org, &own_key, &sibling_id, body.clone()).await;
    patched(&app, &org, &own_key, &own_id, json!({"name": "Itself"})).await;
}

// ---- 7. No escalation ----

/// A project key holding events.read, keys.read and keys.write, expiring in a day, limited
/// to 5/s and a burst of 10 (by the master key); returns (id, key, its expiry).
async fn restricted_caller(app: &TestApp, org: &TestOrg) -> (String, String, DateTime<Utc>) {
    let expires = from_now(86_400);
    let (id, key) = new_key(
        app,
        org,
        json!({"scopes": ["events.read", "keys.read", "keys.write"],
               "expires_at": rfc3339(expires)}),
    )
    .await;
    patched(
        app,
        org,
        &org.master_key,
        &id,
        json!({"rate_limit": {"requests_per_second": 5, "burst": 10}}),
    )
    .await;
    (id, key, expires)
}

/// The item without lastUsedAt (which moves when the key itself is in use).
fn without_last_used(mut item: Value) -> Value {
    item.as_object_mut().unwrap().remove("lastUsedAt");
    item
}

#[actix_web::test]
async fn every_escalation_by_a_project_key_is_refused_per_field_and_changes_nothing() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |settings| default_limits(settings, 100.0, 200)).await;
    let org = app.create_org("Escalation").await;
    let mk = org.master_key.clone();
    let (caller_id, caller, caller_expires) = restricted_caller(&app, &org).await;
    let later_than_caller = rfc3339(caller_expires + chrono::Duration::hours(1));
    // An expiring, limited target.
    let (limited_id, _) = new_key(
        &app,
        &org,
        json!({"scopes": ["events.read"], "expires_at": rfc3339(from_now(7200))}),
    )
    .await;
    limit_patched(&app, &org, &mk, &limited_id, 2.0, 4).await;
    // A disabled target, and one that never expires.
    let (disabled_id, _) = new_key(&app, &org, json!({"scopes": ["events.read"]})).await;
    patched(&app, &org, &mk, &disabled_id, json!({"enabled": false})).await;
    let (forever_id, _) = new_key(&app, &org, json!({"scopes": ["events.read"]})).await;

    let (limited_id, disabled_id, forever_id, caller_id) = (
        limited_id.as_str(),
        disabled_id.as_str(),
        forever_id.as_str(),
        caller_id.as_str(),
    );
    let attempts: Vec<(&str, Value, Vec<&str>)> = vec![
        // Scopes the caller's own don't cover.
        (
            limited_id,
            json!({"scopes": ["events.write"]}),
            vec!["scopes"],
        ),
        (limited_id, json!({"scopes": ["*"]}), vec!["scopes"]),
        (limited_id, json!({"scopes": ["events.*"]}), vec!["scopes"]),
        // keys.read and keys.write don't make keys.*.
        (limited_id, json!({"scopes": ["keys.*"]}), vec!["scopes"]),
        (
            limited_id,
            json!({"scopes": ["events.read", "internal.read"]}),
            vec!["scopes"],
        ),
        // Expiry: never cleared, never past the caller's own.
        (limited_id, json!({"expires_at": null}), vec!["expires_at"]),
        (
            limited_id,
            json!({"expires_at": later_than_caller}),
            vec!["expires_at"],
        ),
        (
            forever_id,
            json!({"expires_at": later_than_caller}),
            vec!["expires_at"],
        ),
        // Never enabling.
        (disabled_id, json!({"enabled": true}), vec!["enabled"]),
        (
            disabled_id,
            json!({"enabled": true, "name": "Back on"}),
            vec!["enabled"],
        ),
        // Limits above the caller's own (5/s, 10); null is the target's default (100, 200).
        (
            limited_id,
            json!({"rate_limit": {"requests_per_second": 6, "burst": 4}}),
            vec!["rate_limit"],
        ),
        (
            limited_id,
            json!({"rate_limit": {"requests_per_second": 1, "burst": 11}}),
            vec!["rate_limit"],
        ),
        (limited_id, json!({"rate_limit": null}), vec!["rate_limit"]),
        // Several at once: one detail each, and the allowed name change isn't made either.
        (
            limited_id,
            json!({"name": "Sneaky", "scopes": ["*"], "expires_at": null,
                   "rate_limit": {"requests_per_second": 500, "burst": 1000}}),
            vec!["scopes", "expires_at", "rate_limit"],
        ),
        (
            disabled_id,
            json!({"enabled": true, "scopes": ["keys.*"], "expires_at": later_than_caller,
                   "rate_limit": {"requests_per_second": 6, "burst": 10}}),
            vec!["enabled", "scopes", "expires_at", "rate_limit"],
        ),
        // Itself included.
        (caller_id, json!({"scopes": ["*"]}), vec!["scopes"]),
        (caller_id, json!({"expires_at": null}), vec!["expires_at"]),
        (
            caller_id,
            json!({"expires_at": later_than_caller}),
            vec!["expires_at"],
        ),
        (
            caller_id,
            json!({"rate_limit": {"requests_per_second": 6, "burst": 10}}),
            vec!["rate_limit"],
        ),
        (caller_id, json!({"rate_limit": null}), vec!["rate_limit"]),
    ];
    for (target, body, fields) in attempts {
        let before_item = without_last_used(app.key_item(&mk, target).await);
        let before_events = event_count(&app).await;
        let reply = app.patch_key(&caller, target, &body).await;
        let case = format!("{body} on {target}");
        assert_refused_fields(&reply, &fields, &case);
        assert_eq!(
            without_last_used(app.key_item(&mk, target).await),
            before_item,
            "{case} changed the key"
        );
        assert_eq!(
            event_count(&app).await,
            before_events,
            "{case} wrote an event"
        );
    }
    // The caller is still what the master key made it.
    let verified = app.verify(&caller).await;
    assert_eq!(
        verified.body["scopes"],
        json!(["events.read", "keys.read", "keys.write"])
    );
    assert_eq!(verified.body["expires_at"], rfc3339(caller_expires));
}

#[actix_web::test]
async fn a_project_key_may_restrict_and_grant_within_what_it_holds_itself() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |settings| default_limits(settings, 100.0, 200)).await;
    let org = app.create_org("Within").await;
    let mk = org.master_key.clone();
    let (_, caller, caller_expires) = restricted_caller(&app, &org).await;
    let target_expires = from_now(7200);
    let (target_id, _) = new_key(
        &app,
        &org,
        json!({"scopes": ["events.read", "keys.read"],
               "expires_at": rfc3339(target_expires)}),
    )
    .await;
    limit_patched(&app, &org, &mk, &target_id, 2.0, 4).await;

    // An expiry moved earlier.
    let earlier = target_expires - chrono::Duration::hours(1);
    let item = patched(
        &app,
        &org,
        &caller,
        &target_id,
        json!({"expires_at": rfc3339(earlier)}),
    )
    .await;
    assert_eq!(api_timestamp(&item["expiresAt"]), earlier);
    // A key without expiry given one no later than the caller's.
    let (forever_id, _) = new_key(&app, &org, json!({"scopes": ["events.read"]})).await;
    let before_caller = caller_expires - chrono::Duration::hours(1);
    let item = patched(
        &app,
        &org,
        &caller,
        &forever_id,
        json!({"expires_at": rfc3339(before_caller)}),
    )
    .await;
    assert_eq!(api_timestamp(&item["expiresAt"]), before_caller);
    // Scopes narrowed, or set to any the caller's own cover.
    let item = patched(
        &app,
        &org,
        &caller,
        &target_id,
        json!({"scopes": ["keys.read"]}),
    )
    .await;
    assert_eq!(item["scopes"], json!(["keys.read"]));
    let item = patched(
        &app,
        &org,
        &caller,
        &target_id,
        json!({"scopes": ["keys.write", "keys.read", "events.read"]}),
    )
    .await;
    assert_eq!(
        item["scopes"],
        json!(["events.read", "keys.read", "keys.write"])
    );
    // Limits up to the caller's own, and lower.
    let item = limit_patched(&app, &org, &caller, &target_id, 5.0, 10).await;
    assert_rate_limit(&item["rateLimit"], 5.0, 10);
    let item = limit_patched(&app, &org, &caller, &target_id, 0.5, 1).await;
    assert_rate_limit(&item["rateLimit"], 0.5, 1);
    // Disabled.
    let item = patched(&app, &org, &caller, &target_id, json!({"enabled": false})).await;
    assert_eq!(item["enabled"], false);

    // A wildcard covers every action of its resource, and itself.
    let (_, events_admin) =
        new_key(&app, &org, json!({"scopes": ["events.*", "keys.write"]})).await;
    let (other_id, _) = new_key(&app, &org, json!({"scopes": ["keys.write"]})).await;
    for scopes in [json!(["events.read", "events.write"]), json!(["events.*"])] {
        let item = patched(
            &app,
            &org,
            &events_admin,
            &other_id,
            json!({"scopes": scopes}),
        )
        .await;
        assert_eq!(item["scopes"], scopes);
    }

    // Without a per-key limit a caller's own limit is the default (100/s, 200).
    let (_, unlimited) = new_key(&app, &org, json!({})).await;
    let (limited_id, _) = new_key(&app, &org, json!({})).await;
    limit_patched(&app, &org, &mk, &limited_id, 1.0, 2).await;
    let item = limit_patched(&app, &org, &unlimited, &limited_id, 100.0, 200).await;
    assert_rate_limit(&item["rateLimit"], 100.0, 200);
    assert_limits_refused(&app, &unlimited, &limited_id, &[(100.5, 200), (100.0, 201)]).await;
    let item = patched(
        &app,
        &org,
        &unlimited,
        &limited_id,
        json!({"rate_limit": null}),
    )
    .await;
    assert_eq!(item["rateLimit"], Value::Null);
    // A caller whose own limit is above the default may set null (the default).
    let (generous_id, generous) = new_key(&app, &org, json!({})).await;
    limit_patched(&app, &org, &mk, &generous_id, 200.0, 400).await;
    limit_patched(&app, &org, &mk, &limited_id, 1.0, 2).await;
    let item = patched(
        &app,
        &org,
        &generous,
        &limited_id,
        json!({"rate_limit": null}),
    )
    .await;
    assert_eq!(item["rateLimit"], Value::Null);
}

#[actix_web::test]
async fn a_project_keys_own_limit_is_its_project_override_when_it_has_no_per_key_limit() {
    let upstream = start_upstream();
    let db = TestDatabase::create().await;
    // The project id is needed in the settings: made on a plain instance first.
    let setup = spawn_app_with(db.clone(), |_| {}).await;
    let org = setup.create_org("Override").await;
    let project = ProjectId::parse(&org.project_id).unwrap();
    let app = spawn_app_with(
        db,
        overridden_limits(&upstream.url, project, (100.0, 200), (3.0, 6)),
    )
    .await;
    let mk = org.master_key.clone();
    let (_, caller) = new_key(&app, &org, json!({})).await;
    let (target_id, _) = new_key(&app, &org, json!({})).await;
    limit_patched(&app, &org, &mk, &target_id, 1.0, 2).await;
    assert_limits_refused(&app, &caller, &target_id, &[(4.0, 6), (3.0, 7)]).await;
    let item = limit_patched(&app, &org, &caller, &target_id, 3.0, 6).await;
    assert_rate_limit(&item["rateLimit"], 3.0, 6);
    // null: the target's default, the override (3/s, 6), not above the caller's.
    let item = patched(&app, &org, &caller, &target_id, json!({"rate_limit": null})).await;
    assert_eq!(item["rateLimit"], Value::Null);
    // A caller with a per-key limit under the override may not set null.
    let (small_id, small) = new_key(&app, &org, json!({})).await;
    limit_patched(&app, &org, &mk, &small_id, 1.0, 2).await;
    limit_patched(&app, &org, &mk, &target_id, 1.0, 2).await;
    let reply = app
        .patch_key(&small, &target_id, &json!({"rate_limit": null}))
        .await;
    assert_refused_fields(&reply, &["rate_limit"], "null above the caller's own");
}

// ---- 8. Disabled keys ----

#[actix_web::test]
async fn a_disabled_key_is_refused_everywhere_still_lists_can_be_revoked_or_rolled_and_enabled() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Disabled").await;
    let mk = org.master_key.clone();
    let (id, key) = new_key(&app, &org, json!({})).await;
    let (sibling_id, sibling) = new_key(&app, &org, json!({})).await;
    // In use, and cached, before.
    assert_eq!(app.verify(&key).await.status, StatusCode::OK);
    let before = app
        .request(Method::GET, "/api/v1/events", Some(&key), None)
        .await;
    assert_eq!(before.status, StatusCode::CREATED, "{before:?}");

    let item = patched(&app, &org, &mk, &id, json!({"enabled": false})).await;
    assert_eq!(item["enabled"], false);
    let hits = upstream.hits.load(Ordering::SeqCst);
    for (method, path) in [
        (Method::GET, "/api/v1/auth/verify".to_owned()),
        (
            Method::GET,
            "/api/v1/auth/verify?scope=events.read".to_owned(),
        ),
        (Method::GET, "/api/v1/keys".to_owned()),
        (Method::DELETE, format!("/api/v1/keys/{sibling_id}")),
        (Method::POST, format!("/api/v1/keys/{id}/roll")),
        (Method::GET, "/api/v1/events".to_owned()),
        (Method::POST, "/api/v1/events".to_owned()),
        (Method::GET, "/api/v1/open".to_owned()),
    ] {
        let reply = app.request(method.clone(), &path, Some(&key), None).await;
        assert_unauthorized(&reply, "key_disabled");
    }
    let self_update = app.patch_key(&key, &id, &json!({"enabled": true})).await;
    assert_unauthorized(&self_update, "key_disabled");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), hits);
    // It still lists, neither revoked nor expired; its sibling is untouched.
    let item = app.key_item(&mk, &id).await;
    assert_eq!(item["enabled"], false);
    assert_eq!(item["revokedAt"], Value::Null);
    assert_eq!(item["expiresAt"], Value::Null);
    assert_eq!(app.verify(&sibling).await.status, StatusCode::OK);
    assert_eq!(app.key_item(&sibling, &id).await["enabled"], false);

    // Rolled: the new key is disabled too, until the master key enables it.
    let rolled = roll(&app, &mk, &id).await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{rolled:?}");
    let new_key_text = rolled.body["key"].as_str().unwrap().to_owned();
    assert_unauthorized(&app.verify(&new_key_text).await, "key_disabled");
    assert_unauthorized(&app.verify(&key).await, "key_disabled");
    let new_item = app
        .key_items(&mk)
        .await
        .into_iter()
        .find(|item| item["prefix"] == new_key_text[..7] && item["id"] != id.as_str())
        .expect("the rolled key is listed");
    assert_eq!(new_item["enabled"], false);
    let new_id = new_item["id"].as_str().unwrap().to_owned();
    let item = patched(&app, &org, &mk, &new_id, json!({"enabled": true})).await;
    assert_eq!(item["enabled"], true);
    let verified = app.verify(&new_key_text).await;
    assert_eq!(verified.status, StatusCode::OK, "{verified:?}");
    let forwarded = app
        .request(Method::GET, "/api/v1/events", Some(&new_key_text), None)
        .await;
    assert_eq!(forwarded.status, StatusCode::CREATED, "{forwarded:?}");
    // The old one too, during its overlap, once enabled.
    patched(&app, &org, &mk, &id, json!({"enabled": true})).await;
    assert_eq!(app.verify(&key).await.status, StatusCode::OK);

    // Revoked while disabled: revoked from then on.
    let (doomed_id, doomed) = new_key(&app, &org, json!({})).await;
    patched(&app, &org, &mk, &doomed_id, json!({"enabled": false})).await;
    let revoked = app.revoke_key(&mk, &doomed_id).await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    assert_eq!(revoked.body["revoked"], true);
    assert_unauthorized(&app.verify(&doomed).await, "key_revoked");
    let item = app.key_item(&mk, &doomed_id).await;
    api_timestamp(&item["revokedAt"]);
    assert_eq!(item["enabled"], false);
}

// ---- 9. Every instance, as soon as PATCH answers ----

#[actix_web::test]
async fn a_patch_through_a_is_enforced_by_b_which_had_the_key_cached_right_after_it_answers() {
    let upstream = start_upstream();
    let url = upstream.url.clone();
    let (a, b) = spawn_isolated_pair(move |settings| {
        settings.gateway.routes = events_routes(&url);
        default_limits(settings, 100.0, 200);
    })
    .await;
    let org = a.create_org("Fleet").await;
    let mk = org.master_key.clone();
    let (id, key) = new_key(&a, &org, json!({})).await;
    // B has the key cached as valid (the second use is a hit), on verify and the gateway.
    for _ in 0..2 {
        assert_eq!(b.verify(&key).await.status, StatusCode::OK);
    }
    let used = b
        .request(Method::GET, "/api/v1/events", Some(&key), None)
        .await;
    assert_eq!(used.status, StatusCode::CREATED, "{used:?}");

    // Scopes: several rounds, each checked on B by the very next request.
    for round in 0..5 {
        patched(&a, &org, &mk, &id, json!({"scopes": ["events.write"]})).await;
        let refused = b
            .request(Method::GET, "/api/v1/events", Some(&key), None)
            .await;
        assert_insufficient_scope(&refused, "events.read");
        let verified = b.verify(&key).await;
        assert_eq!(
            verified.body["scopes"],
            json!(["events.write"]),
            "round {round}"
        );
        assert_eq!(scopes_header(&verified), Some("events.write"));
        let allowed = b
            .request(Method::POST, "/api/v1/events", Some(&key), None)
            .await;
        assert_eq!(
            allowed.status,
            StatusCode::CREATED,
            "round {round}: {allowed:?}"
        );

        patched(&a, &org, &mk, &id, json!({"scopes": ["events.read"]})).await;
        let refused = b
            .request(Method::POST, "/api/v1/events", Some(&key), None)
            .await;
        assert_insufficient_scope(&refused, "events.write");
        assert_insufficient_scope(
            &verify_scope(&b, &key, "scope=events.write").await,
            "events.write",
        );
        let allowed = b
            .request(Method::GET, "/api/v1/events", Some(&key), None)
            .await;
        assert_eq!(
            allowed.status,
            StatusCode::CREATED,
            "round {round}: {allowed:?}"
        );
    }

    // Disabled, then enabled again.
    patched(&a, &org, &mk, &id, json!({"enabled": false})).await;
    assert_unauthorized(&b.verify(&key).await, "key_disabled");
    assert_unauthorized(
        &b.request(Method::GET, "/api/v1/events", Some(&key), None)
            .await,
        "key_disabled",
    );
    patched(&a, &org, &mk, &id, json!({"enabled": true})).await;
    assert_eq!(b.verify(&key).await.status, StatusCode::OK);

    // A lowered limit: B's bucket for the key (it holds most of 200) holds 1 at once.
    limit_patched(&a, &org, &mk, &id, 0.01, 1).await;
    let first = b
        .request(Method::GET, "/api/v1/events", Some(&key), None)
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    assert_eq!(ratelimit_limit(&first), Some("1"));
    let second = b
        .request(Method::GET, "/api/v1/events", Some(&key), None)
        .await;
    assert_error(&second, StatusCode::TOO_MANY_REQUESTS, "rate_limited");

    // An expiry (input must be in the future: a second or two ahead), learnt by B at once.
    let expires = from_now(2);
    let item = patched(&a, &org, &mk, &id, json!({"expires_at": rfc3339(expires)})).await;
    let on_b = b.verify(&key).await;
    if Utc::now() < expires {
        assert_eq!(on_b.status, StatusCode::OK, "{on_b:?}");
        assert_eq!(on_b.body["expires_at"], item["expiresAt"]);
    }
    sleep_past(expires).await;
    assert_unauthorized(&b.verify(&key).await, "key_expired");
    assert_unauthorized(
        &b.request(Method::GET, "/api/v1/events", Some(&key), None)
            .await,
        "key_expired",
    );
}

// ---- 10. Per-key rate limits ----

#[actix_web::test]
async fn a_per_key_limit_overrides_default_and_project_override_and_lowering_it_applies_at_once() {
    let upstream = start_upstream();
    let db = TestDatabase::create().await;
    let setup = spawn_app_with(db.clone(), |_| {}).await;
    let overridden = setup.create_org("Overridden").await;
    let plain = setup.create_org("Plain").await;
    let project = ProjectId::parse(&overridden.project_id).unwrap();
    let app = spawn_app_with(
        db,
        overridden_limits(&upstream.url, project, (1000.0, 1000), (0.01, 1)),
    )
    .await;
    let get = |key: String| {
        let app = &app;
        async move {
            app.request(Method::GET, "/api/v1/events", Some(&key), None)
                .await
        }
    };

    // Under a much higher default: 3 then 429.
    let (limited_id, limited) = new_key(&app, &plain, json!({})).await;
    limit_patched(&app, &plain, &plain.master_key, &limited_id, 1.0, 3).await;
    for remaining in ["2", "1", "0"] {
        let reply = get(limited.clone()).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        assert_eq!(ratelimit_limit(&reply), Some("3"));
        assert_eq!(reply.headers.get("ratelimit-remaining").unwrap(), remaining);
    }
    let refused = get(limited.clone()).await;
    assert_error(&refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(refused.headers.get("retry-after").is_some());
    // Its siblings keep the default.
    let (_, sibling) = new_key(&app, &plain, json!({})).await;
    for _ in 0..10 {
        let reply = get(sibling.clone()).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        assert_eq!(ratelimit_limit(&reply), Some("1000"));
    }

    // Over a project override (burst 1), in both directions.
    let (roomy_id, roomy) = new_key(&app, &overridden, json!({})).await;
    limit_patched(
        &app,
        &overridden,
        &overridden.master_key,
        &roomy_id,
        0.01,
        3,
    )
    .await;
    let mut admitted = 0;
    for _ in 0..6 {
        let reply = get(roomy.clone()).await;
        assert_eq!(ratelimit_limit(&reply), Some("3"), "{reply:?}");
        admitted += usize::from(reply.status.is_success());
    }
    assert_eq!(admitted, 3, "the key's burst, not the override's");
    let (_, overridden_key) = new_key(&app, &overridden, json!({})).await;
    let mut admitted = 0;
    for _ in 0..4 {
        let reply = get(overridden_key.clone()).await;
        assert_eq!(ratelimit_limit(&reply), Some("1"), "{reply:?}");
        admitted += usize::from(reply.status.is_success());
    }
    assert_eq!(
        admitted, 1,
        "a key without its own limit keeps the override"
    );

    // Lowering a burst: the bucket never holds more than the new one.
    let (lowered_id, lowered) = new_key(&app, &plain, json!({})).await;
    limit_patched(&app, &plain, &plain.master_key, &lowered_id, 0.01, 50).await;
    for _ in 0..5 {
        let reply = get(lowered.clone()).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        assert_eq!(ratelimit_limit(&reply), Some("50"));
    }
    limit_patched(&app, &plain, &plain.master_key, &lowered_id, 0.01, 2).await;
    for remaining in ["1", "0"] {
        let reply = get(lowered.clone()).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
        assert_eq!(ratelimit_limit(&reply), Some("2"));
        assert_eq!(reply.headers.get("ratelimit-remaining").unwrap(), remaining);
    }
    assert_error(
        &get(lowered.clone()).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    // Back to the default.
    patched(
        &app,
        &plain,
        &plain.master_key,
        &lowered_id,
        json!({"rate_limit": null}),
    )
    .await;
    let reply = get(lowered.clone()).await;
    assert_eq!(ratelimit_limit(&reply), Some("1000"), "{reply:?}");
}

#[actix_web::test]
async fn a_per_key_limit_counts_once_for_two_instances_sharing_redis() {
    let upstream = start_upstream();
    let db = TestDatabase::create().await;
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("logstitch:test:{}:", Uuid::new_v4().simple());
    let member = |settings: &mut Settings| {
        settings.gateway.routes = events_routes(&upstream.url);
        default_limits(settings, 100.0, 200);
        settings.rate_limit.store = RateLimitStore::Redis;
        settings.rate_limit.redis_url = SecretString::from(redis_url.clone());
        settings.rate_limit.redis_key_prefix = prefix.clone();
        // What is measured is the shared count, not the fallback of a loaded box.
        settings.rate_limit.redis_timeout = Duration::from_secs(2);
    };
    let a = spawn_isolated_app_with(db.clone(), &member).await;
    let b = spawn_isolated_app_with(db, &member).await;
    let org = a.create_org("Shared").await;
    let (id, key) = new_key(&a, &org, json!({})).await;
    for app in [&*a, &*b] {
        assert_eq!(app.verify(&key).await.status, StatusCode::OK);
    }
    limit_patched(&a, &org, &org.master_key, &id, 0.01, 4).await;
    let mut admitted = 0;
    for turn in 0..12 {
        let app: &TestApp = if turn % 2 == 0 { &a } else { &b };
        let reply = app
            .request(Method::GET, "/api/v1/events", Some(&key), None)
            .await;
        assert_eq!(ratelimit_limit(&reply), Some("4"), "turn {turn}: {reply:?}");
        match reply.status {
            StatusCode::CREATED => admitted += 1,
            _ => assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        }
    }
    assert_eq!(admitted, 4, "the key's burst, once for the fleet");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 4);
}

/// Any rate above 0 is a valid limit of a key's own. A vanishingly slow one (its next token
/// due in millions of years) must still be counted by Redis like any other — not read as a
/// Redis outage, which under `on_redis_error = "deny"` would refuse every other tenant's key.
#[actix_web::test]
async fn a_vanishingly_slow_key_limit_is_counted_in_redis_without_tripping_an_outage() {
    let upstream = start_upstream();
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("logstitch:test:{}:", Uuid::new_v4().simple());
    let app = spawn_isolated_app_with(TestDatabase::create().await, &|settings: &mut Settings| {
        settings.gateway.routes = events_routes(&upstream.url);
        default_limits(settings, 100.0, 200);
        settings.rate_limit.store = RateLimitStore::Redis;
        settings.rate_limit.redis_url = SecretString::from(redis_url.clone());
        settings.rate_limit.redis_key_prefix = prefix.clone();
        settings.rate_limit.redis_timeout = Duration::from_secs(2);
        settings.rate_limit.on_redis_error = OnRedisError::Deny;
    })
    .await;
    let org = app.create_org("Slow").await;
    let (slow_id, slow) = new_key(&app, &org, json!({})).await;
    let (_, other) = new_key(&app, &org, json!({})).await;
    limit_patched(&app, &org, &org.master_key, &slow_id, 1e-15, 1).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let reply = app
            .request(Method::GET, "/api/v1/events", Some(&slow), None)
            .await;
        statuses.push(reply.status.as_u16());
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after: u64 = reply
                .headers
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.parse().ok())
                .expect("a 429 says when, in whole seconds");
            assert!(retry_after <= 31_536_000, "at most a year: {retry_after}");
        }
    }
    assert_eq!(
        statuses,
        [201, 429, 429, 429, 429, 429],
        "one token, then refusals"
    );
    let reply = app
        .request(Method::GET, "/api/v1/events", Some(&other), None)
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    assert_eq!(app.metric("logstitch_rate_limit_redis_up").await, 1.0);
}

// ---- From the attacker review ----

/// A roll hands the target's powers to a new key the caller receives: a project key with
/// `keys.write` may roll only a key within its own scopes, expiry and limit — rolling a broader
/// sibling would be an escalation by another name. Itself (and narrower keys) it may roll.
#[actix_web::test]
async fn a_project_key_may_not_roll_a_key_broader_than_itself() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Roll up").await;
    let expires = rfc3339(from_now(3600));
    let (_, writer) = new_key(
        &app,
        &org,
        json!({"scopes": ["keys.read", "keys.write"], "expires_at": expires}),
    )
    .await;
    let (broad_id, _) = new_key(&app, &org, json!({})).await;
    let keys_before = app.key_items(&org.master_key).await.len();
    let refused = roll(&app, &writer, &broad_id).await;
    assert_error(&refused, StatusCode::FORBIDDEN, "forbidden");
    let fields: Vec<&str> = refused.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|detail| detail["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["scopes", "expires_at"], "{refused:?}");
    assert_eq!(
        app.key_items(&org.master_key).await.len(),
        keys_before,
        "nothing made"
    );
    let (narrow_id, _) = new_key(
        &app,
        &org,
        json!({"scopes": ["keys.read"], "expires_at": rfc3339(from_now(600))}),
    )
    .await;
    assert_eq!(
        roll(&app, &writer, &narrow_id).await.status,
        StatusCode::CREATED
    );
}

/// Sends a request whose body arrives in two parts, running `meanwhile` after the head (the
/// request has authenticated by then) and before the rest of the body.
async fn with_slow_body<F: std::future::Future<Output = ()>>(
    app: &TestApp,
    head: &str,
    body: &str,
    meanwhile: F,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let request = format!(
        "{head}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..1]).await.unwrap();
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    meanwhile.await;
    stream.write_all(&body.as_bytes()[1..]).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status: u16 = text[9..12].parse().expect("a status line");
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str(body).ok())
        .unwrap_or(Value::Null);
    (status, json)
}

/// The caller is read again inside the change's transaction: a key revoked, or narrowed, after
/// its request authenticated (its body still arriving) can't finish the change with the
/// powers it had.
#[actix_web::test]
async fn a_caller_revoked_or_narrowed_mid_request_cannot_finish_its_change() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Mid-request").await;
    let (leak_id, leak) = new_key(&app, &org, json!({})).await;
    let (victim_id, _) = new_key(&app, &org, json!({})).await;
    let head = format!(
        "POST /api/v1/keys/{victim_id}/roll HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {leak}"
    );
    let (status, body) = with_slow_body(&app, &head, r#"{"overlap_seconds": 0}"#, async {
        assert_eq!(
            app.revoke_key(&org.master_key, &leak_id).await.status,
            StatusCode::OK
        );
    })
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("key_revoked"))
    );
    assert_eq!(
        app.key_item(&org.master_key, &victim_id).await["revokedAt"],
        Value::Null
    );

    let (self_id, own) = new_key(&app, &org, json!({})).await;
    let head =
        format!("PATCH /api/v1/keys/{self_id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {own}");
    let (status, body) = with_slow_body(&app, &head, r#"{"scopes": ["*"]}"#, async {
        patched(
            &app,
            &org,
            &org.master_key,
            &self_id,
            json!({"scopes": ["keys.write", "events.write"]}),
        )
        .await;
    })
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert_eq!(
        app.key_item(&org.master_key, &self_id).await["scopes"],
        json!(["events.write", "keys.write"]),
        "the master's restriction stands"
    );
}

/// A route's method scopes are matched whatever the client's spelling of the method, and a
/// HEAD needs what GET needs: `get` can't slip past `GET = "events.read"`.
#[actix_web::test]
async fn method_scopes_hold_whatever_the_method_spelling_and_for_head() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Spelling").await;
    let (_, writer) = new_key(&app, &org, json!({"scopes": ["events.write"]})).await;
    for method in ["get", "Get", "HEAD"] {
        let reply = app
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                "/api/v1/events/x",
                Some(&writer),
                None,
            )
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{method}: {reply:?}");
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

/// Verify refuses any parameter but `scope`, so a misspelt one fails loudly instead of
/// letting every key through; an expiry written as a leap second is refused.
#[actix_web::test]
async fn verify_refuses_unknown_parameters_and_expiries_refuse_leap_seconds() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Strict").await;
    let (_, writer) = new_key(&app, &org, json!({"scopes": ["events.write"]})).await;
    for query in [
        "Scope=events.read",
        "scopes=events.read",
        "scope%5B%5D=events.read",
    ] {
        let reply = verify_scope(&app, &writer, query).await;
        assert_error(&reply, StatusCode::BAD_REQUEST, "validation_error");
    }
    let created = app
        .create_key_with(
            &org.master_key,
            &json!({"project_id": org.project_id, "type": "project", "name": "leap",
                    "expires_at": "2030-01-14T23:59:60.999Z"}),
        )
        .await;
    assert_error(&created, StatusCode::BAD_REQUEST, "validation_error");
}

// ---- 11. Roll ----

#[actix_web::test]
async fn a_roll_copies_scopes_enabled_state_and_rate_limit_to_the_new_key() {
    let upstream = start_upstream();
    let app = scoped_gateway(&upstream, |_| {}).await;
    let org = app.create_org("Roll").await;
    let mk = org.master_key.clone();
    let (id, _) = new_key(
        &app,
        &org,
        json!({"scopes": ["events.write", "keys.read", "keys.write"]}),
    )
    .await;
    let old = limit_patched(&app, &org, &mk, &id, 0.01, 5).await;
    let rolled = roll(&app, &mk, &id).await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{rolled:?}");
    let new_key_text = rolled.body["key"].as_str().unwrap().to_owned();
    let verified = app.verify(&new_key_text).await;
    assert_eq!(verified.status, StatusCode::OK, "{verified:?}");
    assert_eq!(
        verified.body["scopes"],
        json!(["events.write", "keys.read", "keys.write"])
    );
    let new_id = verified.body["key_id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    let new_item = app.key_item(&mk, &new_id).await;
    for field in ["scopes", "enabled", "rateLimit"] {
        assert_eq!(new_item[field], old[field], "{field}");
    }
    // Enforced as the old key's were.
    assert_insufficient_scope(
        &app.request(Method::GET, "/api/v1/events", Some(&new_key_text), None)
            .await,
        "events.read",
    );
    let mut admitted = 0;
    for _ in 0..7 {
        let reply = app
            .request(Method::POST, "/api/v1/events", Some(&new_key_text), None)
            .await;
        assert_eq!(ratelimit_limit(&reply), Some("5"), "{reply:?}");
        admitted += usize::from(reply.status.is_success());
    }
    assert_eq!(admitted, 5);

    // A project key rolling itself keeps its restrictions too.
    let rolled_itself = roll(&app, &new_key_text, &new_id).await;
    assert_eq!(
        rolled_itself.status,
        StatusCode::CREATED,
        "{rolled_itself:?}"
    );
    let newest = rolled_itself.body["key"].as_str().unwrap();
    let newest_id = app.verify(newest).await.body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let newest_item = app.key_item(&mk, &newest_id).await;
    for field in ["scopes", "enabled", "rateLimit"] {
        assert_eq!(newest_item[field], old[field], "{field}");
    }
}

// ---- 12. Described: openapi.json and README ----

#[test]
fn openapi_json_and_readme_describe_restricted_keys() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("openapi.json")).expect("openapi.json");
    let doc: Value = serde_json::from_str(&text).expect("openapi.json is JSON");
    assert!(
        doc["paths"]["/api/v1/keys/{id}"]["patch"].is_object(),
        "PATCH /api/v1/keys/{{id}} is described"
    );
    let codes: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for code in ["insufficient_scope", "key_disabled"] {
        assert!(codes.contains(&code), "{code} in ErrorCode: {codes:?}");
    }
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("Key", "scopes"),
        ("Key", "enabled"),
        ("Key", "rateLimit"),
        ("Verified", "scopes"),
        ("CreatedKey", "scopes"),
        ("CreateKeyRequest", "scopes"),
    ] {
        assert!(
            schemas[schema]["properties"][field].is_object(),
            "{schema}.{field} is described"
        );
    }
    let verify_parameters = doc["paths"]["/api/v1/auth/verify"]["get"]["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        verify_parameters.iter().any(|parameter| {
            let parameter = if parameter.get("$ref").is_some() {
                let pointer = parameter["$ref"].as_str().unwrap().trim_start_matches('#');
                doc.pointer(pointer).cloned().unwrap_or(Value::Null)
            } else {
                parameter.clone()
            };
            parameter["name"] == "scope" && parameter["in"] == "query"
        }),
        "verify's scope query parameter is described: {verify_parameters:?}"
    );
    assert!(
        text.contains("\"key.updated\""),
        "the key.updated audit action is described"
    );

    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = readme
        .split("\n## Restricted keys")
        .nth(1)
        .expect("README has a \"Restricted keys\" section");
    let section = section.split("\n## ").next().unwrap();
    assert!(
        section.contains("curl") && section.contains("PATCH"),
        "the section has curl lines, a PATCH among them"
    );
    assert!(
        readme.contains("/api/v1/auth/verify?scope="),
        "README documents the nginx auth_request line with ?scope="
    );
}
