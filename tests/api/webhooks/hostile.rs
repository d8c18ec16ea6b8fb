//! What a hostile customer, a slow database or an odd address can make of webhooks: an attempt
//! never outlives its endpoint's lease (so no delivery goes out twice at once), a caller
//! repeating `…/test` can't grow the outbox, and IPv6 targets outside global unicast are
//! refused.

use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use serde_json::json;

use super::receiver::{Answer, Receiver};
use super::{create_endpoint, delivery_items, new_endpoint, receivable, wait_for_status};
use crate::helpers::{assert_validation_error, eventually, spawn_app_with, TestDatabase};

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
    let queued = app
        .request(
            Method::POST,
            &format!("/api/v1/webhook-endpoints/{endpoint}/test"),
            Some(&org.master_key),
            None,
        )
        .await;
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
async fn asking_for_tests_again_while_one_is_pending_queues_no_more() {
    let app = spawn_app_with(TestDatabase::create().await, |settings| {
        receivable(settings);
        settings.webhooks.timeout = Duration::from_secs(4);
        settings.webhooks.retry_schedule = vec![Duration::from_secs(3600); 2];
    })
    .await;
    let org = app.create_org("Acme").await;
    let receiver = Receiver::start().await;
    receiver.script(&[Answer::Hang]);
    let (endpoint, _) = new_endpoint(&app, &org, &receiver.url(), json!(["key.revoked"])).await;
    let test = format!("/api/v1/webhook-endpoints/{endpoint}/test");
    let ask = || app.request(Method::POST, &test, Some(&org.master_key), None);

    assert_eq!(ask().await.status, StatusCode::ACCEPTED);
    assert!(receiver.wait_for(1, Duration::from_secs(5)).await);
    // The first attempt hangs; 30 more requests for a test meanwhile add nothing.
    for _ in 0..30 {
        assert_eq!(ask().await.status, StatusCode::ACCEPTED);
    }
    let items = delivery_items(&app, &org, &endpoint).await;
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(items[0]["type"], "webhook.test");

    // Timed out, its retry an hour away: asking again makes it due now.
    let retrying = eventually(Duration::from_secs(8), || async {
        delivery_items(&app, &org, &endpoint).await[0]["attempts"] == 1
    });
    assert!(retrying.await);
    assert_eq!(ask().await.status, StatusCode::ACCEPTED);
    let items = wait_for_status(&app, &org, &endpoint, "delivered", Duration::from_secs(5)).await;
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(items[0]["attempts"], 2);
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|request| request.header("webhook-id").to_owned())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[0], ids[1]);

    // Once it is delivered, the next request queues a new test.
    assert_eq!(ask().await.status, StatusCode::ACCEPTED);
    assert!(receiver.wait_for(3, Duration::from_secs(5)).await);
    assert_eq!(delivery_items(&app, &org, &endpoint).await.len(), 2);
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
