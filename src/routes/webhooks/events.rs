//! The create body, read: `url` (absolute `https://`, or `http://` when allowed, at most 2048
//! characters) and `events` (a non-empty list of event types, or `["*"]` alone).

use serde_json::Value;

use crate::audit::WEBHOOK_EVENT_TYPES;
use crate::error::ApiError;
use crate::outbound::{parse_url, TargetUrl};
use crate::routes::body::Fields;

/// Every event type.
pub(super) const ALL_EVENTS: &str = "*";

pub(super) struct CreateEndpointRequest {
    pub(super) url: TargetUrl,
    /// Each at most once, in the order given; or `["*"]`.
    pub(super) events: Vec<String>,
}

impl CreateEndpointRequest {
    pub(super) fn parse(body: Value, allow_http: bool) -> Result<CreateEndpointRequest, ApiError> {
        let mut fields = Fields::of(body)?;
        let url = fields.required("url", |raw| {
            parse_url(raw, allow_http).map_err(str::to_owned)
        });
        let events = match parse_events(fields.value("events")) {
            Ok(events) => Some(events),
            Err(problem) => {
                fields.refuse("events", problem);
                None
            }
        };
        fields.finish()?;
        match (url, events) {
            (Some(url), Some(events)) => Ok(CreateEndpointRequest { url, events }),
            _ => unreachable!("finish() reports any missing or bad field"),
        }
    }
}

fn parse_events(value: Option<&Value>) -> Result<Vec<String>, String> {
    let listed = || {
        format!(
            "must be a non-empty list of event types ({}), or [\"*\"] alone",
            WEBHOOK_EVENT_TYPES.join(", ")
        )
    };
    let items = match value {
        None | Some(Value::Null) => return Err("is required".to_owned()),
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(_) => return Err(listed()),
    };
    let mut events: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let event = match item.as_str() {
            Some(event) if event == ALL_EVENTS || WEBHOOK_EVENT_TYPES.contains(&event) => event,
            Some(event) => return Err(format!("{event:?} is not an event type; {}", listed())),
            None => return Err(listed()),
        };
        if !events.iter().any(|seen| seen == event) {
            events.push(event.to_owned());
        }
    }
    if events.len() > 1 && events.iter().any(|event| event == ALL_EVENTS) {
        return Err("[\"*\"] must be alone: it already means every event type".to_owned());
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_known_types_or_a_lone_star() {
        let parse = |value: Value| parse_events(Some(&value));
        assert_eq!(parse(json!(["*"])).unwrap(), ["*"]);
        assert_eq!(
            parse(json!(["key.revoked", "key.created", "key.revoked"])).unwrap(),
            ["key.revoked", "key.created"]
        );
        assert_eq!(parse(json!(["key.leaked"])).unwrap(), ["key.leaked"]);
        for bad in [
            json!([]),
            json!("key.created"),
            json!(["key.deleted"]),
            json!(["*", "key.created"]),
            json!([1]),
            json!(["webhook.test"]),
            json!(["webhook_endpoint.created"]),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad} accepted");
        }
        assert!(parse_events(None).is_err());
    }

    #[test]
    fn http_urls_need_the_setting() {
        assert!(CreateEndpointRequest::parse(
            json!({"url": "http://example.com/hook", "events": ["*"]}),
            false
        )
        .is_err());
        assert!(CreateEndpointRequest::parse(
            json!({"url": "http://example.com/hook", "events": ["*"]}),
            true
        )
        .is_ok());
    }
}
