//! What a key resolves to. Cheap to clone (it is cloned out of the cache on every request):
//! its scopes are a constant or a shared list.

use actix_web::http::header::{HeaderName, HeaderValue};
use chrono::{DateTime, Utc};

use super::api_key::KeyType;
use super::ids::{KeyId, OrgId, ProjectId};
use super::key_limit::KeyRateLimit;
use super::scope::Scopes;

pub const ORGANIZATION_ID_HEADER: HeaderName =
    HeaderName::from_static("x-logstitch-organization-id");
pub const PROJECT_ID_HEADER: HeaderName = HeaderName::from_static("x-logstitch-project-id");
pub const KEY_ID_HEADER: HeaderName = HeaderName::from_static("x-logstitch-key-id");
pub const KEY_TYPE_HEADER: HeaderName = HeaderName::from_static("x-logstitch-key-type");
pub const SCOPES_HEADER: HeaderName = HeaderName::from_static("x-logstitch-scopes");

#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub key_id: KeyId,
    pub organization_id: OrgId,
    /// None for a master key.
    pub project_id: Option<ProjectId>,
    pub key_type: KeyType,
    /// When the key stops working; None: never. Checked on every request, cached or not, so
    /// a cached entry never outlives its key.
    pub expires_at: Option<DateTime<Utc>>,
    /// What the key may do; a master key's are always `*`.
    pub scopes: Scopes,
    /// A disabled key authenticates nowhere until it is enabled again.
    pub enabled: bool,
    /// Its own rate limit, over the configured ones; None: the configured ones.
    pub rate_limit: Option<KeyRateLimit>,
}

/// What a key hash resolves to. A revoked or unknown key carries no identity, so no code path
/// can hand one on as if it could act (a revoked key keeps only its id, which its usage is
/// counted against). An expired key is `Active` with an `expires_at` in the
/// past: expiry is a matter of the clock, judged at each use ([`Identity::is_expired`]).
#[derive(Debug, Clone, PartialEq)]
pub enum KeyState {
    Active(Identity),
    Revoked(KeyId),
    Unknown,
}

impl KeyState {
    /// The key's id, when the key exists.
    pub fn key_id(&self) -> Option<KeyId> {
        match self {
            KeyState::Active(identity) => Some(identity.key_id),
            KeyState::Revoked(key) => Some(*key),
            KeyState::Unknown => None,
        }
    }
}

impl Identity {
    /// Whether the key has expired: its last valid instant is just before `expires_at`. The
    /// clock is read only for a key that can expire.
    pub fn is_expired(&self) -> bool {
        self.expires_at.is_some_and(|expires| expires <= Utc::now())
    }

    /// The identity as `X-LogStitch-*` headers, for the verify endpoint's answer and for
    /// forwarded requests. A master key's project header is empty. (One small allocation per
    /// id: sharing one buffer among the three measured slower, benches/request_overhead.rs.)
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 5] {
        let mut buffer = uuid::Uuid::encode_buffer();
        let mut uuid_value = |id: uuid::Uuid| {
            HeaderValue::from_str(id.hyphenated().encode_lower(&mut buffer))
                .expect("a UUID is a valid header value")
        };
        let project = match self.project_id {
            Some(project) => uuid_value(project.as_uuid()),
            None => HeaderValue::from_static(""),
        };
        [
            (
                ORGANIZATION_ID_HEADER,
                uuid_value(self.organization_id.as_uuid()),
            ),
            (PROJECT_ID_HEADER, project),
            (KEY_ID_HEADER, uuid_value(self.key_id.as_uuid())),
            (
                KEY_TYPE_HEADER,
                HeaderValue::from_static(self.key_type.as_str()),
            ),
            (SCOPES_HEADER, self.scopes.header_value()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(project: Option<ProjectId>, key_type: KeyType) -> Identity {
        Identity {
            key_id: KeyId::new(),
            organization_id: OrgId::new(),
            project_id: project,
            key_type,
            expires_at: None,
            scopes: Scopes::All,
            enabled: true,
            rate_limit: None,
        }
    }

    fn value<'a>(headers: &'a [(HeaderName, HeaderValue); 5], name: &HeaderName) -> &'a str {
        let (_, value) = headers.iter().find(|(n, _)| n == name).unwrap();
        value.to_str().unwrap()
    }

    #[test]
    fn each_header_carries_its_own_id() {
        let project = ProjectId::new();
        let id = identity(Some(project), KeyType::Project);
        let headers = id.headers();
        assert_eq!(
            value(&headers, &ORGANIZATION_ID_HEADER),
            id.organization_id.to_string()
        );
        assert_eq!(value(&headers, &PROJECT_ID_HEADER), project.to_string());
        assert_eq!(value(&headers, &KEY_ID_HEADER), id.key_id.to_string());
        assert_eq!(value(&headers, &KEY_TYPE_HEADER), "project");
        assert_eq!(value(&headers, &SCOPES_HEADER), "*");
        let restricted = Identity {
            scopes: Scopes::from_stored(vec!["keys.read".into(), "events.write".into()]),
            ..id
        };
        assert_eq!(
            value(&restricted.headers(), &SCOPES_HEADER),
            "events.write keys.read"
        );
    }

    #[test]
    fn a_master_key_has_an_empty_project_header() {
        let id = identity(None, KeyType::Master);
        let headers = id.headers();
        assert_eq!(value(&headers, &PROJECT_ID_HEADER), "");
        assert_eq!(value(&headers, &KEY_ID_HEADER), id.key_id.to_string());
        assert_eq!(
            value(&headers, &ORGANIZATION_ID_HEADER),
            id.organization_id.to_string()
        );
        assert_eq!(value(&headers, &KEY_TYPE_HEADER), "master");
    }
}
