//! Reports that must change nothing: forged (tampered body, wrong identifier, another key's
//! signature, missing headers), oversized, malformed after verifying, or for no provider.

use std::io::Write;
use std::time::Duration;

use actix_web::http::StatusCode;

use super::partner::{KeysDocument, PartnerKey};
use super::{events_with_action, report_of, scanning_app, send_report, send_with, REPORT_PATH};
use crate::helpers::{assert_error, assert_validation_error, spawn_app_with, TestDatabase};
use crate::raw_http::{blocking, connect, raw_bytes, raw_exchange, read_raw_reply, RawReply};

#[actix_web::test]
async fn forged_reports_are_refused_401_and_revoke_nothing() {
    let partner = PartnerKey::new("k1");
    let document = KeysDocument::serving(&[&partner]).await;
    let db = TestDatabase::create().await;
    let app = scanning_app(db.clone(), &document).await;
    let org = app.create_org("Forged").await;
    let (_, live) = app.new_project_key(&org).await;
    let body = report_of(&[&live]);
    let signature = partner.sign(&body);
    let id = partner.identifier.as_bytes();

    // A tampered body: signed one thing, sent another.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let forged = [
        send_with(
            &app,
            &[
                ("Github-Public-Key-Identifier", id),
                ("Github-Public-Key-Signature", signature.as_bytes()),
            ],
            tampered,
        )
        .await,
        // An identifier the partner does not publish.
        send_with(
            &app,
            &[
                ("Github-Public-Key-Identifier", b"nobody"),
                ("Github-Public-Key-Signature", signature.as_bytes()),
            ],
            body.clone(),
        )
        .await,
        // Signed by another key, under the partner's identifier.
        send_with(
            &app,
            &[
                ("Github-Public-Key-Identifier", id),
                (
                    "Github-Public-Key-Signature",
                    PartnerKey::new("k1").sign(&body).as_bytes(),
                ),
            ],
            body.clone(),
        )
        .await,
        // Headers missing, one or both.
        send_with(
            &app,
            &[("Github-Public-Key-Signature", signature.as_bytes())],
            body.clone(),
        )
        .await,
        send_with(&app, &[("Github-Public-Key-Identifier", id)], body.clone()).await,
        send_with(&app, &[], body.clone()).await,
        // Not base64, not DER.
        send_with(
            &app,
            &[
                ("Github-Public-Key-Identifier", id),
                ("Github-Public-Key-Signature", b"%%%"),
            ],
            body.clone(),
        )
        .await,
        send_with(
            &app,
            &[
                ("Github-Public-Key-Identifier", id),
                ("Github-Public-Key-Signature", b"AAAA"),
            ],
            body.clone(),
        )
        .await,
    ];
    for reply in &forged {
        assert_error(reply, StatusCode::UNAUTHORIZED, "invalid_signature");
        assert!(!reply.text.contains(&live), "{reply:?}");
    }
    assert_eq!(app.verify(&live).await.status, StatusCode::OK);
    assert_eq!(events_with_action(&db, "key.revoked").await, 0);
    // Header names compare case-insensitively: the genuine report, in lowercase, works.
    let reply = send_with(
        &app,
        &[
            ("github-public-key-identifier", id),
            ("GITHUB-PUBLIC-KEY-SIGNATURE", signature.as_bytes()),
        ],
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_error(
        &app.verify(&live).await,
        StatusCode::UNAUTHORIZED,
        "key_revoked",
    );
    assert!(
        app.metric("logstitch_secret_scanning_reports_total{outcome=\"bad_signature\",provider=\"github\"}")
            .await
            >= 3.0
    );
}

