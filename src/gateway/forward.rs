//! Forwarding as named phases over one request context (pingora's shape): request filter
//! (authorize, rate-limit) → upstream request filter (rewrite headers) → forward → response
//! filter → logging. Bodies stream both ways. The path was normalised before routing
//! (`path.rs`), so the path forwarded is the path the route matched.

use std::net::IpAddr;
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};

use super::headers::{self, Forwarding};
use super::upstream::{RequestBody, UpstreamError, UpstreamRequest, UpstreamResponse, Upstreams};
use super::RateDecision;
use crate::auth::{authenticate, authorize, Identity};
use crate::configuration::GatewayRoute;
use crate::domain::KeyType;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{RateLimitedBy, UpstreamErrorKind};
use crate::request_id::{RequestId, REQUEST_ID_HEADER};
use crate::startup::AppState;

/// One configured route, as the phases need it.
struct Target {
    upstream: String,
    key_types: Vec<KeyType>,
    timeout: Duration,
    /// Pass the upstream's `X-LogStitch-*` response headers to the client.
    expose_logstitch_headers: bool,
    /// The metrics label: the configured prefix.
    label: String,
}

/// Registers one resource per route, in the order given, matching each prefix at a segment
/// boundary. `routes::configure` decides the order.
pub fn configure<'a>(
    cfg: &mut web::ServiceConfig,
    routes: impl IntoIterator<Item = &'a GatewayRoute>,
) {
    for route in routes {
        let target = Target {
            upstream: route.upstream.trim_end_matches('/').to_owned(),
            key_types: route
                .key_types
                .iter()
                .filter_map(|name| KeyType::from_name(name))
                .collect(),
            timeout: Duration::from_millis(route.timeout_ms),
            expose_logstitch_headers: route.expose_logstitch_headers,
            label: route.prefix.clone(),
        };
        cfg.service(
            web::resource(format!("{}{{tail:(/.*)?}}", route.prefix))
                .app_data(web::Data::new(target))
                .wrap(from_fn(authenticate))
                .route(web::route().to(forward)),
        );
    }
}

/// What the phases learn about one request, in the order they learn it.
struct ForwardCtx {
    identity: Identity,
    rate: RateDecision,
    request_id: RequestId,
    /// The TCP peer, as appended to the forwarding headers.
    peer: Option<IpAddr>,
}

async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    target: web::Data<Target>,
    upstreams: web::Data<Upstreams>,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let ctx = request_filter(&req, &target, &state, request_id)?;
    let upstream = upstream_request(&req, &target, &state, &ctx, payload);
    let response = upstreams
        .send(upstream)
        .await
        .map_err(|error| logged(error, &target, &state))?;
    Ok(response_filter(response, &target, &ctx))
}

/// Answers early: the key's type must be admitted by the route, and the key within its rate.
fn request_filter(
    req: &HttpRequest,
    target: &Target,
    state: &AppState,
    request_id: RequestId,
) -> Result<ForwardCtx, ApiError> {
    let identity = authorize(req, |key_type| target.key_types.contains(&key_type))?;
    let rate = state.key_rate_limits.take(&identity);
    if !rate.allowed {
        state.metrics.rate_limited(RateLimitedBy::Key);
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "Rate limit exceeded for this key; retry after the time in Retry-After",
        )
        .with_headers(rate.headers()));
    }
    Ok(ForwardCtx {
        identity,
        rate,
        request_id,
        peer: req.peer_addr().map(|addr| addr.ip()),
    })
}

/// The request as the upstream sees it: method, normalised path, query, headers and body as
/// the client sent them, minus `Authorization`, hop-by-hop headers, any header that reads as
/// one of ours, and (unless enabled) names with `_`; plus the caller's identity, the request
/// id and the forwarding headers.
fn upstream_request<'a>(
    req: &'a HttpRequest,
    target: &Target,
    state: &AppState,
    ctx: &ForwardCtx,
    payload: web::Payload,
) -> UpstreamRequest<'a> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let underscores = state.settings.gateway.forward_underscore_headers;
    let mut kept = Vec::with_capacity(req.headers().len());
    headers::for_each_end_to_end(req.headers(), |name, value| {
        if headers::forwards_request_header(name, underscores) {
            kept.push((name, value));
        }
    });
    let mut added: Vec<(HeaderName, HeaderValue)> = ctx
        .identity
        .headers()
        .into_iter()
        // A master key has no project: no project header rather than an empty one.
        .filter(|(_, value)| !value.is_empty())
        .collect();
    added.push((
        REQUEST_ID_HEADER,
        HeaderValue::from_str(ctx.request_id.as_str())
            .expect("request ids are valid header values"),
    ));
    if let Some(peer) = ctx.peer {
        let forwarding = Forwarding {
            peer,
            peer_is_trusted: state.settings.server.trusted_proxies.contains(peer),
        };
        added.extend(forwarding.headers(req.headers()));
    }
    UpstreamRequest {
        method: req.method(),
        url: format!("{}{}", target.upstream, path),
        headers: kept,
        added,
        body: request_body(req.headers(), payload),
        timeout: target.timeout,
    }
}

fn request_body(headers: &HeaderMap, payload: web::Payload) -> RequestBody {
    // The HTTP parser has already refused conflicting framing (two Content-Lengths, or one
    // with Transfer-Encoding), so at most one of these applies.
    match content_length(headers) {
        Some(length) => RequestBody::Streamed {
            payload,
            length: Some(length),
        },
        None if headers.contains_key(header::TRANSFER_ENCODING) => RequestBody::Streamed {
            payload,
            length: None,
        },
        None => RequestBody::Empty,
    }
}

/// The upstream's answer to the client: status and end-to-end headers, minus any
/// `X-LogStitch-*` unless the route exposes them, plus this key's rate-limit headers.
fn response_filter(response: UpstreamResponse, target: &Target, ctx: &ForwardCtx) -> HttpResponse {
    let mut answer = HttpResponse::build(response.status);
    headers::for_each_end_to_end(&response.headers, |name, value| {
        if headers::forwards_response_header(name, target.expose_logstitch_headers) {
            answer.append_header((name.clone(), value.clone()));
        }
    });
    for (name, value) in ctx.rate.headers() {
        answer.insert_header((name, value));
    }
    match response.content_length {
        Some(length) => answer.body(SizedStream::new(length, response.body)),
        None => answer.streaming(response.body),
    }
}

/// Logging phase for failures: counted per route and kind, logged with the cause.
fn logged(error: UpstreamError, target: &Target, state: &AppState) -> ApiError {
    let (kind, code, message) = match error {
        UpstreamError::Timeout(_) => (
            UpstreamErrorKind::Timeout,
            ErrorCode::UpstreamTimeout,
            "The upstream service did not answer in time",
        ),
        UpstreamError::Unavailable(_) => (
            UpstreamErrorKind::Unavailable,
            ErrorCode::UpstreamUnavailable,
            "The upstream service is unavailable",
        ),
    };
    state.metrics.upstream_error(&target.label, kind);
    tracing::warn!(route = %target.label, kind = kind.as_str(), error = %error, "upstream request failed");
    ApiError::new(code, message)
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
