//! Verified reports: labels, revocations seen by every instance, one event and one `key.leaked`
//! delivery per revoked key, replays, key rotation, and look-alikes that cost no query.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use logstitch_gateway::domain::{ApiKey, KeyHash, KeyType};
use serde_json::json;

use super::partner::{KeysDocument, PartnerKey};
use super::{events_with_action, labels, look_alike, report_of, scanning_app, send_report, QUICK};
use crate::helpers::{assert_error, TestDatabase};
use crate::webhooks::new_endpoint;
use crate::webhooks::receiver::Receiver;

#[actix_web::test]
async fn a_signed_report_revokes_the_live_keys_on_every_instance_and_labels_every_token() {
    let partner = PartnerKey::new("github-key-1");
    let document = KeysDocument::serving(&[&partner]).await;
    let db = TestDatabase::create().await;
    let a = scanning_app(db.clone(), &document).await;
    let b = scanning_app(db.clone(), &document).await;
    let org = a.create_org("Leaky").await;
    let receiver = Receiver::start().await;
    let (_, secret) = new_endpoint(&a, &org, &receiver.url(), json!(["key.leaked"])).await;
    let (_, live) = a.new_project_key(&org).await;
    let (revoked_id, revoked) = a.new_project_key(&org).await;
    assert_eq!(
        a.revoke_key(&org.master_key, &revoked_id).await.status,
        StatusCode::OK
    );
    // Both instances have the live keys cached as valid before the report.
    for app in [&a, &b] {
        assert_eq!(app.verify(&live).await.status, StatusCode::OK);
        assert_eq!(app.verify(&org.master_key).await.status, StatusCode::OK);
    }
    let unknown = ApiKey::generate(KeyType::Project);
    let fake = look_alike(&live);
    let tokens = [
        live.as_str(),
        org.master_key.as_str(),
        revoked.as_str(),
        fake.as_str(),
        unknown.expose(),
    ];
    let reply = send_report(&a, &partner, &report_of(&tokens)).await;
    assert_eq!(
        labels(&reply),
        [
            "true_positive",
            "true_positive",
            "true_positive",
            "false_positive",
            "false_positive"
        ]
    );
    let items = reply.body.as_array().unwrap();
    for (item, token) in items.iter().zip(tokens) {
        assert_eq!(item["token_hash"], KeyHash::of(token).to_hex());
        assert_eq!(item["token_type"], "logstitch_key");
    }
    assert!(reply.headers.contains_key("x-request-id"), "{reply:?}");
    assert!(!reply.text.contains(&live) && !reply.text.contains(&org.master_key));
    // As soon as the answer arrives, neither live key works anywhere.
    for app in [&a, &b] {
        assert_error(
            &app.verify(&live).await,
            StatusCode::UNAUTHORIZED,
            "key_revoked",
        );
        assert_error(
            &app.verify(&org.master_key).await,
            StatusCode::UNAUTHORIZED,
            "key_revoked",
        );
    }
    // One key.revoked event each (the already-revoked key's first revoke is the third).
    assert_eq!(events_with_action(&db, "key.revoked").await, 3);
    // One key.leaked delivery each, its data that event, verified as a receiver would.
    assert!(
        receiver.wait_for(2, QUICK).await,
        "{:?}",
        receiver.received()
    );
    let mut leaked_ids = Vec::new();
    for delivery in receiver.received() {
        delivery.verify(&secret);
        let body = delivery.json();
        assert_eq!(body["type"], "key.leaked", "{body}");
        let event = &body["data"];
        assert_eq!(event["action"], "key.revoked");
        assert_eq!(
            event["actor"],
            json!({"type": "secret_scanning", "provider": "github"})
        );
        assert_eq!(
            event["details"],
            json!({"reason": "leaked", "url": "https://github.com/acme/app/blob/main/.env",
                   "source": "content"})
        );
        leaked_ids.push(event["target"]["id"].as_str().unwrap().to_owned());
    }
    leaked_ids.sort();
    leaked_ids.dedup();
    assert_eq!(leaked_ids.len(), 2, "{leaked_ids:?}");
    // The organization gets a new master key from the admin API, and its trail shows both
    // revocations as the secret-scanning partner's.
    let rolled = a
        .request(
            actix_web::http::Method::POST,
            &format!("/admin/v1/organizations/{}/master-key", org.organization_id),
            Some(&a.admin_token),
            None,
        )
        .await;
    assert_eq!(rolled.status, StatusCode::CREATED, "{rolled:?}");
    let new_master = rolled.body["master_key"].as_str().unwrap().to_owned();
    let trail = a
        .request(
            actix_web::http::Method::GET,
            "/api/v1/audit-events?action=key.revoked",
            Some(&new_master),
            None,
        )
        .await;
    let by_scanner: Vec<_> = trail.body["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["actor"]["type"] == "secret_scanning")
        .collect();
    assert_eq!(by_scanner.len(), 2, "{trail:?}");
    assert_eq!(
        a.metric("logstitch_secret_scanning_keys_revoked_total{key_type=\"master\",provider=\"github\"}")
            .await
            + a.metric("logstitch_secret_scanning_keys_revoked_total{key_type=\"project\",provider=\"github\"}")
                .await,
        2.0
    );
}

#[actix_web::test]
async fn a_replayed_report_answers_the_same_labels_and_changes_nothing() {
    let partner = PartnerKey::new("k1");
    let document = KeysDocument::serving(&[&partner]).await;
    let db = TestDatabase::create().await;
    let app = scanning_app(db.clone(), &document).await;
    let org = app.create_org("Replayed").await;
    let (_, live) = app.new_project_key(&org).await;
    let body = report_of(&[&live, &look_alike(&live)]);
    let first = send_report(&app, &partner, &body).await;
    assert_eq!(labels(&first), ["true_positive", "false_positive"]);
    let events = events_with_action(&db, "key.revoked").await;
    assert_eq!(events, 1);
    let again = send_report(&app, &partner, &body).await;
    assert_eq!(again.body, first.body);
    assert_eq!(events_with_action(&db, "key.revoked").await, events);
    // The same token twice in one report: revoked once.
    let (_, other) = app.new_project_key(&org).await;
    let twice = send_report(&app, &partner, &report_of(&[&other, &other])).await;
    assert_eq!(labels(&twice), ["true_positive", "true_positive"]);
    assert_eq!(events_with_action(&db, "key.revoked").await, events + 1);
}

#[actix_web::test]
async fn an_expired_key_is_a_true_positive_with_nothing_to_revoke() {
    let partner = PartnerKey::new("k1");
    let document = KeysDocument::serving(&[&partner]).await;
    let db = TestDatabase::create().await;
    let app = scanning_app(db.clone(), &document).await;
    let org = app.create_org("Expired").await;
    let (id, key) = app.new_project_key(&org).await;
    db.client()
        .await
        .execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap();
    let reply = send_report(&app, &partner, &report_of(&[&key])).await;
    assert_eq!(labels(&reply), ["true_positive"]);
    assert_eq!(events_with_action(&db, "key.revoked").await, 0);
}

#[actix_web::test]
async fn a_rotated_partner_key_is_picked_up_by_one_refetch() {
    let old = PartnerKey::new("old");
    let document = KeysDocument::serving(&[&old]).await;
    let db = TestDatabase::create().await;
    let app = scanning_app(db.clone(), &document).await;
    let org = app.create_org("Rotated").await;
    let (_, first) = app.new_project_key(&org).await;
    let reply = send_report(&app, &old, &report_of(&[&first])).await;
    assert_eq!(labels(&reply), ["true_positive"]);
    assert_eq!(document.fetches(), 1);
    // The partner rotates: a new key, listed beside the old one.
    let new = PartnerKey::new("new");
    document.publish(&[&old, &new]);
    let (_, second) = app.new_project_key(&org).await;
    let reply = send_report(&app, &new, &report_of(&[&second])).await;
    assert_eq!(labels(&reply), ["true_positive"]);
    assert_eq!(document.fetches(), 2);
    assert_error(
        &app.verify(&second).await,
        StatusCode::UNAUTHORIZED,
        "key_revoked",
    );
    // Within refetch_min_interval_secs, an identifier nobody published fetches nothing more.
    let stranger = PartnerKey::new("made-up");
    for _ in 0..5 {
        let forged = send_report(&app, &stranger, &report_of(&[&first])).await;
        assert_error(&forged, StatusCode::UNAUTHORIZED, "invalid_signature");
    }
    assert_eq!(document.fetches(), 2);
    // The old key still verifies (any listed key, current or not).
    let (_, third) = app.new_project_key(&org).await;
    assert_eq!(
        labels(&send_report(&app, &old, &report_of(&[&third])).await),
        ["true_positive"]
    );
}

#[actix_web::test]
async fn a_thousand_look_alikes_are_answered_with_no_database_query() {
    let partner = PartnerKey::new("k1");
    let document = KeysDocument::serving(&[&partner]).await;
    let app = scanning_app(TestDatabase::create().await, &document).await;
    let org = app.create_org("Crowded").await;
    let (_, live) = app.new_project_key(&org).await;
    let fakes: Vec<String> = (0..1000)
        .map(|i| {
            let mut chars: Vec<char> = live.chars().collect();
            // Vary the random part and keep the old checksum: our format, a failing checksum.
            // (The second change skips the first's position, which it could undo: the fake
            // would then be the live key itself.)
            let (first, second) = (3 + i % 32, 4 + (i / 32) % 31);
            chars[first] = if chars[first] == 'Z' { 'Y' } else { 'Z' };
            if second != first {
                chars[second] = if chars[second] == 'q' { 'r' } else { 'q' };
            }
            chars.into_iter().collect()
        })
        .collect();
    assert!(fakes.iter().all(|fake| *fake != live));
    let tokens: Vec<&str> = fakes.iter().map(String::as_str).collect();
    let before = app.metric("logstitch_secret_scanning_lookups_total").await;
    let reply = send_report(&app, &partner, &report_of(&tokens)).await;
    let answered = labels(&reply);
    assert_eq!(answered.len(), 1000);
    assert!(answered.iter().all(|label| label == "false_positive"));
    assert_eq!(
        app.metric("logstitch_secret_scanning_lookups_total").await,
        before
    );
    assert_eq!(app.verify(&live).await.status, StatusCode::OK);
    // A well-formed token, by contrast, is looked up: one query for the whole report.
    let unknown = ApiKey::generate(KeyType::Project);
    let reply = send_report(&app, &partner, &report_of(&[unknown.expose(), &live])).await;
    assert_eq!(labels(&reply), ["false_positive", "true_positive"]);
    assert_eq!(
        app.metric("logstitch_secret_scanning_lookups_total").await,
        before + 1.0
    );
}

#[actix_web::test]
async fn a_made_up_identifier_fetching_from_a_slow_endpoint_never_holds_up_genuine_reports() {
    let partner = PartnerKey::new("k1");
    let document = KeysDocument::serving(&[&partner]).await;
    let app = scanning_app(TestDatabase::create().await, &document).await;
    let org = app.create_org("Patient").await;
    let (_, first) = app.new_project_key(&org).await;
    let (_, second) = app.new_project_key(&org).await;
    assert_eq!(
        labels(&send_report(&app, &partner, &report_of(&[&first])).await),
        ["true_positive"]
    );
    // The keys endpoint turns slow; a forger names an identifier nobody published, which
    // fetches the document again, for seconds.
    document.slow_down(Duration::from_secs(4));
    let stranger = PartnerKey::new("made-up");
    let body = report_of(&[&second]);
    let (forged, (genuine, took)) =
        futures_util::join!(send_report(&app, &stranger, &body), async {
            actix_rt::time::sleep(Duration::from_millis(300)).await;
            let started = Instant::now();
            let reply = send_report(&app, &partner, &body).await;
            (reply, started.elapsed())
        });
    assert_error(&forged, StatusCode::UNAUTHORIZED, "invalid_signature");
    assert_eq!(labels(&genuine), ["true_positive"]);
    assert!(
        took < Duration::from_secs(2),
        "the genuine report waited {took:?} behind the forger's fetch"
    );
    assert_eq!(document.fetches(), 2);
}

#[actix_web::test]
async fn odd_strings_in_a_verified_report_are_answered_and_audited_as_sent() {
    let partner = PartnerKey::new("k1");
    let document = KeysDocument::serving(&[&partner]).await;
    let db = TestDatabase::create().await;
    let app = scanning_app(db.clone(), &document).await;
    let org = app.create_org("Odd").await;
    let (_, live) = app.new_project_key(&org).await;
    let odd = "a\u{0}b \u{1F511} \" \\ \r\n";
    let body = serde_json::to_vec(&json!([
        {"token": live, "type": odd, "url": odd, "source": ""},
        {"token": odd, "type": "t"},
    ]))
    .unwrap();
    let reply = send_report(&app, &partner, &body).await;
    assert_eq!(labels(&reply), ["true_positive", "false_positive"]);
    assert_eq!(reply.body[0]["token_type"], odd);
    assert_eq!(reply.body[1]["token_hash"], KeyHash::of(odd).to_hex());
    let trail = app
        .request(
            actix_web::http::Method::GET,
            "/api/v1/audit-events?action=key.revoked",
            Some(&org.master_key),
            None,
        )
        .await;
    assert_eq!(trail.status, StatusCode::OK, "{trail:?}");
    assert_eq!(
        trail.body["events"][0]["details"],
        json!({"reason": "leaked", "url": odd, "source": ""})
    );
}
