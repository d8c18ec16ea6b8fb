//! Request bodies: the JSON extractor's limits and error mapping (so even a malformed body
//! answers in the envelope), and field readers that collect every problem into `details`.

use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::domain::DisplayName;
use crate::error::{ApiError, ErrorCode, FieldError};

pub fn json_config(max_body_bytes: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(max_body_bytes)
        .error_handler(move |error, _| json_error(error, max_body_bytes).into())
}

fn json_error(error: JsonPayloadError, max_body_bytes: usize) -> ApiError {
    match error {
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("Request body exceeds {max_body_bytes} bytes"),
            )
        }
        JsonPayloadError::ContentType => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "Content-Type must be application/json",
        ),
        JsonPayloadError::Deserialize(cause) => ApiError::validation(
            "Request body is not valid JSON",
            vec![FieldError::new("body", cause.to_string())],
        ),
        other => ApiError::validation("Request body could not be read", Vec::new())
            .with_cause(anyhow::anyhow!(other.to_string())),
    }
}

/// How long a client may take to send its JSON body; registered as app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

/// A body read as raw bytes, at most `limit` of them, within [`BodyReadTimeout`]: for a route
/// that must see exactly the bytes sent (a signed report). A declared length over the limit is
/// refused before anything is read; a longer body as soon as it passes the limit.
pub async fn raw_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("Request body exceeds {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let timeout = req
        .app_data::<BodyReadTimeout>()
        .map_or(Duration::from_secs(10), |timeout| timeout.0);
    let read = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|error| {
                ApiError::validation("Request body could not be read", Vec::new())
                    .with_cause(anyhow::anyhow!(error.to_string()))
            })?;
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| {
        ApiError::new(
            ErrorCode::RequestTimeout,
            format!(
                "The request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )
    })?
}

/// A body that may be left out: a request without one (no `Content-Length` and no
/// `Transfer-Encoding`, or `Content-Length: 0`) is None; any other body is read as a
/// [`JsonBody`], with its rules (JSON content type, size limit, read timeout).
pub struct OptionalJsonBody(pub Option<Value>);

impl FromRequest for OptionalJsonBody {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<OptionalJsonBody, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let headers = req.headers();
        let length = headers.get(CONTENT_LENGTH).map(|value| value.as_bytes());
        let bodiless = match length {
            Some(length) => length == b"0",
            None => !headers.contains_key(TRANSFER_ENCODING),
        };
        if bodiless {
            return Box::pin(async { Ok(OptionalJsonBody(None)) });
        }
        let body = JsonBody::from_request(req, payload);
        Box::pin(async move { Ok(OptionalJsonBody(Some(body.await?.0))) })
    }
}

/// A JSON body read within [`BodyReadTimeout`], so a client trickling bytes can't hold a
/// worker's attention forever. Errors are the JSON extractor's (see [`json_config`]).
pub struct JsonBody(pub Value);

impl FromRequest for JsonBody {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<JsonBody, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<BodyReadTimeout>()
            .map_or(Duration::from_secs(10), |timeout| timeout.0);
        let json = web::Json::<Value>::from_request(req, payload);
        Box::pin(async move {
            match tokio::time::timeout(limit, json).await {
                Ok(result) => result.map(|json| JsonBody(json.into_inner())),
                Err(_) => Err(ApiError::new(
                    ErrorCode::RequestTimeout,
                    format!(
                        "The request body did not arrive within {} ms",
                        limit.as_millis()
                    ),
                )
                .into()),
            }
        })
    }
}

impl JsonBody {
    /// A body whose only field is `name` (projects, organizations).
    pub fn name(self) -> Result<DisplayName, ApiError> {
        let mut fields = Fields::of(self.0)?;
        let name = fields.required("name", DisplayName::parse);
        fields.finish()?;
        Ok(name.expect("finish() reports a missing name"))
    }
}

/// A JSON object body, read field by field. Problems accumulate; `finish` reports them all.
pub struct Fields {
    object: Map<String, Value>,
    problems: Vec<FieldError>,
}

impl Fields {
    pub fn of(body: Value) -> Result<Fields, ApiError> {
        match body {
            Value::Object(object) => Ok(Fields {
                object,
                problems: Vec::new(),
            }),
            _ => Err(ApiError::validation(
                "Request body must be a JSON object",
                vec![FieldError::new("body", "must be a JSON object")],
            )),
        }
    }

