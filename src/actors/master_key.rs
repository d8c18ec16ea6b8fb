//! Rolling an organization's master key through its actor (the admin API): serialized with the
//! organization's other key changes, the old master keys refused here at once and
//! acknowledged by every listening instance before the answer, like a revocation.

use actix::prelude::*;
use futures_util::future::join_all;
use uuid::Uuid;

use super::claim::{Claim, Claimed};
use super::org::{OrgActor, PendingAcks};
use crate::audit::AuditContext;
use crate::auth::InvalidationSource;
use crate::store::{MasterKeyRoll, MasterKeyRollError};

/// Give the organization a new master key and revoke its old one(s).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<MasterKeyRolled, MasterKeyRollError>")]
pub struct RollMasterKey {
    pub context: AuditContext,
    pub claim: Claim,
}

/// A committed master-key roll, the old keys already refused here, whose acknowledgements
/// (one revocation each) may still be on their way.
pub struct MasterKeyRolled {
    roll: MasterKeyRoll,
    acks: Vec<PendingAcks>,
}

impl Claimed for RollMasterKey {
    type Answer = Result<MasterKeyRoll, MasterKeyRollError>;

    fn claim(&self) -> &Claim {
        &self.claim
    }

    /// The answer waits until every listening instance evicted every old master key (or the
    /// ack timeout): the waits run side by side, so the roll waits one timeout at most.
    async fn conclude(result: Self::Result) -> Self::Answer {
        let MasterKeyRolled { roll, acks } = result?;
        join_all(
            acks.into_iter()
                .zip(&roll.revoked)
                .map(|(acks, revoked)| acks.wait(&revoked.announced.listeners)),
        )
        .await;
        Ok(roll)
    }
}

impl Handler<RollMasterKey> for OrgActor {
    type Result = AtomicResponse<Self, Result<MasterKeyRolled, MasterKeyRollError>>;

    fn handle(&mut self, msg: RollMasterKey, _: &mut Self::Context) -> Self::Result {
        if let Some(abandoned) = self.abandoned(&msg.claim) {
            return abandoned;
        }
        let (org, store, cache, metrics) = self.handles();
        let (acks, timeout) = (self.acks.clone(), self.ack_timeout);
        AtomicResponse::new(Box::pin(
            async move {
                // One waiter per old key, each registered before the commit (the store asks
                // for an address per revoked key, inside the transaction).
                let mut waiters = Vec::new();
                let mut next_address = || {
                    let waiter = acks.expect(Uuid::new_v4());
                    let address = waiter.address();
                    waiters.push(waiter);
                    address
                };
                // As for a create: the new key's entry is judged by an epoch from before the
                // transaction.
                let began = cache.epoch();
                let roll = store
                    .roll_master_key(org, &mut next_address, &msg.context)
                    .await?;
                // Before the answer, this instance already refuses the old keys...
                for revoked in &roll.revoked {
                    cache
                        .invalidate(revoked.announced.hash, InvalidationSource::Local)
                        .await;
                    metrics.keys_revoked.inc();
                }
                cache
                    .insert_created(roll.master_key.hash(), roll.record.identity(), began)
                    .await;
                metrics.keys_created.inc();
                // ...and so will every instance that was listening, once it acknowledged:
                // waited for by the requester (`conclude`), not here.
                let acks = waiters
                    .into_iter()
                    .map(|waiter| PendingAcks {
                        waiter,
                        timeout,
                        metrics: metrics.clone(),
                    })
                    .collect();
                Ok(MasterKeyRolled { roll, acks })
            }
            .into_actor(self),
        ))
    }
}
