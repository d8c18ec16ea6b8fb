//! `[gateway]`: the forwarded routes, and what their prefixes may not take.

use std::time::Duration;

use serde::Deserialize;

use super::error::{invalid, SettingsError};
use super::serde_helpers::millis;
use crate::domain::KeyType;
use crate::reserved_paths::{overlaps, BUILT_IN_PATHS};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    pub routes: Vec<GatewayRoute>,
    /// Forward client headers whose names contain `_` (our own names are never forwarded).
    pub forward_underscore_headers: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayRoute {
    /// Path prefix, matched at a segment boundary ("/api/v1/events" matches
    /// "/api/v1/events" and "/api/v1/events/x", not "/api/v1/eventsx").
    pub prefix: String,
    /// Base URL, http only; the request's path and query are appended unchanged.
    pub upstream: String,
    #[serde(default = "project_keys_only")]
    pub key_types: Vec<KeyType>,
    #[serde(
        rename = "timeout_ms",
        default = "default_upstream_timeout",
        deserialize_with = "millis"
    )]
    pub timeout: Duration,
    /// Pass `X-LogStitch-*` headers set by the upstream on to clients (default: dropped).
    #[serde(default)]
    pub expose_logstitch_headers: bool,
}

fn project_keys_only() -> Vec<KeyType> {
    vec![KeyType::Project]
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(10)
}

impl GatewaySettings {
    /// Each route's prefix, upstream and key types, and that no two prefixes repeat (route
    /// timeouts are among the durations `Settings::validate` checks).
    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        for route in &self.routes {
            if !route.prefix.starts_with('/')
                || route.prefix.len() < 2
                || route.prefix.ends_with('/')
            {
                return invalid(
                    "gateway.routes.prefix",
                    "must start with / and not end with / (e.g. \"/api/v1/events\")",
                );
            }
            if !route.upstream.starts_with("http://") {
                return invalid("gateway.routes.upstream", "must be an http:// URL");
            }
            if route.key_types.is_empty() {
                return invalid(
                    "gateway.routes.key_types",
                    "must list \"project\" and/or \"master\"",
                );
            }
            if BUILT_IN_PATHS
                .iter()
                .any(|path| overlaps(&route.prefix, path))
            {
                return invalid(
                    "gateway.routes.prefix",
                    "must not equal, contain or sit under a built-in route (/api/v1/keys, /api/v1/projects, /api/v1/auth/verify, /admin/v1/organizations, /healthz, /readyz, /metrics, /openapi.json)",
                );
            }
        }
        let mut prefixes: Vec<&str> = self.routes.iter().map(|r| r.prefix.as_str()).collect();
        prefixes.sort_unstable();
        if prefixes.windows(2).any(|pair| pair[0] == pair[1]) {
            return invalid(
                "gateway.routes.prefix",
                "each prefix may be configured once",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_prefixes_may_not_shadow_built_in_routes_or_repeat() {
        let route = |prefix: &str| GatewayRoute {
            prefix: prefix.to_owned(),
            upstream: "http://127.0.0.1:9000".to_owned(),
            key_types: vec![KeyType::Project],
            timeout: Duration::from_secs(1),
            expose_logstitch_headers: false,
        };
        let gateway = |routes| GatewaySettings {
            routes,
            forward_underscore_headers: false,
        };
        for bad in [
            vec![route("/api/v1/keys")],
            vec![route("/api/v1")],
            vec![route("/api/v1/auth/verify/x")],
            vec![route("/healthz")],
            vec![route("/api/v1/events"), route("/api/v1/events")],
        ] {
            let error = gateway(bad).validate().unwrap_err();
            assert!(
                error.to_string().contains("gateway.routes.prefix"),
                "{error}"
            );
        }
        gateway(vec![route("/api/v1/events"), route("/api/v1/events/batch")])
            .validate()
            .unwrap();
    }
}
