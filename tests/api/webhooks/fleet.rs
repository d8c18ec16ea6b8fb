//! What takes more than one process: a delivery that survives a SIGKILL between the commit and
//! the delivery, instances sharing one queue without sending anything twice, and expiry
//! warnings written once with three instances looking.

use std::collections::HashSet;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use chrono::Utc;
use logstitch_gateway::configuration::Settings;
use serde_json::{json, Value};
use uuid::Uuid;

use super::receiver::{Answer, Receiver};
use super::{audit_events, new_endpoint, receivable, wait_for_status};
use crate::helpers::{
    read_whole, serve_binary, spawn_isolated_app_with, spawn_isolated_pair, Reply, TestDatabase,
};

/// A request to a served binary.
async fn call(base: &str, method: Method, path: &str, token: &str, body: Option<Value>) -> Reply {
    let client = crate::http_client::Client::new();
    let request = client
        .request(method, format!("{base}{path}"))
        .insert_header(("Authorization", format!("Bearer {token}")));
    let response = match body {
        Some(body) => request.send_json(&body).await,
        None => request.send().await,
    };
    read_whole(response.expect("the binary answers")).await
}

#[actix_web::test]
async fn a_revoke_committed_before_a_sigkill_is_delivered_after_the_restart() {
    let db = TestDatabase::create().await;
    let receiver = Receiver::start().await;
    // The first instance's attempt hangs: the delivery is in flight when the process dies.
    receiver.answer_by_default(Answer::Hang);
    let config = std::env::temp_dir().join(format!("webhooks-{}.toml", Uuid::new_v4().simple()));
    std::fs::write(
        &config,
        "[webhooks]\nallow_http = true\nallow_private_targets = true\ntimeout_ms = 2000\n\
         retry_schedule_ms = [200, 200]\n",
    )
    .unwrap();
    let admin = format!("admin-{}", Uuid::new_v4().simple());
    let serve = || {
        serve_binary(|command| {
            command
                .arg("--config")
                .arg(&config)
                .env("DATABASE_URL", &db.url)
                .env("LOGSTITCH_ADMIN_TOKEN", &admin);
        })
    };
    let mut first = serve().await;
    let org = call(
        &first.base,
        Method::POST,
        "/admin/v1/organizations",
        &admin,
        Some(json!({"name": "Acme"})),
    )
    .await
    .body;
    let master = org["master_key"].as_str().unwrap().to_owned();
    let endpoint = call(
        &first.base,
        Method::POST,
        "/api/v1/webhook-endpoints",
        &master,
        Some(json!({"url": receiver.url(), "events": ["key.revoked"]})),
    )
    .await;
    assert_eq!(endpoint.status, StatusCode::CREATED, "{endpoint:?}");
    let secret = endpoint.body["secret"].as_str().unwrap().to_owned();
    let key = call(
        &first.base,
        Method::POST,
        "/api/v1/keys",
        &master,
        Some(json!({"project_id": org["project_id"], "type": "project", "name": "doomed"})),
    )
    .await;
    let key_id = call(
        &first.base,
        Method::GET,
        "/api/v1/auth/verify",
        key.body["key"].as_str().unwrap(),
        None,
    )
    .await
    .body["key_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = call(
        &first.base,
        Method::DELETE,
        &format!("/api/v1/keys/{key_id}"),
        &master,
        None,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK, "{revoked:?}");
    assert!(
        receiver.wait_for(1, Duration::from_secs(5)).await,
        "no attempt started"
    );
    first.child.kill().expect("SIGKILL");
    first.child.wait().unwrap();
    let _ = std::fs::remove_file(&config);

    // The next instance attempts it again once the dead one's lease has run out.
    receiver.answer_by_default(Answer::Status(200));
    std::fs::write(
        &config,
        "[webhooks]\nallow_http = true\nallow_private_targets = true\ntimeout_ms = 2000\n\
         retry_schedule_ms = [200, 200]\n",
    )
    .unwrap();
    let second = serve().await;
    let _ = std::fs::remove_file(&config);
    assert!(
        receiver.wait_for(2, Duration::from_secs(20)).await,
        "never delivered after the restart"
    );
    let got = receiver.received();
    got.iter().for_each(|request| request.verify(&secret));
    assert!(got
        .iter()
        .all(|request| request.header("webhook-id") == got[0].header("webhook-id")));
    assert!(got.iter().all(|request| request.body == got[0].body));
    let body = got[1].json();
    assert_eq!(body["type"], "key.revoked");
    assert_eq!(body["data"]["target"]["id"], key_id.as_str());
    let delivered = crate::helpers::eventually(Duration::from_secs(5), || async {
        let listed = call(
            &second.base,
            Method::GET,
            &format!(
                "/api/v1/webhook-endpoints/{}/deliveries",
                endpoint.body["id"].as_str().unwrap()
            ),
            &master,
            None,
        )
        .await;
        listed.body["deliveries"][0]["status"] == "delivered"
    })
    .await;
    assert!(delivered);
}

