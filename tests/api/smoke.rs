//! The seed's three calls, end to end.

use actix_web::http::StatusCode;

use crate::helpers::spawn_app;

#[actix_web::test]
async fn create_list_revoke_as_the_seed_shows() {
    let app = spawn_app().await;
    let org = app.create_org("Acme").await;

    let created = app
        .create_key(&org.master_key, &org.project_id, "Production API Key")
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let key = created.body["key"].as_str().unwrap();
    assert!(key.starts_with("pk_"));
    assert_eq!(created.body["prefix"], &key[..7]);

    let listed = app.list_keys(&org.master_key).await;
    assert_eq!(listed.status, StatusCode::OK);
    let id = listed.body["keys"][0]["id"].as_str().unwrap().to_owned();

    let revoked = app.revoke_key(&org.master_key, &id).await;
    assert_eq!(revoked.status, StatusCode::OK);
    assert_eq!(revoked.body["revoked"], true);
    assert_eq!(app.verify(key).await.error_code(), "key_revoked");
}

/// Test instances are built from the compiled-in defaults only: a developer's settings file or
/// `LOGSTITCH__*` variables (here: ones that would not even load) change nothing. Runs the seed
/// test above in a child test process with such an environment.
#[test]
fn tests_ignore_the_developer_s_settings() {
    let output = std::process::Command::new(std::env::current_exe().expect("the test binary"))
        .args(["--exact", "smoke::create_list_revoke_as_the_seed_shows"])
        .env("LOGSTITCH_CONFIG", "/nonexistent/logstitch.toml")
        .env("LOGSTITCH__SERVER__WORKERS", "not-a-number")
        .env("LOGSTITCH__AUTH__CACHE_TTL_SECS", "-1")
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
