//! Logging and per-request telemetry: `tracing` to stderr (stdout is reserved for CLI output), level from `RUST_LOG`
//! (default `info`), human or JSON lines per `log.format`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use actix_web::dev::ServiceResponse;
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest};
use tracing_subscriber::EnvFilter;

use crate::configuration::LogFormat;
use crate::metrics::{observe_unrouted, RouteMetrics, UNMATCHED_ROUTE};
use crate::request_id::RequestId;
use crate::state::AppState;

pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,refinery_core=warn,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // A log line that can't be written (the reader of stderr went away: a dead log
        // shipper, a `| head`) is dropped. Reporting that failure would itself go to the
        // broken stderr, and `eprintln!` panics there: a worker would die with every request.
        .log_internal_errors(false)
        // Colours only for a terminal, not for a log file or a pipe.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests start many apps) is harmless; ignore it.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

/// One metric sample and one log line per request, once its answer is known. The route label
/// is the matched pattern, never the raw path. The common case costs a few atomic increments:
/// the route's metric handles are its own ([`RouteMetrics`]), and what only the log line
/// needs is computed only when the line is written. While draining, the connection closes
/// after this answer.
pub fn observe<B>(response: &mut ServiceResponse<B>, elapsed: Duration) {
    let request = response.request();
    let status = response.status();
    let Some(state) = request.app_data::<web::Data<AppState>>() else {
        return;
    };
    let unrouted;
    let label = match request.app_data::<RouteMetrics>() {
        Some(route) => {
            route.observe(&state.metrics, request, status, elapsed);
            route.label(request)
        }
        None => {
            unrouted = request.match_pattern();
            let label = unrouted.as_deref().unwrap_or(UNMATCHED_ROUTE);
            observe_unrouted(&state.metrics, request, label, status, elapsed);
            label
        }
    };
    if tracing::enabled!(tracing::Level::INFO) {
        log_request(request, label, status, elapsed, state);
    }
    if state.draining.load(Ordering::Acquire) {
        response
            .response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
}

fn log_request(
    request: &HttpRequest,
    route: &str,
    status: StatusCode,
    elapsed: Duration,
    state: &AppState,
) {
    let client_ip = state
        .settings
        .server
        .trusted_proxies
        .client_ip(request.peer_addr(), request.headers());
    let organization_id = request
        .extensions()
        .get::<crate::access::AuthOutcome>()
        .and_then(|outcome| outcome.0.as_ref().ok())
        .map(|identity| identity.organization_id);
    tracing::info!(
        request_id = RequestId::current().as_str(),
        method = %request.method(),
        route,
        status = status.as_u16(),
        latency_us = elapsed.as_micros() as u64,
        organization_id = organization_id.map(tracing::field::display),
        client_ip = client_ip.map(tracing::field::display),
        "request"
    );
}
