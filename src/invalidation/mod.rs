//! Keeping every instance's auth cache honest about revocations and key changes: the
//! listener that hears the notices (`notice` has the protocol) and evicts, and the revoker's
//! wait for every instance's acknowledgement.
//!
//! The revoking instance waits (up to `listener.ack_timeout_ms`) for an ack from every
//! listener that was listening when it revoked, so when the DELETE answers, every instance
//! already refuses the key.

mod acks;
mod listener;

pub use acks::{AckWaiter, RevocationAcks};
pub use listener::{listener_application_name, InvalidationListener, ListenerStatus};
