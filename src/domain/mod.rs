//! Domain values. Each is built only through `parse`, so holding one means it is valid.

mod api_key;
mod display_name;
mod expiry;
mod identity;
mod ids;
mod scope;

pub use api_key::{ApiKey, KeyHash, KeyPrefix, KeyType, MalformedKey};
pub use display_name::{DisplayName, NAME_MAX_CHARS};
pub use expiry::{parse_expiry, to_millis, MAX_EXPIRY_MONTHS};
pub use identity::{Identity, KeyState};
pub use ids::{KeyId, OrgId, ProjectId};
pub use scope::{ScopeName, ScopePattern, Scopes, MAX_SCOPES};
