//! Domain values. Each is built only through `parse`, so holding one means it is valid.

mod api_key;
mod display_name;
mod expiry;
mod identity;
mod ids;
mod key_limit;
mod scope;
pub mod timestamp;
mod usage;

pub use api_key::{ApiKey, KeyHash, KeyPrefix, KeyType, MalformedKey};
pub use display_name::{DisplayName, NAME_MAX_CHARS};
pub use expiry::{parse_expiry, to_millis, MAX_EXPIRY_MONTHS};
pub use identity::{Identity, KeyState};
pub use ids::{KeyId, OrgId, ProjectId};
pub use key_limit::{KeyRateLimit, MAX_BURST, MAX_REQUESTS_PER_SECOND};
pub use scope::{ScopeCatalog, ScopeName, ScopePattern, Scopes, BUILT_IN_SCOPES, MAX_SCOPES};
pub use usage::{Granularity, UsageBucket, UsageCounts, UsageOutcome};
