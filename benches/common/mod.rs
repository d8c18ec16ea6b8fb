//! What the benches share: the service's own cache settings and a project key's identity.

// Each bench uses its own subset.
#![allow(dead_code)]

use logstitch_gateway::auth::{cache_settings, CacheSettings};
use logstitch_gateway::configuration::Settings;
use logstitch_gateway::domain::{Identity, KeyId, KeyType, OrgId, ProjectId, Scopes};

/// The service's cache settings (config/default.toml, as `serve` loads them), with room for
/// at least 1,000,000 keys.
pub fn service_cache_settings() -> CacheSettings {
    let defaults = Settings::load(None).expect("default settings load");
    let mut settings = cache_settings(&defaults.auth);
    settings.max_entries = settings.max_entries.max(1_000_000);
    settings
}

/// A fresh, valid project key's identity, as Postgres would answer for a real key.
pub fn project_identity() -> Identity {
    Identity {
        key_id: KeyId::new(),
        organization_id: OrgId::new(),
        project_id: Some(ProjectId::new()),
        key_type: KeyType::Project,
        expires_at: None,
        scopes: Scopes::All,
        enabled: true,
        rate_limit: None,
    }
}
