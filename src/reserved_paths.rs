//! The service's own paths, which a gateway prefix may not take. Below both the settings
//! (which refuse an overlapping prefix) and the route table (which serves these paths), so
//! settings can be read and checked without the router.

/// The service's own routes (and everything under them). A gateway prefix may not equal,
/// contain or sit under one of these (`Settings::validate`): a forwarded route must never
/// shadow the key API, nor the key API a forwarded route.
pub const BUILT_IN_PATHS: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/admin/v1/organizations",
    "/api/v1/keys",
    "/api/v1/projects",
    "/api/v1/auth/verify",
    "/api/v1/audit-events",
    "/api/v1/webhook-endpoints",
    "/api/v1/secret-scanning",
    "/api/v1/usage",
];

/// Whether a gateway `prefix` would overlap `path`: equal, or one under the other at a
/// segment boundary.
pub fn overlaps(prefix: &str, path: &str) -> bool {
    let under = |inner: &str, outer: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    under(prefix, path) || under(path, prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_at_segment_boundaries() {
        assert!(overlaps("/api/v1/keys", "/api/v1/keys"));
        assert!(overlaps("/api/v1", "/api/v1/keys"));
        assert!(overlaps("/api/v1/keys/x", "/api/v1/keys"));
        assert!(!overlaps("/api/v1/keysx", "/api/v1/keys"));
        assert!(!overlaps("/api/v1/events", "/api/v1/keys"));
        assert!(!overlaps("/healthzz", "/healthz"));
    }
}