#[actix_web::test]
async fn two_instances_draining_one_queue_send_each_delivery_once_in_commit_order() {
    // One attempt at a time per instance, three endpoints: an instance that finishes an attempt
    // and claims again at once can't take every endpoint, so both must drain (on a loaded
    // machine, with 16 slots one instance could hold all three for the whole run).
    let (a, b) = spawn_isolated_pair(|settings: &mut Settings| {
        receivable(settings);
        settings.webhooks.poll_interval = Duration::from_millis(100);
        settings.webhooks.concurrency = std::num::NonZeroUsize::MIN;
    })
    .await;
    let org = a.create_org("Acme").await;
    let mut receivers = Vec::new();
    for _ in 0..3 {
        let receiver = Receiver::start().await;
        receiver.answer_by_default(Answer::Slow(200, Duration::from_millis(20)));
        let (id, secret) = new_endpoint(&a, &org, &receiver.url(), json!(["key.created"])).await;
        receivers.push((receiver, id, secret));
    }
    const KEYS: usize = 30;
    let mut created = Vec::new();
    for n in 0..KEYS {
        let app = if n % 2 == 0 { &a } else { &b };
        let (key_id, _) = app.new_project_key(&org).await;
        created.push(key_id);
    }
    for (receiver, id, secret) in &receivers {
        assert!(
            receiver.wait_for(KEYS, Duration::from_secs(30)).await,
            "{}",
            receiver.received().len()
        );
        wait_for_status(&a, &org, id, "delivered", Duration::from_secs(10)).await;
        let got = receiver.received();
        assert_eq!(got.len(), KEYS, "each delivery sent once");
        let ids: HashSet<&str> = got
            .iter()
            .map(|request| request.header("webhook-id"))
            .collect();
        assert_eq!(ids.len(), KEYS);
        got.iter().for_each(|request| request.verify(secret));
        let order: Vec<String> = got
            .iter()
            .map(|request| {
                request.json()["data"]["target"]["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(order, created, "the order in which the creates committed");
    }
    actix_rt::time::sleep(Duration::from_millis(500)).await;
    assert!(receivers
        .iter()
        .all(|(receiver, _, _)| receiver.received().len() == KEYS));
    let delivered = "logstitch_webhook_deliveries_total{outcome=\"delivered\"}";
    let (by_a, by_b) = (a.metric(delivered).await, b.metric(delivered).await);
    assert_eq!(by_a + by_b, (3 * KEYS) as f64);
    assert!(
        by_a > 0.0 && by_b > 0.0,
        "both instances delivered: {by_a} and {by_b}"
    );
}

fn three_instance_settings(settings: &mut Settings) {
    receivable(settings);
    settings.webhooks.poll_interval = Duration::from_millis(50);
    settings.webhooks.expiry_warning = Duration::from_secs(3600);
}

#[actix_web::test]
async fn an_expiring_key_warns_exactly_once_with_three_instances() {
    let db = TestDatabase::create().await;
    let instances = [
        spawn_isolated_app_with(db.clone(), three_instance_settings).await,
        spawn_isolated_app_with(db.clone(), three_instance_settings).await,
        spawn_isolated_app_with(db.clone(), three_instance_settings).await,
    ];
    let org = instances[0].create_org("Acme").await;
    let receiver = Receiver::start().await;
    let (_, secret) = new_endpoint(
        &instances[0],
        &org,
        &receiver.url(),
        json!(["key.expiring"]),
    )
    .await;
    let create = |n: usize, expires_in: chrono::Duration| {
        let app = &instances[n % 3];
        let org = org.clone();
        async move {
            let created = app
                .create_key_with(
                    &org.master_key,
                    &json!({"project_id": org.project_id, "type": "project",
                            "name": format!("key {n}"),
                            "expires_at": (Utc::now() + expires_in).to_rfc3339()}),
                )
                .await;
            assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
            app.verify(created.body["key"].as_str().unwrap()).await.body["key_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    // An expired key never warns; one outside the window doesn't yet.
    let expired = create(0, chrono::Duration::hours(3)).await;
    instances[0]
        .db
        .client()
        .await
        .execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1",
            &[&Uuid::parse_str(&expired).unwrap()],
        )
        .await
        .unwrap();
    let later = create(1, chrono::Duration::hours(3)).await;
    let mut warned = HashSet::new();
    for n in 0..6 {
        warned.insert(create(n, chrono::Duration::minutes(30)).await);
    }

    assert!(receiver.wait_for(6, Duration::from_secs(10)).await);
    // Many polls of three instances later, still one warning per key.
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    let got = receiver.received();
    let targets: HashSet<String> = got
        .iter()
        .map(|request| {
            request.verify(&secret);
            let body = request.json();
            assert_eq!(body["type"], "key.expiring");
            assert_eq!(body["data"]["actor"], json!({"type": "system"}));
            body["data"]["target"]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(got.len(), 6, "{got:#?}");
    assert_eq!(targets, warned);
    assert!(!targets.contains(&expired) && !targets.contains(&later));
    let events = audit_events(&instances[1], &org, "key.expiring").await;
    assert_eq!(events.len(), 6);
}
