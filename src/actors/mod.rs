//! Per-organization actors: each owns its organization's key changes and runs them one at a
//! time. Across instances, the advisory lock each transaction takes keeps the same order.
//! What a request waits for after its transaction (a revoke's acknowledgements) happens
//! outside the actor, so it never holds the organization's other key changes.

mod claim;
mod leak;
mod master_key;
mod org;
mod registry;
mod update;

pub use claim::{Claim, Claimed};
pub use leak::{LeakRevocation, RevokeLeakedKey};
pub use master_key::{MasterKeyRolled, RollMasterKey};
pub use org::{
    CreateKey, CreatedKey, KeyTarget, OrgActor, Revocation, RevokeKey, Roll, RollKey, RolledKey,
};
pub use registry::{ActorUnavailable, OrgActors};
pub use update::{Update, UpdateKey};
