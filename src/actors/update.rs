//! Updating a key through its organization's actor: serialized with the organization's other
//! key changes, evicted here at once and acknowledged by every listening instance before the
//! PATCH answers, like a revocation.

use std::sync::Arc;

use actix::prelude::*;

use super::claim::{Claim, Claimed};
use super::org::{KeyTarget, OrgActor, PendingAcks};
use crate::auth::InvalidationSource;
use crate::store::{KeyPatch, KeyRecord, UpdateError, UpdateRequest};

/// Update a key (a project key held to its ceiling, read in the update's transaction).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Update, UpdateError>")]
pub struct UpdateKey {
    pub target: KeyTarget,
    pub patch: Arc<KeyPatch>,
    pub claim: Claim,
}

/// A committed update, already enforced here, whose acknowledgements may still be on their
/// way (None: nothing changed, nothing to wait for).
pub struct Update {
    record: KeyRecord,
    acks: Option<(PendingAcks, Vec<String>)>,
}

impl Claimed for UpdateKey {
    type Answer = Result<KeyRecord, UpdateError>;

    fn claim(&self) -> &Claim {
        &self.claim
    }

    /// The PATCH answers once every listening instance evicted the key's old state.
    async fn conclude(result: Self::Result) -> Self::Answer {
        let Update { record, acks } = result?;
        if let Some((acks, listeners)) = acks {
            acks.wait(&listeners).await;
        }
        Ok(record)
    }
}

impl Handler<UpdateKey> for OrgActor {
    type Result = AtomicResponse<Self, Result<Update, UpdateError>>;

    fn handle(&mut self, msg: UpdateKey, _: &mut Self::Context) -> Self::Result {
        let claim = msg.claim.clone();
        self.announcing(&claim, move |change| async move {
            let request = UpdateRequest {
                organization_id: change.org,
                scope: msg.target.scope,
                key: msg.target.key_id,
                patch: &msg.patch,
                caller: &msg.target.caller,
            };
            let outcome = change
                .store
                .update_key(request, &change.waiter.address(), &msg.target.context)
                .await?;
            let Some(announced) = outcome.announced else {
                return Ok(Update {
                    record: outcome.record,
                    acks: None,
                });
            };
            // The next request here reads the new state...
            change
                .cache
                .invalidate(announced.hash, InvalidationSource::Local)
                .await;
            change.metrics.keys_updated.inc();
            // ...and so does every instance that was listening, once it acknowledged.
            Ok(Update {
                record: outcome.record,
                acks: Some((change.into_pending(), announced.listeners)),
            })
        })
    }
}
