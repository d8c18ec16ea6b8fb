//! The one middleware in front of the router, in this order: a request id for the whole
//! exchange (task-local, and `X-Request-Id` on the answer), the path's normal form (or a 400
//! without routing), the envelope for the router's bare 405s, then one metric sample and
//! one log line. One layer rather than four: every `from_fn` layer boxes a future and clones
//! a service handle per request, and this runs on every request.

use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError};

use crate::gateway::normalize_request;
use crate::request_id::with_request_id;
use crate::routes::envelope_bare_405;
use crate::telemetry::observe;

pub async fn every_request<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    with_request_id(move || async move {
        let started = Instant::now();
        let mut response = match normalize_request(&mut req) {
            Err(refusal) => req
                .into_response(refusal.error_response())
                .map_into_right_body(),
            Ok(()) => envelope_bare_405(next.call(req).await?),
        };
        observe(&mut response, started.elapsed());
        Ok(response)
    })
    .await
}
