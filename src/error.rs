//! The error envelope every endpoint answers with, and the one table of stable codes.
//!
//! `{"error": {"code", "message", "details"?}, "request_id"}`. `details` is present for
//! validation errors and for refusals that name fields (a PATCH's escalations). Internal
//! causes are logged, never shown to the client.

use std::borrow::Cow;
use std::fmt;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::request_id::RequestId;

/// Declares `ErrorCode`, its `ALL` list and its `spec` table from one list, so a code can't be
/// added to one and forgotten in another.
macro_rules! error_codes {
    ($($variant:ident => ($code:literal, $status:ident)),* $(,)?) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode {
            $($variant),*
        }

        impl ErrorCode {
            /// Every code, in the table's order (openapi.json's `ErrorCode` enum is checked
            /// against it).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The table: stable machine-readable code and HTTP status, in one place.
            pub fn spec(self) -> (&'static str, StatusCode) {
                match self {
                    $(ErrorCode::$variant => ($code, StatusCode::$status)),*
                }
            }
        }
    };
}

error_codes! {
    ValidationError => ("validation_error", BAD_REQUEST),
    Unauthorized => ("unauthorized", UNAUTHORIZED),
    InvalidApiKey => ("invalid_api_key", UNAUTHORIZED),
    KeyRevoked => ("key_revoked", UNAUTHORIZED),
    KeyExpired => ("key_expired", UNAUTHORIZED),
    KeyDisabled => ("key_disabled", UNAUTHORIZED),
    InvalidSignature => ("invalid_signature", UNAUTHORIZED),
    Forbidden => ("forbidden", FORBIDDEN),
    InsufficientScope => ("insufficient_scope", FORBIDDEN),
    NotFound => ("not_found", NOT_FOUND),
    MethodNotAllowed => ("method_not_allowed", METHOD_NOT_ALLOWED),
    Conflict => ("conflict", CONFLICT),
    PayloadTooLarge => ("payload_too_large", PAYLOAD_TOO_LARGE),
    UnsupportedMediaType => ("unsupported_media_type", UNSUPPORTED_MEDIA_TYPE),
    RequestTimeout => ("request_timeout", REQUEST_TIMEOUT),
    RateLimited => ("rate_limited", TOO_MANY_REQUESTS),
    InternalError => ("internal_error", INTERNAL_SERVER_ERROR),
    UpstreamUnavailable => ("upstream_unavailable", BAD_GATEWAY),
    ServiceUnavailable => ("service_unavailable", SERVICE_UNAVAILABLE),
    UpstreamTimeout => ("upstream_timeout", GATEWAY_TIMEOUT),
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        self.spec().0
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: Cow<'static, str>,
    pub message: Cow<'static, str>,
}

impl FieldError {
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An error on its way to the client. `cause` is what went wrong inside (logged, not shown).
pub struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    details: Vec<FieldError>,
    /// Extra response headers (Retry-After, RateLimit-*).
    headers: Vec<(header::HeaderName, header::HeaderValue)>,
    cause: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Vec::new(),
            headers: Vec::new(),
            cause: None,
        }
    }

    /// The same error, with a `details` entry per field at fault.
    pub fn with_details(mut self, details: Vec<FieldError>) -> Self {
        self.details = details;
        self
    }

    pub fn validation(message: impl Into<Cow<'static, str>>, details: Vec<FieldError>) -> Self {
        ApiError {
            details,
            ..ApiError::new(ErrorCode::ValidationError, message)
        }
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        ApiError::new(ErrorCode::NotFound, message)
    }

    pub fn with_headers(
        mut self,
        headers: impl IntoIterator<Item = (header::HeaderName, header::HeaderValue)>,
    ) -> Self {
        self.headers.extend(headers);
        self
    }

    pub fn with_cause(mut self, cause: impl Into<anyhow::Error>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn details(&self) -> &[FieldError] {
        &self.details
    }
}

impl fmt::Debug for ApiError {
    // Debug carries the whole cause chain, for the log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause:#}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
    request_id: RequestId,
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    details: &'a [FieldError],
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.spec().1
    }

    fn error_response(&self) -> HttpResponse {
        let (code, status) = self.code.spec();
        if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
        let mut response = HttpResponse::build(status);
        if self.code == ErrorCode::Unauthorized || self.code == ErrorCode::InvalidApiKey {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        for (name, value) in &self.headers {
            response.insert_header((name.clone(), value.clone()));
        }
        response.json(Envelope {
            error: Body {
                code,
                message: &self.message,
                details: &self.details,
            },
            request_id: RequestId::current(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_their_documented_statuses() {
        assert_eq!(
            ErrorCode::ValidationError.spec(),
            ("validation_error", StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            ErrorCode::KeyRevoked.spec(),
            ("key_revoked", StatusCode::UNAUTHORIZED)
        );
        assert_eq!(ErrorCode::Conflict.spec().1, StatusCode::CONFLICT);
        assert_eq!(
            ErrorCode::ServiceUnavailable.as_str(),
            "service_unavailable"
        );
    }

    #[test]
    fn every_code_is_listed_once() {
        let names: std::collections::HashSet<_> =
            ErrorCode::ALL.iter().map(|code| code.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "a code is listed twice");
    }

    #[test]
    fn debug_shows_the_cause_but_display_does_not() {
        let error = ApiError::new(ErrorCode::InternalError, "Unexpected error")
            .with_cause(anyhow::anyhow!("connection reset"));
        assert!(format!("{error:?}").contains("connection reset"));
        assert_eq!(error.to_string(), "Unexpected error");
    }
}
