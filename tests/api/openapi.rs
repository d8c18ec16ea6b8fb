//! The checked-in OpenAPI description (`openapi.json`, served at `GET /openapi.json`) against
//! the service: the same operations, the same error codes, and real responses that carry what
//! it says they carry. Adding a route, a method or an error code without describing it fails
//! here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use actix_web::http::{Method, StatusCode};
use logstitch_gateway::error::ErrorCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{assert_error, spawn_app, Reply, TestApp};

/// Every operation the service serves with its default settings plus an admin token (as the
/// tests run it), from the route modules in src/routes.
const SERVED: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("POST", "/admin/v1/organizations"),
    ("POST", "/admin/v1/organizations/{id}/master-key"),
    ("POST", "/api/v1/keys"),
    ("GET", "/api/v1/keys"),
    ("DELETE", "/api/v1/keys/{id}"),
    ("PATCH", "/api/v1/keys/{id}"),
    ("POST", "/api/v1/keys/{id}/roll"),
    ("GET", "/api/v1/keys/{id}/usage"),
    ("GET", "/api/v1/usage"),
    ("GET", "/api/v1/audit-events"),
    ("GET", "/api/v1/auth/verify"),
    ("POST", "/api/v1/projects"),
    ("GET", "/api/v1/projects"),
    ("POST", "/api/v1/secret-scanning/{provider}"),
    ("POST", "/api/v1/webhook-endpoints"),
    ("GET", "/api/v1/webhook-endpoints"),
    ("DELETE", "/api/v1/webhook-endpoints/{id}"),
    ("POST", "/api/v1/webhook-endpoints/{id}/test"),
    ("GET", "/api/v1/webhook-endpoints/{id}/deliveries"),
    (
        "POST",
        "/api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry",
    ),
];

/// The methods probed on every path: each one the description does not list must answer 405.
const PROBED_METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

fn served() -> BTreeSet<(String, String)> {
    SERVED
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect()
}

/// The description as checked in (the binary serves this very file).
fn description() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let text = std::fs::read_to_string(&path).expect("openapi.json at the repository root");
    serde_json::from_str(&text).expect("openapi.json is JSON")
}

/// Its operations, as (METHOD, path template).
fn described_operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ]
            .contains(&method.as_str())
            {
                operations.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    operations
}

/// A concrete path for a template: each `{id}`, `{delivery_id}`, … becomes a random UUID.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                Uuid::new_v4().to_string()
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every path the route modules register, read from their source: each `resource("/…")` call,
/// under `/api/v1` for the modules that src/routes/mod.rs configures inside that scope. The
/// route modules register through `metrics::counted_resource()` only (it gives unsupported methods their 405);
/// another way of registering a route fails here until this reader (and the description)
/// learns it.
fn registered_paths() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/routes");
    let mod_rs = std::fs::read_to_string(dir.join("mod.rs")).expect("src/routes/mod.rs");
    let (_, scope) = mod_rs
        .split_once("web::scope(\"/api/v1\")")
        .expect("mod.rs mounts the /api/v1 scope");
    let scope = scope.split_once(");").map_or(scope, |(block, _)| block);
    let scoped: BTreeSet<&str> = scope
        .split(".configure(")
        .skip(1)
        .filter_map(|rest| rest.split_once("::configure)").map(|(module, _)| module))
        .collect();
    assert!(!scoped.is_empty(), "no module configured under /api/v1");

    let mut paths = BTreeSet::new();
    let (mut scopes, mut raw_resources) = (0, 0);
    for entry in std::fs::read_dir(&dir).expect("src/routes") {
        let file = entry.expect("dir entry").path();
        if file.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let module = file.file_stem().unwrap().to_str().unwrap().to_owned();
        let source = std::fs::read_to_string(&file).expect("route module");
        scopes += source.matches("web::scope(").count();
        raw_resources += source.matches("web::resource(").count();
        assert!(
            !source.contains(".route(\""),
            "{module}.rs registers a route by path (cfg.route): use counted_resource()"
        );
        let prefix = if scoped.contains(module.as_str()) {
            "/api/v1"
        } else {
            ""
        };
        for rest in source.split("resource(\"").skip(1) {
            let (path, _) = rest.split_once('"').expect("a closing quote");
            paths.insert(format!("{prefix}{path}"));
        }
    }
    assert_eq!(
        scopes, 1,
        "src/routes has a new web::scope: teach this test"
    );
    assert_eq!(
        raw_resources, 0,
        "src/routes calls web::resource: use metrics::counted_resource() (a counted route)"
    );
    paths
}

