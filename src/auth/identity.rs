//! What a key resolves to. Small and `Copy`: it is cloned out of the cache on every request.

use actix_web::http::header::{HeaderName, HeaderValue};

use crate::domain::{KeyId, KeyType, OrgId, ProjectId};

pub const ORGANIZATION_ID_HEADER: HeaderName =
    HeaderName::from_static("x-logstitch-organization-id");
pub const PROJECT_ID_HEADER: HeaderName = HeaderName::from_static("x-logstitch-project-id");
pub const KEY_ID_HEADER: HeaderName = HeaderName::from_static("x-logstitch-key-id");
pub const KEY_TYPE_HEADER: HeaderName = HeaderName::from_static("x-logstitch-key-type");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub key_id: KeyId,
    pub organization_id: OrgId,
    /// None for a master key.
    pub project_id: Option<ProjectId>,
    pub key_type: KeyType,
}

/// What a key hash resolves to. A revoked or unknown key carries no identity, so no code path
/// can hand one on as if it could act (room for `Expired` when keys expire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Active(Identity),
    Revoked,
    Unknown,
}

impl Identity {
    /// The identity as `X-LogStitch-*` headers, for the verify endpoint's answer and for
    /// forwarded requests. A master key's project header is empty.
    pub fn headers(&self) -> [(HeaderName, HeaderValue); 4] {
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
        ]
    }
}
