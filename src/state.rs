//! What every handler shares: settings, the store, the auth cache, the organization actors,
//! limits, usage counts and metrics. Below the routes, the extractors and the gateway, which read it; the
//! app factory (`startup`) builds it and never the other way round.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix_rt::ArbiterHandle;

use crate::actors::OrgActors;
use crate::auth::{cache_settings, AuthCache, LastUsedRecorder};
use crate::configuration::Settings;
use crate::domain::ScopeCatalog;
use crate::invalidation::{ListenerStatus, RevocationAcks};
use crate::metrics::Metrics;
use crate::rate_limit::{FailedAuthThrottle, KeyRateLimits};
use crate::secret_scanning::Providers;
use crate::store::Store;
use crate::usage::UsageRecorder;

/// Cheap to share: everything inside is a handle.
pub struct AppState {
    pub settings: Arc<Settings>,
    pub store: Store,
    pub auth_cache: Arc<AuthCache>,
    pub org_actors: OrgActors,
    pub last_used: Arc<LastUsedRecorder>,
    /// Usage counts per key, hour and outcome, waiting for their flush.
    pub usage: Arc<UsageRecorder>,
    pub metrics: Arc<Metrics>,
    pub listener: ListenerStatus,
    /// Set on SIGTERM: `/readyz` answers 503 and responses close their connections, so load
    /// balancers and clients move away before the server stops accepting.
    pub draining: AtomicBool,
    pub key_rate_limits: KeyRateLimits,
    pub failed_auth: FailedAuthThrottle,
    pub instance_id: String,
    /// The scopes keys may be given: the built-ins and every gateway route's.
    pub scope_catalog: ScopeCatalog,
    /// The secret-scanning partners whose reports revoke leaked keys.
    pub scanning_providers: Providers,
}

impl AppState {
    /// Store, cache, actors (on `arbiter`, started on demand), limits. Spawns nothing.
    pub fn new(
        settings: Arc<Settings>,
        instance_id: String,
        arbiter: ArbiterHandle,
        acks: Arc<RevocationAcks>,
    ) -> anyhow::Result<AppState> {
        let store = Store::connect(&settings.database)?;
        let metrics = Arc::new(Metrics::new());
        metrics.register_gateway_routes(settings.gateway.routes.iter().map(|r| r.prefix.as_str()));
        let scanning_providers = Providers::from_settings(&settings.secret_scanning)?;
        metrics
            .secret_scanning
            .register_providers(scanning_providers.names());
        let auth_cache = Arc::new(AuthCache::new(
            cache_settings(&settings.auth),
            Arc::new(store.clone()),
            metrics.clone(),
        ));
        let last_used = Arc::new(LastUsedRecorder::new(settings.last_used.max_pending.get()));
        metrics.watch(store.pool().clone(), auth_cache.clone(), last_used.clone());
        let usage = Arc::new(UsageRecorder::new());
        metrics.watch_usage(usage.clone());
        let org_actors = OrgActors::new(
            arbiter,
            store.clone(),
            auth_cache.clone(),
            acks,
            metrics.clone(),
            &settings,
        );
        let scope_catalog = ScopeCatalog::new(
            settings
                .gateway
                .routes
                .iter()
                .flat_map(|route| route.named_scopes()),
        );
        Ok(AppState {
            key_rate_limits: KeyRateLimits::new(&settings.rate_limit, metrics.clone())?,
            failed_auth: FailedAuthThrottle::new(&settings.rate_limit),
            settings,
            store,
            auth_cache,
            org_actors,
            last_used,
            usage,
            metrics,
            listener: ListenerStatus::default(),
            scanning_providers,
            draining: AtomicBool::new(false),
            instance_id,
            scope_catalog,
        })
    }
}
