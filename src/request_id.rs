//! Every response carries a `request_id` ("req_" + 20 base62 characters) in its JSON body and
//! the same value in `X-Request-Id`. The middleware makes one per request and keeps it in a
//! task-local, so error responses built deep inside extractors can still include it.

use std::fmt;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use rand::{distributions::Alphanumeric, Rng};
use serde::{Serialize, Serializer};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: RequestId;
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 24]);

impl RequestId {
    pub fn generate() -> RequestId {
        let mut bytes = *b"req_00000000000000000000";
        let mut rng = rand::thread_rng();
        for byte in bytes[4..].iter_mut() {
            *byte = rng.sample(Alphanumeric);
        }
        RequestId(bytes)
    }

    /// The id of the request being served; outside a request (never expected), a fresh one.
    pub fn current() -> RequestId {
        CURRENT
            .try_with(|id| *id)
            .unwrap_or_else(|_| RequestId::generate())
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("request ids are ASCII")
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Middleware: assign the id, serve the request inside its scope, stamp the header.
pub async fn assign_request_id(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let id = RequestId::generate();
    req.extensions_mut().insert(id);
    // An error that escapes the inner services is rendered here, inside the scope, so its
    // envelope carries this id too.
    let result = CURRENT
        .scope(id, async move {
            next.call(req).await.map_err(|error| {
                let response = error.error_response();
                (error.to_string(), response)
            })
        })
        .await;
    let header = HeaderValue::from_str(id.as_str()).expect("request ids are valid header values");
    match result {
        Ok(mut response) => {
            response.headers_mut().insert(REQUEST_ID_HEADER, header);
            Ok(response)
        }
        Err((message, mut response)) => {
            response.headers_mut().insert(REQUEST_ID_HEADER, header);
            Err(InternalError::from_response(message, response).into())
        }
    }
}

/// Handlers take the id as an argument to put it in their success bodies.
impl actix_web::FromRequest for RequestId {
    type Error = Error;
    type Future = std::future::Ready<Result<RequestId, Error>>;

    fn from_request(req: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let id = req
            .extensions()
            .get::<RequestId>()
            .copied()
            .unwrap_or_else(RequestId::current);
        std::future::ready(Ok(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_form() {
        let id = RequestId::generate();
        assert!(id.as_str().starts_with("req_"));
        assert_eq!(id.as_str().len(), 24);
        assert!(id.as_str()[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(RequestId::generate(), id);
    }
}
