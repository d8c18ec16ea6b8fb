//! Keeping every instance's auth cache honest about revocations and key changes: the
//! listener that hears the notices (`notice` has the protocol) and evicts, and the revoker's
//! wait for every instance's acknowledgement (a server's listener hears its acks; a process
//! that serves nothing, the CLI, has an `AckListener` of its own).
//!
//! The revoking instance waits (up to `listener.ack_timeout_ms`) for an ack from every
//! listener that was listening when it revoked, so when the DELETE answers, every instance
//! already refuses the key.

mod ack_listener;
mod acks;
mod listener;

pub use ack_listener::AckListener;
pub use acks::{AckWaiter, RevocationAcks};
pub use listener::{listener_application_name, InvalidationListener, ListenerStatus};