#[test]
fn the_description_lists_exactly_the_served_operations() {
    let doc = description();
    let described = described_operations(&doc);
    let expected = served();
    assert_eq!(
        described.difference(&expected).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "described in openapi.json but not served (or not in SERVED)"
    );
    assert_eq!(
        expected.difference(&described).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "served but missing from openapi.json"
    );
    let served_paths: BTreeSet<String> = expected.into_iter().map(|(_, path)| path).collect();
    assert_eq!(
        registered_paths(),
        served_paths,
        "the route modules register these paths; SERVED and openapi.json must list them"
    );
}

/// The built-in route list that gateway prefixes are checked against covers every described
/// path, and names nothing that isn't described (a path, or the parent of described ones:
/// `/api/v1/secret-scanning` for `/api/v1/secret-scanning/{provider}`).
#[test]
fn built_in_paths_are_exactly_the_described_ones() {
    use logstitch_gateway::routes::{overlaps, BUILT_IN_PATHS};
    let doc = description();
    let described: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    for path in &described {
        assert!(
            BUILT_IN_PATHS
                .iter()
                .any(|built_in| overlaps(path, built_in)),
            "{path} is not in routes::BUILT_IN_PATHS"
        );
    }
    for built_in in BUILT_IN_PATHS {
        assert!(
            described
                .iter()
                .any(|path| path == built_in || path.starts_with(&format!("{built_in}/"))),
            "{built_in} is not described"
        );
    }
}

#[test]
fn the_description_is_openapi_3_1() {
    let doc = description();
    let version = doc["openapi"].as_str().expect("openapi");
    assert!(version.starts_with("3.1."), "openapi {version}");
    for scheme in ["masterKey", "projectKey", "adminToken"] {
        let scheme = &doc["components"]["securitySchemes"][scheme];
        assert_eq!(scheme["type"], "http", "{scheme}");
        assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    }
}

#[test]
fn error_codes_are_exactly_the_error_code_table() {
    let doc = description();
    let described: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode enum")
        .iter()
        .map(|code| code.as_str().expect("a code is a string"))
        .collect();
    let table: BTreeSet<&str> = ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
    assert_eq!(described, table);
}

