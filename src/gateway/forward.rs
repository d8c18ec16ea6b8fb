//! Forwarding as named phases over one request context (pingora's shape): request filter
//! (authorize, rate-limit) → upstream request filter (rewrite headers) → forward → response
//! filter → logging. Bodies stream both ways. The path was normalised before routing
//! (`path.rs`), so the path forwarded is the path the route matched.

use std::net::IpAddr;

use actix_web::body::SizedStream;
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::from_fn;
use actix_web::{web, HttpRequest, HttpResponse, HttpResponseBuilder};

use super::headers::{self, Forwarding};
use super::upstream::{RequestBody, UpstreamError, UpstreamRequest, Upstreams};
use crate::access::{authenticate, authorize};
use crate::configuration::{GatewayRoute, Settings};
use crate::domain::Identity;
use crate::error::{ApiError, ErrorCode};
use crate::metrics::{counted_resource, RateLimitedBy, UpstreamErrorKind};
use crate::rate_limit::RateDecision;
use crate::request_id::{RequestId, REQUEST_ID_HEADER};
use crate::state::AppState;

/// One configured route, as the phases need it: the route, its upstream's base without a
/// trailing `/`.
struct Target {
    upstream: String,
    route: GatewayRoute,
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
            route: route.clone(),
        };
        cfg.service(
            counted_resource(&format!("{}{{tail:(/.*)?}}", route.prefix))
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
    let ctx = request_filter(&req, &target, &state, request_id).await?;
    let mut upstream = upstream_request(&req, &target, &state.settings, &ctx);
    upstream.body = request_body(req.headers(), payload);
    let response = upstreams
        .send(upstream)
        .await
        .map_err(|error| logged(error, &target, &state))?;
    if response.status.is_informational() {
        // We never ask to upgrade (Upgrade is hop-by-hop): a 101 or other 1xx as the final
        // answer would let a front proxy turn this connection into a tunnel.
        let status = response.status;
        return Err(logged(
            UpstreamError::Unavailable(format!("upstream answered {status}")),
            &target,
            &state,
        ));
    }
    let mut answer = response_filter(response.status, &response.headers, &target, &ctx);
    // These answers have no body whatever Content-Length says (RFC 9110 §6.4.1): HEAD keeps
    // the upstream's length as a header; 204 and 304 end at their head.
    let bodiless = matches!(
        response.status,
        StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
    );
    Ok(match response.content_length {
        _ if bodiless => answer.finish(),
        Some(length) if req.method() == Method::HEAD => answer.body(SizedStream::new(
            length,
            futures_util::stream::empty::<Result<_, std::io::Error>>(),
        )),
        Some(length) => answer.body(SizedStream::new(length, response.body)),
        None => answer.streaming(response.body),
    })
}

