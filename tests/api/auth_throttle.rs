//! Issue 9 §3: the failed-authentication throttle limits what costs (lookups of keys not
//! cached as active, malformed keys) and never refuses a key cached as active, even from an
//! address it is refusing everything else from.

use actix_web::http::{Method, StatusCode};
use logstitch_gateway::domain::{ApiKey, KeyType};

use crate::helpers::{assert_error, spawn_app_with, TestApp, TestDatabase};

const LOOKUPS: &str = "logstitch_auth_db_lookups_total";
const BURST: u32 = 5;

/// A throttle that, once spent, stays spent for the whole test (one token per 100 s).
async fn app_with_a_small_throttle() -> TestApp {
    spawn_app_with(TestDatabase::create().await, |settings| {
        settings.rate_limit.failed_auth_burst = std::num::NonZeroU32::new(BURST).unwrap();
        settings.rate_limit.failed_auth_per_second = 0.01;
    })
    .await
}

fn unknown_key() -> String {
    ApiKey::generate(KeyType::Project).expose().to_owned()
}

/// Unknown keys from this address until it is refused 429.
async fn flood_until_throttled(app: &TestApp) {
    for _ in 0..=BURST {
        let reply = app.verify(&unknown_key()).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            return;
        }
        assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_api_key");
    }
    let reply = app.verify(&unknown_key()).await;
    assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(reply.headers.get("retry-after").is_some(), "{reply:?}");
}

async fn assert_throttled(app: &TestApp, token: Option<&str>) {
    let reply = app
        .request(Method::GET, "/api/v1/auth/verify", token, None)
        .await;
    assert_error(&reply, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(reply.headers.get("retry-after").is_some(), "{reply:?}");
}

#[actix_web::test]
async fn valid_keys_pass_from_a_flooded_address_while_bad_keys_keep_getting_429() {
    let app = app_with_a_small_throttle().await;
    let org = app.create_org("Flooded").await;
    // Used once before the flood (and the master key, by creating it).
    let (used_id, used) = app.new_project_key(&org).await;

    flood_until_throttled(&app).await;

    // Created through the API while the address is refused: the master key passes, and the
    // new key is cached as it is created.
    let created = app
        .create_key(&org.master_key, &org.project_id, "made during the flood")
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let fresh = created.body["key"].as_str().unwrap().to_owned();

    for round in 0..3 {
        for (label, key) in [("used before", &used), ("created", &fresh)] {
            let verified = app.verify(key).await;
            assert_eq!(
                verified.status,
                StatusCode::OK,
                "round {round}, key {label}: {verified:?}"
            );
        }
        assert_eq!(
            app.verify(&used).await.body["key_id"],
            used_id.as_str(),
            "the identity is the key's own"
        );
        let listed = app.list_keys(&fresh).await;
        assert_eq!(listed.status, StatusCode::OK, "round {round}: {listed:?}");
        // Everything else from this address is still refused, before any lookup.
        assert_throttled(&app, Some(&unknown_key())).await;
        assert_throttled(&app, Some("pk_not-even-well-formed")).await;
        assert_throttled(&app, None).await;
    }
}

#[actix_web::test]
async fn a_flooded_address_gets_no_lookups_for_keys_not_cached_as_active() {
    let app = app_with_a_small_throttle().await;
    let org = app.create_org("Flooded").await;
    // A valid master key this instance has never seen (made by the admin API, never used).
    let unseen = app.create_org("Never used").await;
    let (revoked_id, revoked) = app.new_project_key(&org).await;
    let revoke = app.revoke_key(&org.master_key, &revoked_id).await;
    assert_eq!(revoke.status, StatusCode::OK, "{revoke:?}");
    // Now cached as revoked.
    assert_error(
        &app.verify(&revoked).await,
        StatusCode::UNAUTHORIZED,
        "key_revoked",
    );

    flood_until_throttled(&app).await;
    let lookups = app.metric(LOOKUPS).await;
    for _ in 0..5 {
        assert_throttled(&app, Some(&unknown_key())).await;
    }
    // Cached, but not as active: still refused by the throttle.
    assert_throttled(&app, Some(&revoked)).await;
    // Not cached at all: its lookup is exactly what the throttle withholds, so it waits for
    // the address's bucket like any unknown key (the README's stated consequence).
    assert_throttled(&app, Some(&unseen.master_key)).await;
    assert_eq!(
        app.metric(LOOKUPS).await,
        lookups,
        "the throttle let lookups through"
    );
}

/// Wrong admin tokens count against the address like bad keys (no guessing at line rate); the
/// right token still passes from the throttled address.
#[actix_web::test]
async fn wrong_admin_tokens_are_throttled_and_the_right_one_still_passes() {
    let app = app_with_a_small_throttle().await;
    let body = serde_json::json!({"name": "Guess"});
    let mut statuses = Vec::new();
    for attempt in 0..=BURST {
        let wrong = format!("admin-wrong-{attempt}");
        let reply = app
            .request(
                Method::POST,
                "/admin/v1/organizations",
                Some(&wrong),
                Some(&body),
            )
            .await;
        statuses.push(reply.status.as_u16());
    }
    let mut expected = vec![401; BURST as usize];
    expected.push(429);
    assert_eq!(statuses, expected);
    // The right token, from the same throttled address.
    app.create_org("Right token").await;
}