#[actix_web::test]
async fn oversized_malformed_and_unknown_reports_change_nothing() {
    let partner = PartnerKey::new("k1");
    let document = KeysDocument::serving(&[&partner]).await;
    let db = TestDatabase::create().await;
    let app = scanning_app(db.clone(), &document).await;
    let org = app.create_org("Malformed").await;
    let (_, live) = app.new_project_key(&org).await;

    // Over 1 MiB: 413 before any signature is looked at (here there is none).
    let huge = vec![b' '; 1024 * 1024 + 1];
    assert_error(
        &send_with(&app, &[], huge).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    // Exactly 1 MiB is read (and then judged by its signature).
    let most = vec![b' '; 1024 * 1024];
    assert_error(
        &send_with(&app, &[], most).await,
        StatusCode::UNAUTHORIZED,
        "invalid_signature",
    );

    // Verified, but not what a report is: 400, and nothing in it acted on (the live key in
    // the first entry stays live).
    let live_entry = format!(r#"{{"token":"{live}","type":"t"}}"#);
    let mut too_many = vec![live_entry.clone()];
    too_many.extend(std::iter::repeat_n(
        r#"{"token":"x","type":"t"}"#.to_owned(),
        1000,
    ));
    for body in [
        r#"{"token":"x","type":"t"}"#.to_owned(),
        format!("[{live_entry}, {{\"token\": 5, \"type\": \"t\"}}]"),
        format!("[{live_entry}, {{\"token\": \"x\"}}]"),
        format!("[{live_entry}, \"x\"]"),
        format!("[{}]", too_many.join(",")),
        "not json".to_owned(),
    ] {
        let reply = send_report(&app, &partner, body.as_bytes()).await;
        let fields = assert_validation_error(&reply);
        assert!(!fields.is_empty(), "{reply:?}");
        assert!(!reply.text.contains(&live), "{reply:?}");
    }
    assert_eq!(app.verify(&live).await.status, StatusCode::OK);
    assert_eq!(events_with_action(&db, "key.revoked").await, 0);

    // No provider of that name: 404, whatever is sent.
    let reply = app
        .raw(
            actix_web::http::Method::POST,
            "/api/v1/secret-scanning/gitlab",
            &[],
            report_of(&[&live]),
        )
        .await;
    assert_error(&reply, StatusCode::NOT_FOUND, "not_found");
    let reply = app
        .raw(actix_web::http::Method::GET, REPORT_PATH, &[], Vec::new())
        .await;
    assert_error(&reply, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(app.verify(&live).await.status, StatusCode::OK);
}

#[actix_web::test]
async fn wire_level_tricks_are_refused_in_the_envelope_and_revoke_nothing() {
    let partner = PartnerKey::new("k1");
    let document = KeysDocument::serving(&[&partner]).await;
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db.clone(), |settings| {
        super::scanning(settings, &document);
        settings.server.body_read_timeout = Duration::from_millis(500);
    })
    .await;
    let org = app.create_org("Wire").await;
    let (_, live) = app.new_project_key(&org).await;
    let body = report_of(&[&live]);
    let genuine = partner.sign(&body);
    let id = partner.identifier.as_bytes();

    // The right key's signature, as raw r || s instead of DER; and an identifier that is not
    // ASCII; and the genuine signature under such an identifier.
    let mut refused = vec![
        send_with(
            &app,
            &[
                ("Github-Public-Key-Identifier", id),
                (
                    "Github-Public-Key-Signature",
                    partner.sign_raw(&body).as_bytes(),
                ),
            ],
            body.clone(),
        )
        .await,
        send_with(
            &app,
            &[
                ("Github-Public-Key-Identifier", b"k1\xff\xfe"),
                ("Github-Public-Key-Signature", genuine.as_bytes()),
            ],
            body.clone(),
        )
        .await,
    ];
    // On the wire: the identifier header twice, a made-up one first (the first is the one
    // read); the same with the signature header; a chunked body over 1 MiB; a body that stops
    // short of its Content-Length.
    let port = app.port;
    let wire: Vec<RawReply> = blocking({
        let (body, genuine) = (body.clone(), genuine.clone());
        move || {
            let twice_id = raw_exchange(
                port,
                "POST",
                REPORT_PATH,
                &[
                    ("Github-Public-Key-Identifier", b"made-up"),
                    ("Github-Public-Key-Identifier", b"k1"),
                    ("Github-Public-Key-Signature", genuine.as_bytes()),
                ],
                &body,
            );
            let twice_signature = raw_exchange(
                port,
                "POST",
                REPORT_PATH,
                &[
                    ("Github-Public-Key-Identifier", b"k1"),
                    ("Github-Public-Key-Signature", b"AAAA"),
                    ("Github-Public-Key-Signature", genuine.as_bytes()),
                ],
                &body,
            );
            let mut chunked = format!(
                "POST {REPORT_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\
                 Connection: close\r\n\r\n"
            )
            .into_bytes();
            for _ in 0..17 {
                chunked.extend_from_slice(b"10000\r\n");
                chunked.extend_from_slice(&[b' '; 0x10000]);
                chunked.extend_from_slice(b"\r\n");
            }
            chunked.extend_from_slice(b"0\r\n\r\n");
            let mut stream = connect(port);
            // The server may answer and close before all of it is written.
            let _ = stream.write_all(&chunked);
            let chunked = read_raw_reply(&mut stream, Duration::from_secs(10));
            let short = raw_bytes(
                port,
                format!(
                    "POST {REPORT_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\
                     Connection: close\r\n\r\n[]"
                )
                .as_bytes(),
            );
            vec![twice_id, twice_signature, chunked, short]
        }
    })
    .await;
    for reply in refused.drain(..) {
        assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_signature");
    }
    let expected = [
        (401, "invalid_signature"),
        (401, "invalid_signature"),
        (413, "payload_too_large"),
        (408, "request_timeout"),
    ];
    for (reply, (status, code)) in wire.iter().zip(expected) {
        assert_eq!(reply.status, Some(status), "{}", reply.text());
        assert_eq!(reply.json()["error"]["code"], code, "{}", reply.text());
        assert!(!reply.text().contains(&live));
    }
    assert_eq!(app.verify(&live).await.status, StatusCode::OK);
    assert_eq!(events_with_action(&db, "key.revoked").await, 0);
}

#[actix_web::test]
async fn a_sender_of_forged_reports_is_throttled_429_before_its_body_is_read() {
    const BURST: u32 = 3;
    let partner = PartnerKey::new("k1");
    let document = KeysDocument::serving(&[&partner]).await;
    let db = TestDatabase::create().await;
    let app = spawn_app_with(db.clone(), |settings| {
        super::scanning(settings, &document);
        settings.rate_limit.failed_auth_burst = std::num::NonZeroU32::new(BURST).unwrap();
        settings.rate_limit.failed_auth_per_second = 0.01;
    })
    .await;
    let org = app.create_org("Throttled").await;
    let (_, live) = app.new_project_key(&org).await;
    let body = report_of(&[&live]);
    let forged = PartnerKey::new("k1").sign(&body);
    let headers = [
        (
            "Github-Public-Key-Identifier",
            partner.identifier.as_bytes(),
        ),
        ("Github-Public-Key-Signature", forged.as_bytes()),
    ];
    for _ in 0..BURST {
        let reply = send_with(&app, &headers, body.clone()).await;
        assert_error(&reply, StatusCode::UNAUTHORIZED, "invalid_signature");
    }
    let throttled = send_with(&app, &headers, body.clone()).await;
    assert_error(&throttled, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(
        throttled.headers.contains_key("retry-after"),
        "{throttled:?}"
    );
    // Even a genuine report from that address waits its turn; nothing was revoked.
    let genuine = send_report(&app, &partner, &body).await;
    assert_error(&genuine, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(app.verify(&live).await.status, StatusCode::OK);
    assert_eq!(events_with_action(&db, "key.revoked").await, 0);
}
