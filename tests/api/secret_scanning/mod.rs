//! Secret scanning (issue 22): a partner's signed leak reports, verified against its published
//! keys (`partner` plays the partner: key pairs and a loopback keys document), revoke every live
//! key among the tokens on every instance (`reports`); forged, oversized and malformed reports
//! change nothing (`forgeries`); a database gone mid-batch and a silent listener
//! (`failures`); reports racing themselves, a DELETE and master-key rolls (`races`).

mod failures;
mod forgeries;
mod partner;
mod races;
mod reports;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::{Method, StatusCode};
use logstitch_gateway::configuration::{ProviderSettings, Settings};
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, Reply, TestApp, TestDatabase};
use partner::{KeysDocument, PartnerKey};

pub const REPORT_PATH: &str = "/api/v1/secret-scanning/github";

/// The `github` provider, its keys document on loopback, plain HTTP allowed.
pub fn scanning(settings: &mut Settings, document: &KeysDocument) {
    settings.secret_scanning.allow_http = true;
    settings.secret_scanning.providers = vec![ProviderSettings {
        name: "github".into(),
        keys_url: Some(document.url()),
        key_id_header: None,
        signature_header: None,
    }];
}

/// An instance on `db` that hears `document`'s partner (and delivers webhooks to loopback).
pub async fn scanning_app(db: Arc<TestDatabase>, document: &KeysDocument) -> TestApp {
    spawn_app_with(db, |settings| {
        scanning(settings, document);
        crate::webhooks::receivable(settings);
    })
    .await
}

/// The report body for `tokens` (each `{token, type, url, source}`).
pub fn report_of(tokens: &[&str]) -> Vec<u8> {
    let entries: Vec<Value> = tokens
        .iter()
        .map(|token| {
            json!({"token": token, "type": "logstitch_key",
                   "url": "https://github.com/acme/app/blob/main/.env", "source": "content"})
        })
        .collect();
    serde_json::to_vec(&entries).unwrap()
}

/// POSTs `body` signed by `key` with GitHub's headers.
pub async fn send_report(app: &TestApp, key: &PartnerKey, body: &[u8]) -> Reply {
    let signature = key.sign(body);
    send_with(
        app,
        &[
            ("Github-Public-Key-Identifier", key.identifier.as_bytes()),
            ("Github-Public-Key-Signature", signature.as_bytes()),
        ],
        body.to_vec(),
    )
    .await
}

pub async fn send_with(app: &TestApp, headers: &[(&str, &[u8])], body: Vec<u8>) -> Reply {
    let mut all = vec![("Content-Type", &b"application/json"[..])];
    all.extend_from_slice(headers);
    app.raw(Method::POST, REPORT_PATH, &all, body).await
}

/// The labels of a 200 answer, in order (asserts its shape: a bare array of three fields).
pub fn labels(reply: &Reply) -> Vec<String> {
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let items = reply.body.as_array().expect("a bare array");
    items
        .iter()
        .map(|item| {
            crate::helpers::assert_exact_fields(item, &["label", "token_hash", "token_type"]);
            item["label"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// A key with its last checksum character changed: our format, a failing checksum.
pub fn look_alike(key: &str) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    let last = chars.last_mut().unwrap();
    *last = if *last == 'a' { 'b' } else { 'a' };
    chars.into_iter().collect()
}

/// Rows of `audit_events` with this action (read from the database: a leaked master key can
/// no longer read its organization's trail).
pub async fn events_with_action(db: &TestDatabase, action: &str) -> i64 {
    db.client()
        .await
        .query_one(
            "SELECT count(*) FROM audit_events WHERE action = $1",
            &[&action],
        )
        .await
        .unwrap()
        .get(0)
}

pub const QUICK: Duration = Duration::from_secs(10);
