//! Revoking a key a secret-scanning partner reported leaked, through its organization's
//! actor: serialized with the organization's other key changes, refused here at once and
//! acknowledged by every listening instance before the report is answered, as a DELETE.

use actix::prelude::*;

use super::claim::{Claim, Claimed};
use super::org::{OrgActor, PendingAcks};
use crate::audit::AuditContext;
use crate::auth::InvalidationSource;
use crate::domain::KeyId;
use crate::store::{LeakSite, StoreError};

/// Revoke a leaked key of the actor's organization, whatever its type.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<LeakRevocation, StoreError>")]
pub struct RevokeLeakedKey {
    pub key_id: KeyId,
    pub site: LeakSite,
    pub context: AuditContext,
    pub claim: Claim,
}

/// A committed leak revocation whose acknowledgements may still be on their way; None when
/// there was nothing to revoke (already revoked or expired meanwhile).
pub struct LeakRevocation(Option<(PendingAcks, Vec<String>)>);

impl Claimed for RevokeLeakedKey {
    /// Whether this report revoked the key.
    type Answer = Result<bool, StoreError>;

    fn claim(&self) -> &Claim {
        &self.claim
    }

    async fn conclude(result: Self::Result) -> Self::Answer {
        let LeakRevocation(acks) = result?;
        let Some((acks, listeners)) = acks else {
            return Ok(false);
        };
        acks.wait(&listeners).await;
        Ok(true)
    }
}

impl Handler<RevokeLeakedKey> for OrgActor {
    type Result = AtomicResponse<Self, Result<LeakRevocation, StoreError>>;

    fn handle(&mut self, msg: RevokeLeakedKey, _: &mut Self::Context) -> Self::Result {
        let claim = msg.claim.clone();
        self.announcing(&claim, move |change| async move {
            let outcome = change
                .store
                .revoke_leaked_key(
                    change.org,
                    msg.key_id,
                    &msg.site,
                    &change.waiter.address(),
                    &msg.context,
                )
                .await?;
            let Some(outcome) = outcome else {
                return Ok(LeakRevocation(None));
            };
            change
                .cache
                .invalidate(outcome.hash, InvalidationSource::Local)
                .await;
            change.metrics.keys_revoked.inc();
            Ok(LeakRevocation(Some((
                change.into_pending(),
                outcome.listeners,
            ))))
        })
    }
}
