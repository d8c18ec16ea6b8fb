//! Forwarding, as named phases over one request: authorize → rate-limit → build the upstream
//! request (rewrite headers) → forward → answer (and record errors). Bodies stream both ways.

use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse};
use awc::error::SendRequestError;

use crate::auth::{authenticate, authorize, Identity};
use crate::configuration::GatewayRoute;
use crate::domain::KeyType;
use crate::error::{ApiError, ErrorCode};
use crate::request_id::{RequestId, REQUEST_ID_HEADER};
use crate::startup::AppState;

/// One configured route, as the handler needs it.
struct Target {
    upstream: String,
    key_types: Vec<KeyType>,
    timeout: Duration,
    /// The metrics label: the configured prefix.
    label: String,
}

/// The HTTP client for upstreams; one per worker (it is not `Send`), pooling connections.
pub struct Upstreams(pub awc::Client);

impl Upstreams {
    pub fn new() -> Upstreams {
        Upstreams(
            awc::Client::builder()
                // Each route sets its own timeout; this only bounds connecting.
                .timeout(Duration::from_secs(3600))
                .disable_redirects()
                .finish(),
        )
    }
}

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams::new()
    }
}

/// Registers one resource per route, matching the prefix at a segment boundary. Must be
/// configured before `/api/v1` so a prefix under it is found first.
pub fn configure(cfg: &mut web::ServiceConfig, routes: &[GatewayRoute]) {
    for route in routes {
        let target = Target {
            upstream: route.upstream.trim_end_matches('/').to_owned(),
            key_types: route
                .key_types
                .iter()
                .filter_map(|name| KeyType::from_name(name))
                .collect(),
            timeout: Duration::from_millis(route.timeout_ms),
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

async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    target: web::Data<Target>,
    upstreams: web::Data<Upstreams>,
    state: web::Data<AppState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let identity = authorize(&req, |key_type| target.key_types.contains(&key_type))?;
    let decision = state.key_rate_limits.take(&identity);
    if !decision.allowed {
        state.metrics.rate_limited.with_label_values(&["key"]).inc();
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            "Rate limit exceeded for this key; retry after the time in Retry-After",
        )
        .with_headers(decision.headers()));
    }

    let upstream = upstream_request(&req, &target, &upstreams.0, &identity, request_id);
    let sent = match content_length(req.headers()) {
        Some(length) => upstream.send_body(SizedStream::new(length, payload)).await,
        None if has_body(req.headers()) => upstream.send_stream(payload).await,
        None => upstream.send().await,
    };
    let response = sent.map_err(|error| upstream_error(error, &target, &state))?;

    let mut answer = HttpResponse::build(response.status());
    copy_end_to_end_headers(response.headers(), |name, value| {
        answer.append_header((name.clone(), value.clone()));
    });
    for (name, value) in decision.headers() {
        answer.insert_header((name, value));
    }
    Ok(match content_length(response.headers()) {
        Some(length) => answer.body(SizedStream::new(length, response)),
        None => answer.streaming(response),
    })
}

/// The request as the upstream sees it: method, path, query, headers and body as the client
/// sent them, minus `Authorization`, client-sent `X-LogStitch-*` and hop-by-hop headers, plus
/// the caller's identity and the request id.
fn upstream_request(
    req: &HttpRequest,
    target: &Target,
    client: &awc::Client,
    identity: &Identity,
    request_id: RequestId,
) -> awc::ClientRequest {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut upstream = client
        .request(req.method().clone(), format!("{}{}", target.upstream, path))
        .timeout(target.timeout)
        .no_decompress();
    copy_end_to_end_headers(req.headers(), |name, value| {
        let forbidden = name == header::AUTHORIZATION
            || name == REQUEST_ID_HEADER
            || name.as_str().starts_with("x-logstitch-");
        if !forbidden {
            upstream.headers_mut().append(name.clone(), value.clone());
        }
    });
    let headers = upstream.headers_mut();
    for (name, value) in identity.headers() {
        // A master key has no project: no project header rather than an empty one.
        if !value.is_empty() {
            headers.insert(name, value);
        }
    }
    headers.insert(
        REQUEST_ID_HEADER,
        HeaderValue::from_str(request_id.as_str()).expect("request ids are valid header values"),
    );
    upstream
}

/// Calls `keep` for every header except hop-by-hop ones (RFC 9110 §7.6.1: `Connection`, the
/// fields it names, and the classic list) and the framing headers the body type sets itself.
fn copy_end_to_end_headers(headers: &HeaderMap, mut keep: impl FnMut(&HeaderName, &HeaderValue)) {
    let named_by_connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in headers {
        let hop_by_hop = matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "content-length"
        ) || named_by_connection.iter().any(|n| n == name.as_str());
        if !hop_by_hop {
            keep(name, value);
        }
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
}

fn upstream_error(error: SendRequestError, target: &Target, state: &AppState) -> ApiError {
    let (kind, code, message) = match error {
        SendRequestError::Timeout => (
            "timeout",
            ErrorCode::UpstreamTimeout,
            "The upstream service did not answer in time",
        ),
        _ => (
            "unavailable",
            ErrorCode::UpstreamUnavailable,
            "The upstream service is unavailable",
        ),
    };
    state
        .metrics
        .gateway_upstream_errors
        .with_label_values(&[&target.label, kind])
        .inc();
    tracing::warn!(route = %target.label, kind, error = %error, "upstream request failed");
    ApiError::new(code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
            ("accept", "application/json"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let mut kept = Vec::new();
        copy_end_to_end_headers(&headers, |name, _| kept.push(name.as_str().to_owned()));
        kept.sort();
        assert_eq!(kept, ["accept", "x-kept"]);
    }
}
