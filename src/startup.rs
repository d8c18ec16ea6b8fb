//! The application: shared state, the one app factory, and the server's life cycle.
//! `main` and the integration tests both start the service through `Application`.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_rt::Arbiter;
use actix_web::body::MessageBody;
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::ConnectionType;
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, Error, HttpMessage, HttpServer};
use uuid::Uuid;

use crate::actors::OrgActors;
use crate::auth::cache_settings;
use crate::auth::{AuthCache, LastUsedRecorder};
use crate::configuration::Settings;
use crate::gateway::{self, FailedAuthThrottle, KeyRateLimits};
use crate::invalidation::{InvalidationListener, ListenerStatus, RevocationAcks};
use crate::metrics::{Metrics, UNMATCHED_ROUTE};
use crate::request_id::{assign_request_id, RequestId};
use crate::routes;
use crate::store::{run_migrations, Store};

/// What every handler can reach. Cheap to share: everything inside is a handle.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub auth_cache: Arc<AuthCache>,
    pub org_actors: OrgActors,
    pub last_used: Arc<LastUsedRecorder>,
    pub metrics: Arc<Metrics>,
    pub listener: ListenerStatus,
    /// Set on SIGTERM: `/readyz` answers 503 and responses close their connections, so load
    /// balancers and clients move away before the server stops accepting.
    pub draining: AtomicBool,
    pub key_rate_limits: KeyRateLimits,
    pub failed_auth: FailedAuthThrottle,
    pub instance_id: String,
}

pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    /// The public server first, then the metrics-only one when configured.
    servers: Vec<Server>,
    state: web::Data<AppState>,
    arbiter: Arbiter,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Migrates, binds `settings.server.listen` (port 0 picks a free port) and prepares the
    /// server; `run_until_stopped` serves. Must be called inside an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(settings.server.listen)?;
        Application::build_on(settings, listener).await
    }

    pub async fn build_on(
        settings: Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        run_migrations(&settings.database).await?;
        let settings = Arc::new(settings);
        let instance_id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let store = Store::connect(&settings.database)?;
        let pool = store.pool().clone();
        let metrics = Arc::new(Metrics::new());
        let auth_cache = Arc::new(AuthCache::new(
            cache_settings(&settings.auth),
            Arc::new(store.clone()),
            metrics.clone(),
        ));
        let last_used = Arc::new(LastUsedRecorder::new(settings.last_used.max_pending));
        metrics.watch(pool, auth_cache.clone(), last_used.clone());
        let listener_status = ListenerStatus::default();
        let revocation_acks = Arc::new(RevocationAcks::default());

        let mut background = Vec::new();
        background.push(tokio::spawn(
            InvalidationListener {
                settings: settings.clone(),
                instance_id: instance_id.clone(),
                cache: auth_cache.clone(),
                acks: revocation_acks.clone(),
                metrics: metrics.clone(),
                status: listener_status.clone(),
            }
            .run(),
        ));
        background.push(tokio::spawn({
            let (recorder, store, metrics) = (last_used.clone(), store.clone(), metrics.clone());
            let interval = Duration::from_millis(settings.last_used.flush_interval_ms);
            async move { recorder.run(store, metrics, interval).await }
        }));

        let arbiter = Arbiter::new();
        let org_actors = OrgActors::new(
            arbiter.handle(),
            store.clone(),
            auth_cache.clone(),
            revocation_acks,
            metrics.clone(),
            &settings,
        );
        let state = web::Data::new(AppState {
            settings: settings.clone(),
            store,
            auth_cache,
            org_actors,
            last_used,
            metrics,
            listener: listener_status,
            draining: AtomicBool::new(false),
            key_rate_limits: KeyRateLimits::new(&settings.rate_limit),
            failed_auth: FailedAuthThrottle::new(&settings.rate_limit),
            instance_id,
        });

        let port = listener.local_addr()?.port();
        let server_state = state.clone();
        let options = routes::RouteOptions {
            admin: settings.admin_token().is_some(),
            metrics: settings.server.metrics_listen.is_none(),
        };
        let max_body = settings.server.max_body_bytes;
        let body_timeout =
            routes::BodyReadTimeout(Duration::from_millis(settings.server.body_read_timeout_ms));
        let gateway_routes = settings.gateway.routes.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(server_state.clone())
                .app_data(routes::json_config(max_body))
                .app_data(body_timeout)
                .app_data(web::Data::new(gateway::Upstreams::new()))
                .wrap(from_fn(routes::envelope_bare_errors))
                .wrap(from_fn(observe))
                .wrap(from_fn(assign_request_id))
                .configure(|cfg| gateway::configure(cfg, &gateway_routes))
                .configure(|cfg| routes::configure(cfg, options))
                .default_service(web::to(routes::not_found))
        })
        .shutdown_timeout(10)
        // Signals are ours (see `run_until_stopped`): SIGTERM drains before stopping.
        .disable_signals()
        .client_request_timeout(Duration::from_millis(
            settings.server.client_request_timeout_ms,
        ))
        .keep_alive(Duration::from_secs(settings.server.keep_alive_secs))
        .max_connections(settings.server.max_connections)
        .listen(listener)?;
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let mut servers = vec![server.run()];
        let mut metrics_port = None;
        if let Some(address) = settings.server.metrics_listen {
            // Operators often keep /metrics off the public port; this listener serves only it.
            let metrics_listener = TcpListener::bind(address).map_err(|error| {
                anyhow::Error::new(error).context(format!(
                    "cannot listen on {address} (server.metrics_listen)"
                ))
            })?;
            metrics_port = Some(metrics_listener.local_addr()?.port());
            let metrics_state = state.clone();
            let metrics_server = HttpServer::new(move || {
                App::new()
                    .app_data(metrics_state.clone())
                    .wrap(from_fn(assign_request_id))
                    .configure(routes::configure_metrics)
                    .default_service(web::to(routes::not_found))
            })
            .workers(1)
            .disable_signals()
            .listen(metrics_listener)?;
            servers.push(metrics_server.run());
        }
        Ok(Application {
            port,
            metrics_port,
            servers,
            state,
            arbiter,
            background,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port of the separate `/metrics` listener, when `server.metrics_listen` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until SIGTERM, SIGINT or `StopHandle::stop`. SIGTERM first drains for
    /// `server.drain_delay_ms` (not ready, connections closed after each response) so no
    /// client is cut off mid-request; then the servers stop gracefully (in-flight requests
    /// finish) and pending lastUsedAt updates are written.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let signals = actix_rt::spawn(stop_on_signal(
            self.server_handle(),
            self.state.clone(),
            Duration::from_millis(self.state.settings.server.drain_delay_ms),
        ));
        let results = futures_util::future::join_all(self.servers).await;
        signals.abort();
        let state = &self.state;
        // Most pooled connections were opened on the workers' threads, and their drivers
        // stopped with those threads' runtimes: the final flush uses a pool of its own, whose
        // connection lives on this runtime.
        match Store::connect(&state.settings.database) {
            Ok(store) => {
                if let Err(error) = state.last_used.flush(&store, &state.metrics).await {
                    tracing::warn!(error = ?error, "final lastUsedAt flush failed");
                }
            }
            Err(error) => tracing::warn!(error = ?error, "final lastUsedAt flush: no pool"),
        }
        for task in &self.background {
            task.abort();
        }
        self.arbiter.stop();
        results.into_iter().collect()
    }

    /// A handle to stop the servers from elsewhere (tests, signal handlers).
    pub fn server_handle(&self) -> StopHandle {
        StopHandle(self.servers.iter().map(Server::handle).collect())
    }
}

async fn stop_on_signal(servers: StopHandle, state: web::Data<AppState>, drain_delay: Duration) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return;
    };
    tokio::select! {
        _ = terminate.recv() => {
            tracing::info!(drain_ms = drain_delay.as_millis() as u64, "SIGTERM: draining");
            state.draining.store(true, Ordering::Release);
            tokio::time::sleep(drain_delay).await;
        }
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
    }
    servers.stop(true).await;
}

/// Stops the public server and, when there is one, the metrics server.
#[derive(Clone)]
pub struct StopHandle(Vec<ServerHandle>);

impl StopHandle {
    /// `graceful`: let in-flight requests finish first.
    pub async fn stop(&self, graceful: bool) {
        futures_util::future::join_all(self.0.iter().map(|handle| handle.stop(graceful))).await;
    }
}

pub use crate::invalidation::listener_application_name;

/// Middleware: one metric sample and one log line per request. The route label is the
/// matched pattern, never the raw path.
async fn observe(
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
