//! Key rows: create, list, revoke, roll, update, the master-key roll, look up by hash, and the batched lastUsedAt write.
//! Every change writes its audit event in its own transaction.
//!
//! This file only declares and re-exports: the files below import each other directly, never
//! through here.

mod ceiling;
mod create;
mod expiry;
mod last_used;
mod leak;
mod locked;
mod lookup;
mod master_key;
mod patch;
mod record;
mod revoke;
mod roll;
mod update;

pub use ceiling::{Caller, CallerRefusal, Ceiling};
pub use create::{CreateKeyError, NewKey};
pub use leak::{LeakSite, ReportedKey};
pub(super) use locked::org_lock_id;
pub use locked::Announced;
pub(super) use master_key::insert_master_key;
pub use master_key::{MasterKeyRoll, MasterKeyRollError, RevokedMasterKey};
pub use patch::KeyPatch;
pub use record::KeyRecord;
pub use revoke::{RevokeError, RevokeOutcome};
pub use roll::{NotRollable, RollError, RollOutcome, RollRequest};
pub use update::{UpdateError, UpdateOutcome, UpdateRequest};
