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
