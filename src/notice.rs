//! The notice protocol on Postgres LISTEN/NOTIFY that keeps every instance's auth cache
//! honest: channel names, payloads, and the application name a listening session takes.
//! The store sends notices (inside the transaction of the change, so they go out only on
//! commit); `invalidation` listens and acknowledges. Below both.
//!
//! Channels:
//! - `logstitch_key_revoked`, payload `<hex SHA-256 of the key>:<revocation id>:<revoker's
//!   instance id>`, sent by the revoke transaction, so it is delivered only on commit.
//! - `logstitch_ack_<revoker's instance id>`, payload `<revocation id>:<instance id>`, sent by
//!   each instance's listener once it has evicted the key. Each instance listens on its own
//!   ack channel only, so a revoke costs N notices and N acks with N instances — not N² acks,
//!   as when every instance heard every ack on one shared channel.
//! - `logstitch_revocation_ack`, that shared channel, kept for rolling upgrades from versions
//!   before addressed acks: a notice without a revoker's id is acknowledged there, and every
//!   instance still listens on it (which costs nothing while no old instance sends).
//! - `logstitch_webhooks`, empty payload, sent by a transaction that queued webhook deliveries
//!   (so on its commit): it wakes every instance's webhook dispatcher, which then claims what
//!   is due. Only a wake-up: a lost one is made up by the dispatcher's poll.

use uuid::Uuid;

use crate::domain::KeyHash;

/// Revocation notices; see the module docs for the payload.
pub const REVOCATION_CHANNEL: &str = "logstitch_key_revoked";
/// Wakes the webhook dispatchers; see the module docs.
pub const WEBHOOK_CHANNEL: &str = "logstitch_webhooks";
/// Acknowledgements of notices that name no revoker (sent by versions before addressed acks).
pub const SHARED_ACK_CHANNEL: &str = "logstitch_revocation_ack";
/// An instance's own ack channel is this prefix and its instance id.
pub const ACK_CHANNEL_PREFIX: &str = "logstitch_ack_";
/// Every listening connection's `application_name` starts with this; the instance id follows.
pub const LISTENER_NAME_PREFIX: &str = "logstitch-listener-";

/// The channel on which `instance_id` hears the acknowledgements of its revocations. `None`
/// for an id that could not be one of ours (instance ids are short lowercase hex), so a
/// malformed notice can't send acks to an arbitrary channel.
pub fn ack_channel(instance_id: &str) -> Option<String> {
    let plausible = (1..=32).contains(&instance_id.len())
        && instance_id
            .bytes()
            .all(|byte| byte.is_ascii_digit() || byte.is_ascii_lowercase());
    plausible.then(|| format!("{ACK_CHANNEL_PREFIX}{instance_id}"))
}

/// What a revocation notice carries besides the key's hash: which revocation it is, and the
/// instance whose ack channel its acknowledgements go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckAddress {
    pub revocation: Uuid,
    pub reply_to: String,
}

impl AckAddress {
    /// The notice's payload: `<hex hash>:<revocation id>:<revoker's instance id>`.
    pub fn notice(&self, hash: KeyHash) -> String {
        format!("{}:{}:{}", hash.to_hex(), self.revocation, self.reply_to)
    }
}
