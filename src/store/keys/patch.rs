//! What a `PATCH /api/v1/keys/{id}` asks of a key, field by field.

use chrono::{DateTime, Utc};

use crate::domain::{DisplayName, KeyRateLimit, Scopes};

/// What a PATCH asks for; None: leave as it is. Expiry and rate limit may be cleared
/// (`Some(None)`).
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    pub name: Option<DisplayName>,
    pub scopes: Option<Scopes>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub enabled: Option<bool>,
    pub rate_limit: Option<Option<KeyRateLimit>>,
}

impl KeyPatch {
    pub(super) fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.scopes.is_none()
            && self.expires_at.is_none()
            && self.enabled.is_none()
            && self.rate_limit.is_none()
    }
}
