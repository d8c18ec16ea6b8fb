//! `[gateway]`: the forwarded routes, and what their prefixes may not take.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::error::{invalid, SettingsError};
use super::serde_helpers::millis;
use crate::domain::{KeyType, ScopeName};
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
    /// The scope a key needs for every method (`resource.action`); none: any key of
    /// `key_types`.
    #[serde(default)]
    pub scope: Option<String>,
    /// Per-method scopes (`{ GET = "events.read" }`), overriding `scope` for those methods.
    #[serde(default)]
    pub method_scopes: BTreeMap<String, String>,
}

impl GatewayRoute {
    /// The scope a request with `method` needs on this route, if any. Methods are matched
    /// in capitals whatever the client's spelling (an upstream framework may read `get` as
    /// GET), and HEAD needs GET's scope unless it has its own (it reads what GET reads).
    pub fn scope_for(&self, method: &str) -> Option<&str> {
        let spelled: std::borrow::Cow<str> = if method.bytes().any(|b| b.is_ascii_lowercase()) {
            method.to_ascii_uppercase().into()
        } else {
            method.into()
        };
        self.method_scopes
            .get(spelled.as_ref())
            .or_else(|| match spelled.as_ref() {
                "HEAD" => self.method_scopes.get("GET"),
                _ => None,
            })
            .or(self.scope.as_ref())
            .map(String::as_str)
    }

    /// Every scope this route names.
    pub fn named_scopes(&self) -> impl Iterator<Item = &str> {
        self.scope
            .iter()
            .chain(self.method_scopes.values())
            .map(String::as_str)
    }

    /// Route scopes are plain `resource.action` (a wildcard is what keys hold, never what a
    /// route needs); methods are HTTP method names in capitals.
    fn validate_scopes(&self, index: usize) -> Result<(), SettingsError> {
        let plain =
            "must be a scope `resource.action`, each part [a-z][a-z0-9_-]{0,31} (no wildcard)";
        if let Some(scope) = &self.scope {
            if ScopeName::parse(scope).is_none() {
                return Err(SettingsError::Value {
                    path: format!("gateway.routes[{index}].scope"),
                    problem: plain.to_owned(),
                });
            }
        }
        for (method, scope) in &self.method_scopes {
            let path = format!("gateway.routes[{index}].method_scopes.{method}");
            let is_method = !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase());
            if !is_method {
                return Err(SettingsError::Value {
                    path,
                    problem: "must be keyed by an HTTP method in capitals (GET, POST, …)".into(),
                });
            }
            if ScopeName::parse(scope).is_none() {
                return Err(SettingsError::Value {
                    path,
                    problem: plain.to_owned(),
                });
            }
        }
        Ok(())
    }
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
        for (index, route) in self.routes.iter().enumerate() {
            route.validate_scopes(index)?;
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
            scope: None,
            method_scopes: BTreeMap::new(),
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

    #[test]
    fn route_scopes_are_plain_and_named_by_their_index() {
        let route = |scope: Option<&str>, method: Option<(&str, &str)>| GatewayRoute {
            prefix: "/api/v1/events".to_owned(),
            upstream: "http://127.0.0.1:9000".to_owned(),
            key_types: vec![KeyType::Project],
            timeout: Duration::from_secs(1),
            expose_logstitch_headers: false,
            scope: scope.map(str::to_owned),
            method_scopes: method
                .map(|(m, s)| (m.to_owned(), s.to_owned()))
                .into_iter()
                .collect(),
        };
        let path_of = |route: GatewayRoute| match route.validate_scopes(3) {
            Err(SettingsError::Value { path, .. }) => Some(path),
            _ => None,
        };
        assert_eq!(
            path_of(route(Some("events.write"), Some(("GET", "events.read")))),
            None
        );
        for bad in ["events.*", "*", "events", "Events.write", ""] {
            assert_eq!(
                path_of(route(Some(bad), None)).as_deref(),
                Some("gateway.routes[3].scope"),
                "{bad:?}"
            );
            assert_eq!(
                path_of(route(None, Some(("GET", bad)))).as_deref(),
                Some("gateway.routes[3].method_scopes.GET"),
                "{bad:?}"
            );
        }
        assert!(path_of(route(None, Some(("get", "events.read")))).is_some());
        let both = route(Some("events.write"), Some(("GET", "events.read")));
        assert_eq!(both.scope_for("GET"), Some("events.read"));
        assert_eq!(both.scope_for("POST"), Some("events.write"));
        assert_eq!(route(None, None).scope_for("GET"), None);
        assert_eq!(both.scope_for("get"), Some("events.read"), "any spelling");
        assert_eq!(both.scope_for("Get"), Some("events.read"));
        assert_eq!(
            both.scope_for("HEAD"),
            Some("events.read"),
            "HEAD reads as GET"
        );
        assert_eq!(both.scope_for("head"), Some("events.read"));
    }
}
