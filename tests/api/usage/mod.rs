//! Usage counts (issue 23, §1): every request presenting an existing key is counted for that
//! key per UTC hour by outcome, flushed to Postgres in batches applied exactly once, and read
//! back by key (`/api/v1/keys/{id}/usage`) or for the organization (`/api/v1/usage`).

mod counting;
mod fleet;
mod reading;

use actix_web::http::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestOrg};

/// Every outcome field of a bucket, in the answer's order.
pub const OUTCOMES: &[&str] = &[
    "valid",
    "rate_limited",
    "usage_exceeded",
    "insufficient_scope",
    "forbidden",
    "revoked",
    "expired",
    "disabled",
];

/// A key's usage over the last 24 hours (the default range), summed over its buckets, by
/// outcome; `total` too. Panics unless the answer is a 200 with the documented shape.
pub async fn usage_totals(app: &TestApp, token: &str, key_id: &str) -> Value {
    let reply = app
        .request(
            Method::GET,
            &format!("/api/v1/keys/{key_id}/usage"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    sum_buckets(&reply.body)
}

/// The buckets of a usage answer summed per field, after checking each bucket's shape.
pub fn sum_buckets(body: &Value) -> Value {
    let buckets = body["usage"].as_array().expect("a usage array");
    let mut sums = json!({"total": 0});
    for outcome in OUTCOMES {
        sums[*outcome] = json!(0);
    }
    for bucket in buckets {
        let fields = crate::helpers::field_names(bucket);
        let mut expected: Vec<String> = ["start", "total"]
            .iter()
            .chain(OUTCOMES)
            .map(|name| name.to_string())
            .collect();
        expected.sort();
        assert_eq!(fields, expected, "every outcome is present: {bucket}");
        let mut total = 0;
        for outcome in OUTCOMES {
            let count = bucket[*outcome].as_u64().expect("a count");
            total += count;
            sums[*outcome] = json!(sums[*outcome].as_u64().unwrap() + count);
        }
        assert_eq!(bucket["total"].as_u64(), Some(total), "{bucket}");
        assert!(total > 0, "empty buckets are left out: {bucket}");
        sums["total"] = json!(sums["total"].as_u64().unwrap() + total);
    }
    sums
}

/// `{total, valid: n, …}` with every other outcome 0.
pub fn expected(counts: &[(&str, u64)]) -> Value {
    let mut value = json!({});
    for outcome in OUTCOMES {
        value[*outcome] = json!(0);
    }
    let mut total = 0;
    for (outcome, count) in counts {
        value[*outcome] = json!(count);
        total += count;
    }
    value["total"] = json!(total);
    value
}

/// Polls a key's usage until it equals `want` (flushes are asynchronous); the last answer.
pub async fn await_usage(app: &TestApp, token: &str, key_id: &str, want: &Value) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let got = usage_totals(app, token, key_id).await;
        if &got == want || std::time::Instant::now() > deadline {
            return got;
        }
        actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A project key of `project_id` made by the master key, `extra` fields added to the body;
/// (id, plaintext). The id comes from the list, so the key itself is never used.
pub async fn new_key(
    app: &TestApp,
    org: &TestOrg,
    project_id: &str,
    extra: Value,
) -> (String, String) {
    let name = format!("k-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let mut body = json!({"project_id": project_id, "type": "project", "name": name});
    for (field, value) in extra.as_object().expect("an object") {
        body[field] = value.clone();
    }
    let created = app.create_key_with(&org.master_key, &body).await;
    assert_eq!(created.status, StatusCode::CREATED, "{created:?}");
    let key = created.body["key"].as_str().unwrap().to_owned();
    let item = app
        .key_items(&org.master_key)
        .await
        .into_iter()
        .find(|item| item["name"] == name.as_str())
        .expect("the new key is listed");
    (item["id"].as_str().unwrap().to_owned(), key)
}
