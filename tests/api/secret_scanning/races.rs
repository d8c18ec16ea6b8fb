//! Reports racing each other and the organization's other key changes, on two instances: the
//! same report at once, a DELETE of a reported key, master-key rolls. Each key is revoked by
//! exactly one of them, with one event, and the organization ends with one active master key.

use actix_web::http::{Method, StatusCode};
use logstitch_gateway::domain::KeyHash;

use super::partner::{KeysDocument, PartnerKey};
use super::{labels, report_of, scanning_app, send_report};
use crate::helpers::TestDatabase;

#[actix_web::test]
async fn a_report_racing_itself_a_delete_and_two_rolls_revokes_each_key_once() {
    let partner = PartnerKey::new("github-key-1");
    let document = KeysDocument::serving(&[&partner]).await;
    let db = TestDatabase::create().await;
    let a = scanning_app(db.clone(), &document).await;
    let b = scanning_app(db.clone(), &document).await;
    let org = a.create_org("Racy").await;
    let (first_id, first) = a.new_project_key(&org).await;
    let (_, second) = a.new_project_key(&org).await;
    // Deletes the first key while the report revokes it (not itself reported).
    let (_, deleter) = a.new_project_key(&org).await;
    let body = report_of(&[&first, &second, &org.master_key]);
    let roll_path = format!("/admin/v1/organizations/{}/master-key", org.organization_id);

    let (on_a, on_b, deleted, rolled_a, rolled_b) = futures_util::join!(
        send_report(&a, &partner, &body),
        send_report(&b, &partner, &body),
        b.revoke_key(&deleter, &first_id),
        a.request(Method::POST, &roll_path, Some(&a.admin_token), None),
        b.request(Method::POST, &roll_path, Some(&b.admin_token), None),
    );
    assert_eq!(labels(&on_a), ["true_positive"; 3]);
    assert_eq!(on_a.body, on_b.body);
    assert_eq!(deleted.status, StatusCode::OK, "{deleted:?}");
    assert_eq!(rolled_a.status, StatusCode::CREATED, "{rolled_a:?}");
    assert_eq!(rolled_b.status, StatusCode::CREATED, "{rolled_b:?}");

    let client = db.client().await;
    for key in [&first, &second, &org.master_key] {
        let row = client
            .query_one(
                "SELECT k.revoked_at IS NOT NULL,
                        (SELECT count(*) FROM audit_events e
                         WHERE e.action = 'key.revoked' AND e.target_id = k.id)
                 FROM api_keys k WHERE k.key_hash = $1",
                &[&KeyHash::of(key).as_bytes().as_slice()],
            )
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0), "every reported key is revoked");
        assert_eq!(row.get::<_, i64>(1), 1, "one key.revoked event per key");
    }
    let twice: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT target_id FROM audit_events
             WHERE action = 'key.revoked' GROUP BY target_id HAVING count(*) > 1) AS repeated",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(twice, 0, "no key revoked twice");
    let active_masters: i64 = client
        .query_one(
            "SELECT count(*) FROM api_keys WHERE key_type = 'master' AND revoked_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(active_masters, 1, "exactly one active master key");
    // The one left is the one the later roll showed.
    let newest =
        [&rolled_a, &rolled_b].map(|reply| reply.body["master_key"].as_str().unwrap().to_owned());
    let working: Vec<bool> = futures_util::future::join_all(
        newest
            .iter()
            .map(|key| async { a.verify(key).await.status == StatusCode::OK }),
    )
    .await;
    assert_eq!(working.iter().filter(|ok| **ok).count(), 1, "{working:?}");
}
