//! Per-organization actors: each owns its organization's key changes and runs them one at a
//! time. Across instances, the advisory lock each transaction takes keeps the same order.

mod org;
mod registry;

pub use org::{CreateKey, CreatedKey, OrgActor, RevokeKey};
pub use registry::{ActorUnavailable, Claim, Claimed, OrgActors};