/// Each error response narrows `error.code` to the codes of its status, per the ErrorCode
/// table, and every operation's error responses use the envelope.
#[test]
fn error_responses_name_codes_of_their_status() {
    let doc = description();
    let status_of: BTreeMap<&str, u16> = ErrorCode::ALL
        .iter()
        .map(|code| (code.as_str(), code.spec().1.as_u16()))
        .collect();
    let mut checked = 0;
    for (method, path) in described_operations(&doc) {
        let responses = &doc["paths"][&path][method.to_lowercase()]["responses"];
        for (status, response) in responses.as_object().expect("responses") {
            let status: u16 = status.parse().expect("numeric status");
            if status < 400 {
                continue;
            }
            let response = resolve(&doc, response);
            let schema = &response["content"]["application/json"]["schema"];
            let parts = schema["allOf"].as_array().unwrap_or_else(|| {
                panic!("{method} {path} {status}: the envelope, allOf [Error, codes]")
            });
            assert_eq!(parts[0]["$ref"], "#/components/schemas/Error");
            let codes = parts[1]["properties"]["error"]["properties"]["code"]["enum"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} {status}: no code enum"));
            for code in codes {
                let code = code.as_str().unwrap();
                assert_eq!(
                    status_of.get(code),
                    Some(&status),
                    "{method} {path}: {code} listed under {status}"
                );
            }
            assert_eq!(
                resolve(&doc, &response["headers"]["X-Request-Id"])["required"],
                true,
                "{method} {path} {status}: X-Request-Id"
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} error responses described");
}

#[actix_web::test]
async fn served_description_and_routes_match_the_service() {
    let app = spawn_app().await;

    let served_doc = app.request(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(served_doc.status, StatusCode::OK, "{served_doc:?}");
    assert_eq!(
        served_doc.headers.get("content-type").unwrap(),
        "application/json"
    );
    assert_eq!(
        served_doc.body,
        description(),
        "the binary serves openapi.json"
    );
    let version = served_doc.body["openapi"].as_str().expect("openapi");
    assert!(version.starts_with("3.1."), "openapi {version}");
    conforms(&served_doc.body, "GET", "/openapi.json", &served_doc);

    // Each described operation exists: without credentials it is refused or served, never
    // answered as an unknown route or method. Every other method answers 405.
    let described = described_operations(&served_doc.body);
    let paths: BTreeSet<&String> = described.iter().map(|(_, path)| path).collect();
    for path in paths {
        for method in PROBED_METHODS {
            let target = concrete(path);
            let http_method = Method::from_bytes(method.as_bytes()).unwrap();
            let reply = app.request(http_method, &target, None, None).await;
            if described.contains(&(method.to_string(), path.clone())) {
                assert_ne!(
                    reply.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {target}"
                );
                assert!(
                    reply.status != StatusCode::NOT_FOUND
                        || reply.body["error"]["message"] != "No such route",
                    "{method} {target} is described but not served: {reply:?}"
                );
                conforms(&served_doc.body, method, path, &reply);
            } else {
                assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
            }
        }
    }
}

/// Real responses of each kind carry every field and header the description requires, and
/// no field it rules out.
#[actix_web::test]
async fn real_responses_have_the_described_shapes() {
    let app = spawn_app().await;
    let doc = description();
    let org = app.create_org("Acme").await;

    let created = app
        .create_key(&org.master_key, &org.project_id, "Production API Key")
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    conforms(&doc, "POST", "/api/v1/keys", &created);
    let project_key = created.body["key"].as_str().unwrap().to_owned();

    let listed = app.list_keys(&org.master_key).await;
    assert_eq!(listed.status, StatusCode::OK, "{listed:?}");
    assert_eq!(listed.body["keys"].as_array().unwrap().len(), 2);
    conforms(&doc, "GET", "/api/v1/keys", &listed);

    let verified = app.verify(&project_key).await;
    assert_eq!(verified.status, StatusCode::OK, "{verified:?}");
    conforms(&doc, "GET", "/api/v1/auth/verify", &verified);
    let verified_master = app.verify(&org.master_key).await;
    conforms(&doc, "GET", "/api/v1/auth/verify", &verified_master);

    let project = app
        .request(
            Method::POST,
            "/api/v1/projects",
            Some(&org.master_key),
            Some(&json!({"name": "Mobile app"})),
        )
        .await;
    assert_eq!(project.status, StatusCode::CREATED, "{project:?}");
    conforms(&doc, "POST", "/api/v1/projects", &project);
    let projects = app
        .request(Method::GET, "/api/v1/projects", Some(&org.master_key), None)
        .await;
    assert_eq!(projects.status, StatusCode::OK, "{projects:?}");
    conforms(&doc, "GET", "/api/v1/projects", &projects);

    let key_id = verified.body["key_id"].as_str().unwrap();
    // Usage, with a bucket written as a flush would have.
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO key_usage (key_id, hour, organization_id, project_id, valid, forbidden)
             SELECT id, date_trunc('hour', now()), organization_id, project_id, 3, 1
             FROM api_keys WHERE id = $1::text::uuid",
            &[&key_id],
        )
        .await
        .unwrap();
    let usage = app
        .request(
            Method::GET,
            &format!("/api/v1/keys/{key_id}/usage?granularity=day"),
            Some(&org.master_key),
            None,
        )
        .await;
    assert_eq!(usage.status, StatusCode::OK, "{usage:?}");
    assert_eq!(usage.body["usage"][0]["total"], 4, "{usage:?}");
    conforms(&doc, "GET", "/api/v1/keys/{id}/usage", &usage);
    let usage = app
        .request(
            Method::GET,
            "/api/v1/usage?from=nope",
            Some(&org.master_key),
            None,
        )
        .await;
    assert_error(&usage, StatusCode::BAD_REQUEST, "validation_error");
    conforms(&doc, "GET", "/api/v1/usage", &usage);
    let usage = app
        .request(Method::GET, "/api/v1/usage", Some(&project_key), None)
        .await;
    assert_error(&usage, StatusCode::FORBIDDEN, "forbidden");
    conforms(&doc, "GET", "/api/v1/usage", &usage);
    let expiring = app
        .request(
            Method::POST,
            "/api/v1/keys",
            Some(&org.master_key),
            Some(
                &json!({"project_id": org.project_id, "type": "project", "name": "CI",
                         "expires_at": "2030-01-01T00:00:00+02:00"}),
            ),
        )
        .await;
    assert_eq!(expiring.status, StatusCode::CREATED, "{expiring:?}");
    conforms(&doc, "POST", "/api/v1/keys", &expiring);
    let verified_expiring = app.verify(expiring.body["key"].as_str().unwrap()).await;
    assert_eq!(
        verified_expiring.body["expires_at"],
        "2029-12-31T22:00:00.000Z"
    );
    conforms(&doc, "GET", "/api/v1/auth/verify", &verified_expiring);
    let listed = app.list_keys(&org.master_key).await;
    conforms(&doc, "GET", "/api/v1/keys", &listed);
    let roll_path = format!("/api/v1/keys/{key_id}/roll");
    let rolled = app
        .request(
            Method::POST,
            &roll_path,
            Some(&org.master_key),
            Some(&json!({"overlap_seconds": 60})),
        )
        .await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{rolled:?}");
    conforms(&doc, "POST", "/api/v1/keys/{id}/roll", &rolled);
    let rolled_again = app
        .request(Method::POST, &roll_path, Some(&org.master_key), None)
        .await;
    assert_error(&rolled_again, StatusCode::CONFLICT, "conflict");
    conforms(&doc, "POST", "/api/v1/keys/{id}/roll", &rolled_again);
    let roll_master = app
        .request(
            Method::POST,
            &format!(
                "/api/v1/keys/{}/roll",
                verified_master.body["key_id"].as_str().unwrap()
            ),
            Some(&org.master_key),
            None,
        )
        .await;
    assert_error(&roll_master, StatusCode::FORBIDDEN, "forbidden");
    conforms(&doc, "POST", "/api/v1/keys/{id}/roll", &roll_master);
    let bad_overlap = app
        .request(
            Method::POST,
            &roll_path,
            Some(&org.master_key),
            Some(&json!({"overlap_seconds": -1})),
        )
        .await;
    assert_error(&bad_overlap, StatusCode::BAD_REQUEST, "validation_error");
    conforms(&doc, "POST", "/api/v1/keys/{id}/roll", &bad_overlap);
    let events = app
        .request(
            Method::GET,
            "/api/v1/audit-events?limit=2",
            Some(&org.master_key),
            None,
        )
        .await;
    assert_eq!(events.status, StatusCode::OK, "{events:?}");
    assert!(events.body["next_cursor"].is_string(), "{events:?}");
    conforms(&doc, "GET", "/api/v1/audit-events", &events);
    let all_events = app
        .request(
            Method::GET,
            "/api/v1/audit-events",
            Some(&org.master_key),
            None,
        )
        .await;
    conforms(&doc, "GET", "/api/v1/audit-events", &all_events);
    let bad_filter = app
        .request(
            Method::GET,
            "/api/v1/audit-events?action=nope",
            Some(&org.master_key),
            None,
        )
        .await;
    assert_error(&bad_filter, StatusCode::BAD_REQUEST, "validation_error");
    conforms(&doc, "GET", "/api/v1/audit-events", &bad_filter);
    let revoked = app.revoke_key(&org.master_key, key_id).await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    conforms(&doc, "DELETE", "/api/v1/keys/{id}", &revoked);

    let healthz = app.request(Method::GET, "/healthz", None, None).await;
    conforms(&doc, "GET", "/healthz", &healthz);
    let readyz = app.request(Method::GET, "/readyz", None, None).await;
    conforms(&doc, "GET", "/readyz", &readyz);
    let metrics = app.request(Method::GET, "/metrics", None, None).await;
    conforms(&doc, "GET", "/metrics", &metrics);

    // Errors.
    let missing = list_keys_without_auth(&app).await;
    assert_error(&missing, StatusCode::UNAUTHORIZED, "unauthorized");
    conforms(&doc, "GET", "/api/v1/keys", &missing);
    let revoked_key = app.list_keys(&project_key).await;
    assert_error(&revoked_key, StatusCode::UNAUTHORIZED, "key_revoked");
    conforms(&doc, "GET", "/api/v1/keys", &revoked_key);
    let admin = app
        .request(
            Method::POST,
            "/admin/v1/organizations",
            Some("not-the-token"),
            Some(&json!({"name": "x"})),
        )
        .await;
    assert_error(&admin, StatusCode::UNAUTHORIZED, "unauthorized");
    conforms(&doc, "POST", "/admin/v1/organizations", &admin);

    let unknown = app
        .revoke_key(&org.master_key, &Uuid::new_v4().to_string())
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
    conforms(&doc, "DELETE", "/api/v1/keys/{id}", &unknown);
    let bad_id = app.revoke_key(&org.master_key, "not-a-uuid").await;
    assert_error(&bad_id, StatusCode::BAD_REQUEST, "validation_error");
    conforms(&doc, "DELETE", "/api/v1/keys/{id}", &bad_id);
    let bad_body = app
        .request(
            Method::POST,
            "/api/v1/keys",
            Some(&org.master_key),
            Some(&json!({"type": "master", "name": ""})),
        )
        .await;
    assert_error(&bad_body, StatusCode::BAD_REQUEST, "validation_error");
    conforms(&doc, "POST", "/api/v1/keys", &bad_body);

    let (_, other_project_key) = app.new_project_key(&org).await;
    let forbidden = app
        .create_key(&other_project_key, &org.project_id, "nope")
        .await;
    assert_error(&forbidden, StatusCode::FORBIDDEN, "forbidden");
    conforms(&doc, "POST", "/api/v1/keys", &forbidden);

    let not_allowed = app
        .request(Method::PUT, "/api/v1/keys", Some(&org.master_key), None)
        .await;
    assert_error(
        &not_allowed,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    conforms(&doc, "GET", "/api/v1/keys", &not_allowed);

    let not_json = app
        .raw(
            Method::POST,
            "/api/v1/projects",
            &[
                (
                    "Authorization",
                    format!("Bearer {}", org.master_key).as_bytes(),
                ),
                ("Content-Type", b"text/plain"),
            ],
            b"{}".to_vec(),
        )
        .await;
    assert_error(
        &not_json,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    conforms(&doc, "POST", "/api/v1/projects", &not_json);
    let too_large = app
        .raw(
            Method::POST,
            "/api/v1/projects",
            &[
                (
                    "Authorization",
                    format!("Bearer {}", org.master_key).as_bytes(),
                ),
                ("Content-Type", b"application/json"),
            ],
            format!("{{\"name\": \"{}\"}}", "x".repeat(70_000)).into_bytes(),
        )
        .await;
    assert_error(
        &too_large,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    conforms(&doc, "POST", "/api/v1/projects", &too_large);
}

/// The master-key roll's real answers, success and errors, have the described shapes.
#[actix_web::test]
async fn master_key_roll_responses_have_the_described_shapes() {
    let app = spawn_app().await;
    let doc = description();
    let org = app.create_org("Acme").await;
    const PATH: &str = "/admin/v1/organizations/{id}/master-key";
    let roll = |id: String, token: Option<String>| {
        let app = &app;
        async move {
            let path = format!("/admin/v1/organizations/{id}/master-key");
            app.request(Method::POST, &path, token.as_deref(), None)
                .await
        }
    };
    let token = Some(app.admin_token.clone());
    let rolled = roll(org.organization_id.clone(), token.clone()).await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{rolled:?}");
    conforms(&doc, "POST", PATH, &rolled);
    let unknown = roll(Uuid::new_v4().to_string(), token.clone()).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "not_found");
    conforms(&doc, "POST", PATH, &unknown);
    let malformed = roll("not-a-uuid".to_owned(), token).await;
    assert_error(&malformed, StatusCode::BAD_REQUEST, "validation_error");
    conforms(&doc, "POST", PATH, &malformed);
    let refused = roll(org.organization_id.clone(), Some("wrong".to_owned())).await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthorized");
    conforms(&doc, "POST", PATH, &refused);
}

/// The webhook routes' real answers, successes and errors, have the described shapes.
#[actix_web::test]
async fn webhook_responses_have_the_described_shapes() {
    let app = spawn_app().await;
    let doc = description();
    let org = app.create_org("Acme").await;
    let base = "/api/v1/webhook-endpoints";
    let body = json!({"url": "https://hooks.example.com/x", "events": ["key.revoked"]});
    let created = app
        .request(Method::POST, base, Some(&org.master_key), Some(&body))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    conforms(&doc, "POST", base, &created);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let bad = app
        .request(
            Method::POST,
            base,
            Some(&org.master_key),
            Some(&json!({"url": 1})),
        )
        .await;
    conforms(&doc, "POST", base, &bad);
    let listed = app
        .request(Method::GET, base, Some(&org.master_key), None)
        .await;
    conforms(&doc, "GET", base, &listed);
    let (_, project_key) = app.new_project_key(&org).await;
    let forbidden = app
        .request(Method::GET, base, Some(&project_key), None)
        .await;
    assert_error(&forbidden, StatusCode::FORBIDDEN, "forbidden");
    conforms(&doc, "GET", base, &forbidden);

    let test_path = format!("{base}/{id}/test");
    let queued = app
        .request(Method::POST, &test_path, Some(&org.master_key), None)
        .await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{queued:?}");
    conforms(&doc, "POST", "/api/v1/webhook-endpoints/{id}/test", &queued);
    let deliveries_path = format!("{base}/{id}/deliveries");
    let page = app
        .request(Method::GET, &deliveries_path, Some(&org.master_key), None)
        .await;
    assert_eq!(page.status, StatusCode::OK, "{page:?}");
    conforms(
        &doc,
        "GET",
        "/api/v1/webhook-endpoints/{id}/deliveries",
        &page,
    );
    let delivery = page.body["deliveries"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let retry = app
        .request(
            Method::POST,
            &format!("{base}/{id}/deliveries/{delivery}/retry"),
            Some(&org.master_key),
            None,
        )
        .await;
    assert_error(&retry, StatusCode::CONFLICT, "conflict");
    conforms(
        &doc,
        "POST",
        "/api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry",
        &retry,
    );
    let bad_page = app
        .request(
            Method::GET,
            &format!("{deliveries_path}?limit=0"),
            Some(&org.master_key),
            None,
        )
        .await;
    conforms(
        &doc,
        "GET",
        "/api/v1/webhook-endpoints/{id}/deliveries",
        &bad_page,
    );

    let deleted = app
        .request(
            Method::DELETE,
            &format!("{base}/{id}"),
            Some(&org.master_key),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{deleted:?}");
    conforms(&doc, "DELETE", "/api/v1/webhook-endpoints/{id}", &deleted);
    let gone = app
        .request(
            Method::DELETE,
            &format!("{base}/{id}"),
            Some(&org.master_key),
            None,
        )
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND, "not_found");
    conforms(&doc, "DELETE", "/api/v1/webhook-endpoints/{id}", &gone);
    let events = app
        .request(
            Method::GET,
            "/api/v1/audit-events",
            Some(&org.master_key),
            None,
        )
        .await;
    conforms(&doc, "GET", "/api/v1/audit-events", &events);
}

/// The failed-authentication throttle's 429 is described on the /api/v1 routes, with its
/// headers.
#[actix_web::test]
async fn the_failed_auth_throttle_answers_as_described() {
    let db = crate::helpers::TestDatabase::create().await;
    let app = crate::helpers::spawn_app_with(db, |settings| {
        settings.rate_limit.failed_auth_burst = std::num::NonZeroU32::new(2).unwrap();
        settings.rate_limit.failed_auth_per_second = 0.01;
    })
    .await;
    let doc = description();
    let mut last = None;
    for _ in 0..4 {
        last = Some(list_keys_without_auth(&app).await);
    }
    let throttled = last.unwrap();
    assert_error(&throttled, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    conforms(&doc, "GET", "/api/v1/keys", &throttled);
}

async fn list_keys_without_auth(app: &TestApp) -> Reply {
    app.request(Method::GET, "/api/v1/keys", None, None).await
}

/// A local `$ref` resolved (repeatedly); anything else as it is.
fn resolve<'a>(doc: &'a Value, mut node: &'a Value) -> &'a Value {
    while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local references: {reference}"));
        node = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling reference {reference}"));
    }
    node
}

/// Asserts `reply` is a response the description gives for `method path`: its status is
/// listed, its required headers are present, its content type is the one listed, and its body
/// has the described shape (see [`shape_problems`]).
fn conforms(doc: &Value, method: &str, path: &str, reply: &Reply) {
    let operation = &doc["paths"][path][method.to_lowercase()];
    assert!(operation.is_object(), "{method} {path} is not described");
    let status = reply.status.as_str();
    let response = resolve(
        doc,
        operation["responses"]
            .get(status)
            .unwrap_or_else(|| panic!("{method} {path}: status {status} not described: {reply:?}")),
    );
    for (name, header) in response["headers"].as_object().into_iter().flatten() {
        if resolve(doc, header)["required"] == true {
            assert!(
                reply.headers.contains_key(name.as_str()),
                "{method} {path} {status}: no {name} header: {reply:?}"
            );
        }
    }
    let content = response["content"].as_object().expect("described content");
    let content_type = reply
        .headers
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    let (media_type, media) = content
        .iter()
        .find(|(media_type, _)| content_type.starts_with(media_type.as_str()))
        .unwrap_or_else(|| {
            panic!("{method} {path} {status}: content type {content_type:?} not described")
        });
    if media_type == "application/json" {
        let mut problems = Vec::new();
        shape_problems(doc, &media["schema"], &reply.body, "$", &mut problems);
        assert!(
            problems.is_empty(),
            "{method} {path} {status}: {problems:#?}\n{reply:?}"
        );
    }
}

/// The parts of JSON Schema the description uses for shapes: `$ref`, `allOf`, `type`,
/// `required`, `properties`, `additionalProperties: false`, `items`, `enum`, `const`. Each
/// problem is pushed with its JSON path.
fn shape_problems(
    doc: &Value,
    schema: &Value,
    value: &Value,
    at: &str,
    problems: &mut Vec<String>,
) {
    let schema = resolve(doc, schema);
    for part in schema["allOf"].as_array().into_iter().flatten() {
        shape_problems(doc, part, value, at, problems);
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let matches = |ty: &str| match ty {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            _ => false,
        };
        if !types.iter().any(|ty| matches(ty)) {
            problems.push(format!("{at}: {value} is not of type {types:?}"));
            return;
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            problems.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let Some(expected) = schema.get("const") {
        if value != expected {
            problems.push(format!("{at}: {value} is not {expected}"));
        }
    }
    if let Some(object) = value.as_object() {
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap();
            if !object.contains_key(name) {
                problems.push(format!("{at}: required field {name:?} is missing"));
            }
        }
        let properties = schema["properties"].as_object();
        for (name, field) in object {
            match properties.and_then(|properties| properties.get(name)) {
                Some(field_schema) => {
                    shape_problems(doc, field_schema, field, &format!("{at}.{name}"), problems)
                }
                None if schema["additionalProperties"] == false => {
                    problems.push(format!("{at}: field {name:?} is not described"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (index, item) in array.iter().enumerate() {
            shape_problems(doc, items, item, &format!("{at}[{index}]"), problems);
        }
    }
}

#[test]
fn the_shape_checker_finds_problems() {
    let doc = description();
    let schema = json!({"$ref": "#/components/schemas/KeyList"});
    let good = json!({"keys": [{"id": "x", "prefix": "pk_abcd", "type": "project", "name": "n",
        "lastUsedAt": null, "createdAt": "t", "revokedAt": null, "expiresAt": null,
        "scopes": ["*"], "enabled": true, "rateLimit": null}],
        "request_id": "req_x"});
    let mut problems = Vec::new();
    shape_problems(&doc, &schema, &good, "$", &mut problems);
    assert_eq!(problems, Vec::<String>::new());

    let bad = json!({"keys": [{"id": "x", "prefix": "pk_abcd", "type": "other", "name": 1,
        "createdAt": "t", "revokedAt": null, "extra": true}]});
    shape_problems(&doc, &schema, &bad, "$", &mut problems);
    let joined = problems.join("\n");
    for expected in [
        "$: required field \"request_id\"",
        "$.keys[0]: required field \"lastUsedAt\"",
        "$.keys[0]: field \"extra\" is not described",
        "$.keys[0].type",
        "$.keys[0].name",
    ] {
        assert!(joined.contains(expected), "{expected} not in {joined}");
    }
}
