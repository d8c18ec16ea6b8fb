//! Request bodies: the JSON extractor's limits and error mapping (so even a malformed body
//! answers in the envelope), and field readers that collect every problem into `details`.

use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
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
        let problem = match self.object.get(field) {
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
    fn refuses_non_objects() {
        for body in [json!([]), json!("x"), json!(1), json!(null)] {
            assert!(Fields::of(body).is_err());
        }
    }
}
