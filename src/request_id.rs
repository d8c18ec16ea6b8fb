//! Every response carries a `request_id` ("req_" + 20 base62 characters) in its JSON body and
//! the same value in `X-Request-Id`. The middleware makes one per request and keeps it in a
//! task-local, so error responses built deep inside extractors can still include it.

use std::fmt;
use std::future::Future;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::InternalError;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::Error;
use rand::Rng;
use serde::{Serialize, Serializer};

pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static CURRENT: RequestId;
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 24]);

impl RequestId {
    /// Two random 64-bit words, ten base62 digits each: two draws from the thread's generator
    /// instead of one rejection-sampled draw per character. 62^10 < 2^64, so the first nine
    /// digits of each ten are uniform to within 10^-15 and the tenth to within 5 %: well under
    /// a bit of the id's 119 (ids are unique labels, not secrets).
    pub fn generate() -> RequestId {
        const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut bytes = *b"req_00000000000000000000";
        let mut rng = rand::thread_rng();
        for half in bytes[4..].chunks_exact_mut(10) {
            let mut word: u64 = rng.gen();
            for byte in half {
                *byte = DIGITS[(word % 62) as usize];
                word /= 62;
            }
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
    with_request_id(move || next.call(req)).await
}

/// Runs the exchange `serve` starts inside a fresh request id's scope, and stamps the id on
/// whatever it answers. An error that escapes is rendered here, inside the scope, so its
/// envelope carries this id too.
pub async fn with_request_id<B, F>(serve: impl FnOnce() -> F) -> Result<ServiceResponse<B>, Error>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    let id = RequestId::generate();
    let result = CURRENT
        .scope(id, async move {
            serve().await.map_err(|error| {
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

/// Handlers take the id as an argument to put it in their success bodies. They run inside
/// the middleware's scope, so the task-local has it; nothing is stored per request.
impl actix_web::FromRequest for RequestId {
    type Error = Error;
    type Future = std::future::Ready<Result<RequestId, Error>>;

    fn from_request(_: &actix_web::HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(Ok(RequestId::current()))
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

    #[test]
    fn every_digit_is_used_in_every_position() {
        let mut seen = vec![std::collections::HashSet::new(); 20];
        for _ in 0..5_000 {
            let id = RequestId::generate();
            for (position, byte) in id.as_str()[4..].bytes().enumerate() {
                seen[position].insert(byte);
            }
        }
        for (position, digits) in seen.iter().enumerate() {
            assert_eq!(digits.len(), 62, "position {position}");
        }
    }
}
