//! What every route module answers with: list bodies, the enveloped 405 and the unknown route.

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::ServiceResponse;
use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::error::{ApiError, ErrorCode};
use crate::request_id::RequestId;

/// A 200 list answer, `{"<field>": [...], "request_id": "req_…"}`: one shape for every list.
pub(crate) fn listed<V: serde::Serialize>(
    field: &'static str,
    items: Vec<V>,
    request_id: RequestId,
) -> HttpResponse {
    struct Listed<V> {
        field: &'static str,
        items: Vec<V>,
        request_id: RequestId,
    }
    impl<V: serde::Serialize> serde::Serialize for Listed<V> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut map = serializer.serialize_map(Some(2))?;
            map.serialize_entry(self.field, &self.items)?;
            map.serialize_entry("request_id", &self.request_id)?;
            map.end()
        }
    }
    HttpResponse::Ok().json(Listed {
        field,
        items,
        request_id,
    })
}

/// A 405 that the router made (no body, `Allow` listing the route's methods) gets the error
/// envelope too, keeping its headers (`Allow` above all) — so every answer has one.
pub fn envelope_bare_405<B>(response: ServiceResponse<B>) -> ServiceResponse<EitherBody<B>>
where
    B: MessageBody,
{
    let bare = response.status() == StatusCode::METHOD_NOT_ALLOWED
        && matches!(
            response.response().body().size(),
            BodySize::None | BodySize::Sized(0)
        );
    if !bare {
        return response.map_into_left_body();
    }
    let error = ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "Method {} is not allowed on this route",
            response.request().method()
        ),
    );
    let (request, bare) = response.into_parts();
    let mut enveloped = error.error_response();
    // Its headers but those that describe a body: the envelope is JSON, so a bare 405's
    // `Content-Type` or `Content-Encoding` (an upstream's, say) would lie about it.
    let describes_body = |name: &header::HeaderName| {
        name.as_str().starts_with("content-") || name == header::TRANSFER_ENCODING
    };
    for (name, value) in bare.headers() {
        if !describes_body(name) {
            enveloped.headers_mut().append(name.clone(), value.clone());
        }
    }
    ServiceResponse::new(request, enveloped).map_into_right_body()
}

/// Unknown routes.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found("No such route"))
}
