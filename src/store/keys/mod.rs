//! Key rows: create, list, revoke, roll, update, look up by hash, and the batched lastUsedAt write.
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
mod patch;
mod record;
mod revoke;
mod roll;
mod update;

pub use ceiling::{Caller, CallerRefusal, Ceiling};
pub(super) use create::insert_key;
pub use create::{CreateKeyError, NewKey};
pub use leak::{LeakSite, ReportedKey};
pub(super) use locked::org_lock_id;
pub use locked::Announced;
pub use patch::KeyPatch;
pub use record::KeyRecord;
pub use revoke::{RevokeError, RevokeOutcome};
pub use roll::{NotRollable, RollError, RollOutcome, RollRequest};
pub use update::{UpdateError, UpdateOutcome, UpdateRequest};
