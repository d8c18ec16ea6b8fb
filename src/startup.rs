//! The application: the one app factory, and the server's life cycle. The state handlers share
//! is `state::AppState`; this module only assembles the server around it.
//! `main` and the integration tests both start the service through `Application`.

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actix_rt::Arbiter;
use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpServer};
use uuid::Uuid;

use crate::configuration::Settings;
use crate::edge;
use crate::gateway;
use crate::invalidation::{InvalidationListener, RevocationAcks};
use crate::request_id::assign_request_id;
use crate::routes;
use crate::state::AppState;
use crate::store::{run_migrations, Store};
use crate::usage::prune_usage;
use crate::webhooks::{warn_of_expiring_keys, Dispatcher};

pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    /// The public server first, then the metrics-only one when configured.
    servers: Vec<Server>,
    state: web::Data<AppState>,
    background: Background,
}

/// What runs beside the servers: the organization actors' arbiter, the invalidation listener,
/// the lastUsedAt and usage flushers, usage retention, the webhook dispatcher and the expiry warnings. Stopped when
/// dropped, so a start-up step that fails after it was created leaves nothing running.
struct Background {
    arbiter: Arbiter,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    fn new() -> Background {
        Background {
            arbiter: Arbiter::new(),
            tasks: Vec::new(),
        }
    }

    /// Starts the listener, the flusher and the webhook tasks; called last, when nothing can
    /// fail any more.
    fn start(&mut self, state: &AppState, acks: Arc<RevocationAcks>) {
        self.tasks.push(tokio::spawn(
            InvalidationListener {
                settings: state.settings.clone(),
                instance_id: state.instance_id.clone(),
                cache: state.auth_cache.clone(),
                acks,
                metrics: state.metrics.clone(),
                status: state.listener.clone(),
            }
            .run(),
        ));
        let (recorder, store, metrics) = (
            state.last_used.clone(),
            state.store.clone(),
            state.metrics.clone(),
        );
        let interval = state.settings.last_used.flush_interval;
        self.tasks.push(tokio::spawn(async move {
            recorder.run(store, metrics, interval).await
        }));
        let (usage, store, metrics) = (
            state.usage.clone(),
            state.store.clone(),
            state.metrics.clone(),
        );
        let interval = state.settings.usage.flush_interval;
        self.tasks.push(tokio::spawn(async move {
            usage.run(store, metrics, interval).await
        }));
        let retention =
            chrono::Duration::days(i64::from(state.settings.usage.retention_days.get()));
        self.tasks.push(tokio::spawn(prune_usage(
            state.store.clone(),
            state.metrics.clone(),
            retention,
        )));
        if let Some(shared) = state.key_rate_limits.shared() {
            self.tasks.push(tokio::spawn(shared.probe()));
        }
        self.tasks.push(tokio::spawn(
            Dispatcher {
                store: state.store.clone(),
                settings: state.settings.clone(),
                metrics: state.metrics.clone(),
            }
            .run(),
        ));
        self.tasks.push(tokio::spawn(warn_of_expiring_keys(
            state.store.clone(),
            state.settings.clone(),
        )));
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.arbiter.stop();
    }
}

impl Application {
    /// Migrates, binds `settings.server.listen` (port 0 picks a free port) and prepares the
    /// server; `run_until_stopped` serves. Must be called inside an actix system.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(settings.server.listen)?;
        Application::build_on(settings, listener).await
    }

    /// Fallible steps first (migrations, binding, building the servers; a `Server` starts only
    /// when first polled), then the background tasks: an error on the way leaks nothing.
    pub async fn build_on(
        settings: Settings,
        listener: TcpListener,
    ) -> anyhow::Result<Application> {
        run_migrations(&settings.database).await?;
        let metrics_listener = settings
            .server
            .metrics_listen
            .map(|address| {
                TcpListener::bind(address).map_err(|error| {
                    anyhow::Error::new(error).context(format!(
                        "cannot listen on {address} (server.metrics_listen)"
                    ))
                })
            })
            .transpose()?;
        let settings = Arc::new(settings);
        let mut background = Background::new();
        let instance_id = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let acks = Arc::new(RevocationAcks::new(instance_id.clone()));
        let state = web::Data::new(AppState::new(
            settings,
            instance_id,
            background.arbiter.handle(),
            acks.clone(),
        )?);

        let port = listener.local_addr()?.port();
        let public = public_server(state.clone(), listener)?;
        let (metrics_port, metrics) = match metrics_listener {
            Some(listener) => (
                Some(listener.local_addr()?.port()),
                Some(metrics_server(state.clone(), listener)?),
            ),
            None => (None, None),
        };

        background.start(&state, acks);
        let servers = std::iter::once(public).chain(metrics).collect();
        Ok(Application {
            port,
            metrics_port,
            servers,
            state,
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
    /// finish) and pending lastUsedAt updates and usage counts are written.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let signals = actix_rt::spawn(stop_on_signal(
            self.server_handle(),
            self.state.clone(),
            self.state.settings.server.drain_delay,
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
                state.usage.flush_before_exit(&store, &state.metrics).await;
            }
            Err(error) => tracing::warn!(error = ?error, "final flushes: no pool"),
        }
        drop(self.background);
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

/// The public server: every route, behind [`edge::every_request`] (request id, path
/// normalisation, bare-405 envelope, metrics and log line).
fn public_server(state: web::Data<AppState>, listener: TcpListener) -> std::io::Result<Server> {
    let settings = state.settings.clone();
    let options = routes::RouteOptions {
        admin: settings.admin_token().is_some(),
        metrics: settings.server.metrics_listen.is_none(),
    };
    let max_body = settings.server.max_body_bytes.get();
    let body_timeout = routes::BodyReadTimeout(settings.server.body_read_timeout);
    let gateway_routes = settings.gateway.routes.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(routes::json_config(max_body))
            .app_data(body_timeout)
            .app_data(web::Data::new(gateway::Upstreams::new()))
            .wrap(from_fn(edge::every_request))
            .configure(|cfg| routes::configure(cfg, options, &gateway_routes))
            .default_service(web::to(routes::not_found))
    })
    .shutdown_timeout(10)
    // Signals are ours (see `run_until_stopped`): SIGTERM drains before stopping.
    .disable_signals()
    .client_request_timeout(settings.server.client_request_timeout)
    .keep_alive(settings.server.keep_alive)
    .max_connections(settings.server.max_connections.get())
    .listen(listener)?;
    if settings.server.workers > 0 {
        server = server.workers(settings.server.workers);
    }
    Ok(server.run())
}

/// Operators often keep /metrics off the public port; this listener serves only it.
fn metrics_server(state: web::Data<AppState>, listener: TcpListener) -> std::io::Result<Server> {
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .wrap(from_fn(assign_request_id))
            .configure(routes::configure_metrics)
            .default_service(web::to(routes::not_found))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}
