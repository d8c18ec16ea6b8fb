//! What a hostile customer, a slow database or an odd address can make of webhooks: an attempt
//! never outlives its endpoint's lease (so no delivery goes out twice at once), and IPv6
//! targets outside global unicast are refused. Also what already held and must keep holding: the endpoint limit under concurrent
//! creates on two instances, and a delivery retried only through its own endpoint.

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use serde_json::json;

use super::receiver::{Answer, Receiver};
use super::{
    create_endpoint, delivery_items, new_endpoint, queue_test, receivable, wait_for_status,
};
use crate::helpers::{assert_validation_error, spawn_app_with, TestDatabase};

#[actix_web::test]
async fn an_attempt_claimed_late_ends_before_its_lease_so_it_is_never_sent_twice_at_once() {
    // Leases last timeout + 5 s = 7 s. The claim's second statement (which reads the audit
    // event) is held up by a lock for most of that; the attempt that follows must still be
    // over before the lease is, or the next claim sends the same delivery beside it.
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        receivable(settings);
        settings.webhooks.timeout = Duration::from_secs(2);
        settings.webhooks.poll_interval = Duration::from_millis(100);
        settings.database.statement_timeout = Duration::from_secs(20);
    })
    .await;
    let org = app.create_org("Acme").await;
    let receiver = Receiver::start().await;
    // Each answer takes 1.9 s: within the timeout, but not within what the stall leaves.
    receiver.answer_by_default(Answer::Slow(200, Duration::from_millis(1900)));
    let (endpoint, _) = new_endpoint(&app, &org, &receiver.url(), json!(["key.revoked"])).await;

    let mut locker = app.db.client().await;
    let stall = locker.transaction().await.unwrap();
    stall
        .batch_execute("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let queued = queue_test(&app, &org, &endpoint).await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{queued:?}");
    // The dispatcher leases the endpoint at once, then waits on the lock.
    actix_rt::time::sleep(Duration::from_millis(6200)).await;
    stall.commit().await.unwrap();

    wait_for_status(&app, &org, &endpoint, "delivered", Duration::from_secs(15)).await;
    // Whatever became of the late attempt, the next one waited for it.
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        receiver.most_in_flight(),
        1,
        "one delivery was sent twice at once: {:#?}",
        receiver.received()
    );
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|request| request.header("webhook-id").to_owned())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
}

#[actix_web::test]
async fn ipv6_targets_outside_global_unicast_are_refused() {
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        settings.webhooks.allow_http = true;
    })
    .await;
    let org = app.create_org("Acme").await;
    for url in [
        // IPv4-translated (RFC 2765): the IPv4 inside is loopback, or private.
        "http://[::ffff:0:7f00:1]/hook",
        "http://[::ffff:0:a00:1]/hook",
        // SRv6 segment identifiers, and unallocated space.
        "http://[5f00::1]/hook",
        "http://[4000::1]/hook",
        "http://[e000::1]/hook",
    ] {
        let reply =
            create_endpoint(&app, &org.master_key, &json!({"url": url, "events": ["*"]})).await;
        assert_eq!(
            assert_validation_error(&reply),
            ["url"],
            "{url} was accepted"
        );
    }
    // Global unicast is not (nothing listens there: the endpoint is only created).
    let reply = create_endpoint(
        &app,
        &org.master_key,
        &json!({"url": "http://[2606:4700:4700::1111]/hook", "events": ["*"]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
}

#[actix_web::test]
async fn concurrent_creates_on_two_instances_never_pass_the_endpoint_limit() {
    let db = TestDatabase::create().await;
    let apps = [
        spawn_app_with(db.clone(), receivable).await,
        spawn_app_with(db, receivable).await,
    ];
    let org = apps[0].create_org("Acme").await;
    let body = json!({"url": "http://127.0.0.1:9/hook", "events": ["*"]});
    let creates = (0..24).map(|at| create_endpoint(&apps[at % 2], &org.master_key, &body));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(creates)
        .await
        .iter()
        .map(|reply| reply.status)
        .collect();
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, refused), (10, 14), "{statuses:?}");
    let listed = apps[1]
        .request(
            Method::GET,
            "/api/v1/webhook-endpoints",
            Some(&org.master_key),
            None,
        )
        .await;
    assert_eq!(listed.body["endpoints"].as_array().unwrap().len(), 10);
}

#[actix_web::test]
async fn a_delivery_is_retried_only_through_its_own_endpoint() {
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        receivable(settings);
        settings.webhooks.retry_schedule = Vec::new();
    })
    .await;
    let org = app.create_org("Acme").await;
    let other = app.create_org("Other").await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Status(500));
    let (failing, _) = new_endpoint(&app, &org, &receiver.url(), json!(["key.created"])).await;
    let (sibling, _) = new_endpoint(&app, &org, &receiver.url(), json!(["key.revoked"])).await;
    let (foreign, _) = new_endpoint(&app, &other, &receiver.url(), json!(["key.revoked"])).await;
    app.new_project_key(&org).await;
    let items = wait_for_status(&app, &org, &failing, "failed", Duration::from_secs(10)).await;
    let delivery = items[0]["id"].as_str().unwrap();
    let retry = |endpoint: &str| {
        format!("/api/v1/webhook-endpoints/{endpoint}/deliveries/{delivery}/retry")
    };
    for (endpoint, token) in [
        (&sibling, &org.master_key),
        (&foreign, &other.master_key),
        (&failing, &other.master_key),
    ] {
        let reply = app
            .request(Method::POST, &retry(endpoint), Some(token), None)
            .await;
        crate::helpers::assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(
        delivery_items(&app, &org, &failing).await[0]["status"],
        "failed"
    );
    let reply = app
        .request(Method::POST, &retry(&failing), Some(&org.master_key), None)
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
}

/// Each `…/test` queues one `webhook.test` delivery, as the issue says — two asks, two
/// deliveries, even while the first is still pending (a receiver that is down). The outbox's
/// growth from a caller repeating writes is bounded by the management API's callers, not here.
#[actix_web::test]
async fn every_test_request_queues_its_own_delivery() {
    let app = spawn_app_with(TestDatabase::create().await, receivable).await;
    let org = app.create_org("Acme").await;
    let receiver = Receiver::start().await;
    receiver.answer_by_default(Answer::Status(500));
    let (endpoint, _) = new_endpoint(&app, &org, &receiver.url(), json!(["key.created"])).await;
    for _ in 0..2 {
        let reply = queue_test(&app, &org, &endpoint).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{reply:?}");
    }
    let tests: Vec<_> = delivery_items(&app, &org, &endpoint)
        .await
        .into_iter()
        .filter(|delivery| delivery["type"] == "webhook.test")
        .collect();
    assert_eq!(tests.len(), 2, "{tests:#?}");
}
