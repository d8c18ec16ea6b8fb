//! Keeping every instance's auth cache honest about revocations.
//!
//! Protocol (two Postgres channels):
//! - `logstitch_key_revoked`, payload `<hex SHA-256 of the key>:<revocation id>`, sent by the
//!   revoke transaction, so it is delivered only on commit.
//! - `logstitch_revocation_ack`, payload `<revocation id>:<instance id>`, sent by each
//!   instance's listener once it has evicted the key.
//!
//! The revoking instance waits (up to `listener.ack_timeout_ms`) for an ack from every
//! listener that was listening when it revoked, so when the DELETE answers, every instance
//! already refuses the key.

mod acks;
mod listener;

pub use acks::{AckWaiter, RevocationAcks};
pub use listener::{listener_application_name, InvalidationListener, ListenerStatus};

/// Revocation notices; see the module docs for the payload.
pub const REVOCATION_CHANNEL: &str = "logstitch_key_revoked";
/// Acknowledgements of revocation notices.
pub const ACK_CHANNEL: &str = "logstitch_revocation_ack";
/// Every listening connection's `application_name` starts with this; the instance id follows.
pub const LISTENER_NAME_PREFIX: &str = "logstitch-listener-";
