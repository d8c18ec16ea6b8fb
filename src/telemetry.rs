//! Logging and per-request telemetry: `tracing` to stderr (stdout is reserved for CLI output), level from `RUST_LOG`
//! (default `info`), human or JSON lines per `log.format`.

use std::sync::atomic::Ordering;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage};
use tracing_subscriber::EnvFilter;

use crate::configuration::LogFormat;
use crate::metrics::UNMATCHED_ROUTE;
use crate::request_id::RequestId;
use crate::startup::AppState;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,refinery_core=warn,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a terminal, not for a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests start many apps) is harmless; ignore it.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// Middleware: one metric sample and one log line per request. The route label is the
/// matched pattern, never the raw path.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let mut response = next.call(req).await?;
    let elapsed = started.elapsed();
    let request = response.request();
    let route = request.match_pattern();
    let route = route.as_deref().unwrap_or(UNMATCHED_ROUTE);
    let status = response.status();
    let state = request.app_data::<web::Data<AppState>>().cloned();
    if let Some(state) = &state {
        state
            .metrics
            .http_requests
            .with_label_values(&[request.method().as_str(), route, status.as_str()])
            .inc();
        state
            .metrics
            .http_request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }
    let extensions = request.extensions();
    let request_id = extensions.get::<RequestId>().copied();
    let client_ip = state.as_ref().and_then(|state| {
        state
            .settings
            .server
            .trusted_proxies
            .client_ip(request.peer_addr(), request.headers())
    });
    let organization_id = extensions
        .get::<crate::auth::AuthOutcome>()
        .and_then(|outcome| outcome.0.as_ref().ok())
        .map(|identity| identity.organization_id.to_string());
    tracing::info!(
        request_id = request_id.as_ref().map(RequestId::as_str),
        method = %request.method(),
        route,
        status = status.as_u16(),
        latency_us = elapsed.as_micros() as u64,
        organization_id = organization_id.as_deref(),
        client_ip = client_ip.map(tracing::field::display),
        "request"
    );
    drop(extensions);
    if state.is_some_and(|state| state.draining.load(Ordering::Acquire)) {
        response
            .response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    Ok(response)
}
