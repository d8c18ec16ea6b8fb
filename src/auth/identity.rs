//! What a key resolves to. Small and `Copy`: it is cloned out of the cache on every request.

use crate::domain::{KeyId, KeyType, OrgId, ProjectId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub key_id: KeyId,
    pub organization_id: OrgId,
    /// None for a master key.
    pub project_id: Option<ProjectId>,
    pub key_type: KeyType,
    pub revoked: bool,
}
