//! Updating a key through its organization's actor: serialized with the organization's other
//! key changes, evicted here at once and acknowledged by every listening instance before the
//! PATCH answers, like a revocation.

use std::sync::Arc;

use actix::prelude::*;

use super::claim::{Claim, Claimed};
use super::org::{OrgActor, PendingAcks};
use crate::audit::AuditContext;
use crate::auth::InvalidationSource;
use crate::domain::{KeyId, ProjectId};
use crate::store::{Ceiling, KeyPatch, KeyRecord, UpdateError, UpdateRequest};

/// Update a key within `scope` (a project key's own project; None for a master key), held to
/// `ceiling` (None for a master key).
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Update, UpdateError>")]
pub struct UpdateKey {
    pub key_id: KeyId,
    pub scope: Option<ProjectId>,
    pub patch: Arc<KeyPatch>,
    pub ceiling: Option<Arc<Ceiling>>,
    pub context: AuditContext,
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
        if let Some(abandoned) = self.abandoned(&msg.claim) {
            return abandoned;
        }
        let (acks, ack_timeout) = (self.acks.clone(), self.ack_timeout);
        let (org, store, cache, metrics) = self.handles();
        AtomicResponse::new(Box::pin(
            async move {
                let waiter = acks.expect(uuid::Uuid::new_v4());
                let request = UpdateRequest {
                    organization_id: org,
                    scope: msg.scope,
                    key: msg.key_id,
                    patch: &msg.patch,
                    ceiling: msg.ceiling.as_deref(),
                };
                let outcome = store
                    .update_key(request, &waiter.address(), &msg.context)
                    .await?;
                let Some(announced) = outcome.announced else {
                    return Ok(Update {
                        record: outcome.record,
                        acks: None,
                    });
                };
                // The next request here reads the new state...
                cache
                    .invalidate(announced.hash, InvalidationSource::Local)
                    .await;
                metrics.keys_updated.inc();
                // ...and so does every instance that was listening, once it acknowledged.
                let pending = PendingAcks {
                    waiter,
                    timeout: ack_timeout,
                    metrics,
                };
                Ok(Update {
                    record: outcome.record,
                    acks: Some((pending, announced.listeners)),
                })
            }
            .into_actor(self),
        ))
    }
}