/// Answers early: the key's type must be admitted by the route, the key must hold the scope
/// the route needs for this method, and be within its rate (a refused request spends no
/// token).
/// With `on_redis_error = "deny"`, 503 while Redis can't count.
async fn request_filter(
    req: &HttpRequest,
    target: &Target,
    state: &AppState,
    request_id: RequestId,
) -> Result<ForwardCtx, ApiError> {
    let identity = authorize(
        req,
        |key_type| target.route.key_types.contains(&key_type),
        target.route.scope_for(req.method().as_str()),
    )?;
    let rate = state.key_rate_limits.take(&identity).await.map_err(|_| {
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            "Rate limits cannot be checked right now; retry shortly",
        )
        .with_headers([(header::RETRY_AFTER, HeaderValue::from_static("1"))])
    })?;
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
/// id and the forwarding headers. The body is attached by the caller.
fn upstream_request<'a>(
    req: &'a HttpRequest,
    target: &Target,
    settings: &Settings,
    ctx: &ForwardCtx,
) -> UpstreamRequest<'a> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let underscores = settings.gateway.forward_underscore_headers;
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
            peer_is_trusted: settings.server.trusted_proxies.contains(peer),
        };
        added.extend(forwarding.headers(req.headers()));
    }
    UpstreamRequest {
        method: req.method(),
        url: format!("{}{}", target.upstream, path),
        headers: kept,
        added,
        body: RequestBody::Empty,
        timeout: target.route.timeout,
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

/// The head of the upstream's answer to the client: status and end-to-end headers, minus any
/// `X-LogStitch-*` unless the route exposes them, plus this key's rate-limit headers.
fn response_filter(
    status: StatusCode,
    upstream_headers: &HeaderMap,
    target: &Target,
    ctx: &ForwardCtx,
) -> HttpResponseBuilder {
    let mut answer = HttpResponse::build(status);
    headers::for_each_end_to_end(upstream_headers, |name, value| {
        if headers::forwards_response_header(name, target.route.expose_logstitch_headers) {
            answer.append_header((name.clone(), value.clone()));
        }
    });
    for (name, value) in ctx.rate.headers() {
        answer.insert_header((name, value));
    }
    answer
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
    state.metrics.upstream_error(&target.route.prefix, kind);
    tracing::warn!(route = %target.route.prefix, kind = kind.as_str(), error = %error, "upstream request failed");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{KeyId, KeyType, OrgId, ProjectId};
    use actix_web::test::TestRequest;
    use std::time::Duration;

    fn target(expose: bool) -> Target {
        Target {
            upstream: "http://upstream.test".to_owned(),
            route: GatewayRoute {
                prefix: "/api/v1/events".to_owned(),
                upstream: "http://upstream.test".to_owned(),
                key_types: vec![KeyType::Project],
                timeout: Duration::from_secs(1),
                expose_logstitch_headers: expose,
                scope: None,
                method_scopes: Default::default(),
            },
        }
    }

    fn ctx() -> ForwardCtx {
        ForwardCtx {
            identity: Identity {
                key_id: KeyId::new(),
                organization_id: OrgId::new(),
                project_id: Some(ProjectId::new()),
                key_type: KeyType::Project,
                expires_at: None,
                scopes: crate::domain::Scopes::All,
                enabled: true,
                rate_limit: None,
            },
            rate: RateDecision {
                allowed: true,
                limit: 10,
                remaining: 9,
                reset_secs: 1,
                retry_after_secs: 0,
            },
            request_id: RequestId::generate(),
            peer: Some("192.0.2.1".parse().unwrap()),
        }
    }

    fn names(pairs: impl IntoIterator<Item = String>) -> Vec<String> {
        let mut names: Vec<String> = pairs.into_iter().collect();
        names.sort();
        names
    }

    #[test]
    fn the_upstream_request_carries_the_normal_path_our_headers_and_no_spoofs() {
        let req = TestRequest::get()
            .uri("/api/v1/events/x?q=1")
            .insert_header(("authorization", "Bearer pk_secret"))
            .insert_header(("x_logstitch_project_id", "spoofed"))
            .insert_header(("x-logstitch-key-type", "master"))
            .insert_header(("x_custom", "dropped"))
            .insert_header(("x-custom", "kept"))
            .insert_header(("connection", "close"))
            .to_http_request();
        let ctx = ctx();
        let settings = Settings::defaults().unwrap();
        let upstream = upstream_request(&req, &target(false), &settings, &ctx);
        assert_eq!(upstream.url, "http://upstream.test/api/v1/events/x?q=1");
        let kept = names(upstream.headers.iter().map(|(n, _)| n.to_string()));
        assert_eq!(kept, ["x-custom"]);
        let added = names(upstream.added.iter().map(|(n, _)| n.to_string()));
        assert_eq!(
            added,
            [
                "forwarded",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-logstitch-key-id",
                "x-logstitch-key-type",
                "x-logstitch-organization-id",
                "x-logstitch-project-id",
                "x-logstitch-scopes",
                "x-request-id",
            ]
        );
    }

    #[test]
    fn the_response_keeps_end_to_end_headers_and_adds_the_rate_headers() {
        let mut upstream = HeaderMap::new();
        for (name, value) in [
            ("x-upstream", "yes"),
            ("x-logstitch-internal", "secret"),
            ("connection", "keep-alive"),
        ] {
            upstream.append(
                header::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        for (expose, expected) in [
            (
                false,
                vec![
                    "ratelimit-limit",
                    "ratelimit-remaining",
                    "ratelimit-reset",
                    "x-upstream",
                ],
            ),
            (
                true,
                vec![
                    "ratelimit-limit",
                    "ratelimit-remaining",
                    "ratelimit-reset",
                    "x-logstitch-internal",
                    "x-upstream",
                ],
            ),
        ] {
            let response =
                response_filter(StatusCode::ACCEPTED, &upstream, &target(expose), &ctx()).finish();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
            let got = names(response.headers().keys().map(|n| n.to_string()));
            assert_eq!(got, expected, "expose = {expose}");
        }
    }
}
