//! What one attempt sends: the body (`{"type", "timestamp", "data"}`, the same bytes at every
//! attempt) and the Standard Webhooks headers, signed for this attempt's time.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue};
use serde::Serialize;
use uuid::Uuid;

use super::signing::WebhookSecret;
use crate::domain::timestamp;
use crate::store::{ClaimedDelivery, EventView, TEST_EVENT_TYPE};

/// The body and headers of one attempt.
pub struct Message {
    pub body: Bytes,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    event_type: &'a str,
    #[serde(with = "timestamp")]
    timestamp: DateTime<Utc>,
    data: Data<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    /// The audit event exactly as `GET /api/v1/audit-events` shows it (boxed: a view is far
    /// larger than the other variants).
    Event(Box<EventView<'a>>),
    /// `webhook.test`: the endpoint it was sent to.
    Test {
        #[serde(rename = "endpointId")]
        endpoint_id: Uuid,
    },
    /// An event an operator pruned from the audit trail before it was delivered: null.
    Pruned,
}

/// The body: the event's type, when it occurred and its view; a test's type, when it was
/// queued and its endpoint.
pub fn body(delivery: &ClaimedDelivery) -> Bytes {
    let (timestamp, data) = match &delivery.event {
        Some(event) => (
            event.occurred_at,
            Data::Event(Box::new(EventView::from(event))),
        ),
        None if delivery.event_type == TEST_EVENT_TYPE => (
            delivery.created_at,
            Data::Test {
                endpoint_id: delivery.endpoint_id,
            },
        ),
        None => (delivery.created_at, Data::Pruned),
    };
    let payload = Payload {
        event_type: &delivery.event_type,
        timestamp,
        data,
    };
    Bytes::from(serde_json::to_vec(&payload).expect("a payload always serializes"))
}

/// The attempt at `now_secs` (Unix seconds): `webhook-id` (the delivery's id, the same at
/// every attempt), `webhook-timestamp`, `webhook-signature` over `id.timestamp.body`, and the
/// JSON content type.
pub fn message(delivery: &ClaimedDelivery, now_secs: i64) -> Message {
    let body = body(delivery);
    let id = delivery.id.to_string();
    let secret = WebhookSecret::from_bytes(delivery.secret.clone());
    let signature = secret.sign(&id, now_secs, &body);
    let value = |text: &str| HeaderValue::from_str(text).expect("ids, digits and base64 are ASCII");
    let headers = vec![
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (HeaderName::from_static("webhook-id"), value(&id)),
        (
            HeaderName::from_static("webhook-timestamp"),
            value(&now_secs.to_string()),
        ),
        (
            HeaderName::from_static("webhook-signature"),
            value(&signature),
        ),
    ];
    Message { body, headers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditEventRecord;

    fn delivery(event: Option<AuditEventRecord>) -> ClaimedDelivery {
        ClaimedDelivery {
            id: Uuid::now_v7(),
            endpoint_id: Uuid::now_v7(),
            url: "https://example.com/hook".to_owned(),
            secret: vec![7; 32],
            event_type: "webhook.test".to_owned(),
            created_at: DateTime::<Utc>::from_timestamp_millis(1_764_590_400_123).unwrap(),
            event,
            attempts: 0,
            lease: Utc::now(),
        }
    }

    #[test]
    fn a_test_delivery_names_its_endpoint_and_when_it_was_queued() {
        let test = delivery(None);
        let body: serde_json::Value = serde_json::from_slice(&body(&test)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"type": "webhook.test", "timestamp": "2025-12-01T12:00:00.123Z",
                               "data": {"endpointId": test.endpoint_id}})
        );
    }

    #[test]
    fn an_event_pruned_before_its_delivery_is_null() {
        let mut pruned = delivery(None);
        pruned.event_type = "key.revoked".to_owned();
        let body: serde_json::Value = serde_json::from_slice(&body(&pruned)).unwrap();
        assert_eq!(body["data"], serde_json::Value::Null);
        assert_eq!(body["type"], "key.revoked");
    }

    #[test]
    fn the_signature_verifies_with_standard_webhooks() {
        let test = delivery(None);
        let now = Utc::now().timestamp();
        let sent = message(&test, now);
        let mut headers = http::HeaderMap::new();
        for (name, value) in &sent.headers {
            headers.insert(name.clone(), value.clone());
        }
        let receiver = standardwebhooks::Webhook::from_bytes(vec![7; 32]).unwrap();
        receiver.verify(&sent.body, &headers).unwrap();
        assert_eq!(headers["webhook-id"], test.id.to_string().as_str());
        assert_eq!(headers["content-type"], "application/json");
    }
}