    /// A required string field, turned into a domain value by `parse`.
    pub fn required<T>(
        &mut self,
        field: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.string(field, parse, true)
    }

    /// An optional string field: absent or null is None; anything else must parse.
    pub fn optional<T>(
        &mut self,
        field: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        self.string(field, parse, false)
    }

    fn string<T>(
        &mut self,
        field: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
        required: bool,
    ) -> Option<T> {
        let problem = match self.object.get(field) {
            None | Some(Value::Null) if !required => return None,
            None | Some(Value::Null) => "is required".to_owned(),
            Some(Value::String(raw)) => match parse(raw) {
                Ok(value) => return Some(value),
                Err(problem) => problem,
            },
            Some(_) => "must be a string".to_owned(),
        };
        self.problems.push(FieldError::new(field, problem));
        None
    }

    /// An optional integer field within `range`: absent or null is None. `3600.0`, `"3600"`
    /// and out-of-range values are problems, not guesses.
    pub fn optional_integer(
        &mut self,
        field: &'static str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Option<u64> {
        let in_range = format!(
            "must be an integer from {} to {}",
            range.start(),
            range.end()
        );
        let problem = match self.object.get(field) {
            None | Some(Value::Null) => return None,
            Some(Value::Number(number)) => match number.as_u64() {
                Some(value) if range.contains(&value) => return Some(value),
                _ => in_range,
            },
            Some(_) => in_range,
        };
        self.problems.push(FieldError::new(field, problem));
        None
    }

    /// A field as sent: None when absent, `Some(Value::Null)` when null.
    pub fn value(&self, field: &str) -> Option<&Value> {
        self.object.get(field)
    }

    /// Whether the body names any of `fields` (null included).
    pub fn names_any(&self, fields: &[&str]) -> bool {
        fields.iter().any(|field| self.object.contains_key(*field))
    }

    /// Records a problem with `field` (for readers this type doesn't have).
    pub fn refuse(
        &mut self,
        field: impl Into<std::borrow::Cow<'static, str>>,
        problem: impl Into<std::borrow::Cow<'static, str>>,
    ) {
        self.problems.push(FieldError::new(field, problem));
    }

    /// Ok when every field read so far was valid.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation("Invalid request body", self.problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn collects_every_problem() {
        let mut fields = Fields::of(json!({"a": 1, "c": "ok"})).unwrap();
        assert!(fields.required("a", |s| Ok(s.to_owned())).is_none());
        assert!(fields.required("b", |s| Ok(s.to_owned())).is_none());
        assert_eq!(
            fields.required("c", |s| Ok(s.to_owned())).as_deref(),
            Some("ok")
        );
        let error = fields.finish().unwrap_err();
        assert_eq!(error.code(), ErrorCode::ValidationError);
        assert!(format!("{error:?}").contains("Invalid request body"));
    }

    #[test]
    fn optional_fields_may_be_absent_or_null_but_not_wrong() {
        let mut fields =
            Fields::of(json!({"n": null, "s": 3, "i": 3600.5, "j": -1, "k": 7})).unwrap();
        assert!(fields.optional("absent", |s| Ok(s.to_owned())).is_none());
        assert!(fields.optional("n", |s| Ok(s.to_owned())).is_none());
        assert!(fields.optional_integer("absent", 0..=10).is_none());
        assert_eq!(fields.optional_integer("k", 0..=10), Some(7));
        let problems = fields.problems.len();
        assert_eq!(problems, 0);
        assert!(fields.optional("s", |s| Ok(s.to_owned())).is_none());
        assert!(fields.optional_integer("i", 0..=10_000).is_none());
        assert!(fields.optional_integer("j", 0..=10).is_none());
        assert!(fields.optional_integer("k", 0..=5).is_none());
        let fields_in_error: Vec<_> = fields.problems.iter().map(|p| p.field.clone()).collect();
        assert_eq!(fields_in_error, ["s", "i", "j", "k"]);
    }

    #[test]
    fn refuses_non_objects() {
        for body in [json!([]), json!("x"), json!(1), json!(null)] {
            assert!(Fields::of(body).is_err());
        }
    }
}
