//! One organization's actor: create, revoke and roll its keys (and update them, `update.rs`),
//! serialized, and keep this instance's auth cache in step before answering.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use chrono::{DateTime, Utc};

use super::claim::{Claim, Claimed};
use crate::audit::AuditContext;
use crate::auth::{AuthCache, InvalidationSource};
use crate::domain::{ApiKey, DisplayName, KeyId, KeyType, OrgId, ProjectId, Scopes};
use crate::invalidation::{AckWaiter, RevocationAcks};
use crate::metrics::Metrics;
use crate::store::{
    Caller, CreateKeyError, KeyRecord, NewKey, RevokeError, RevokeOutcome, RollError, RollRequest,
    Store, StoreError,
};

pub struct OrgActor {
    pub(super) org: OrgId,
    pub(super) acks: Arc<RevocationAcks>,
    pub(super) ack_timeout: Duration,
    pub(super) store: Store,
    pub(super) cache: Arc<AuthCache>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) max_active_keys: i64,
    pub(super) mailbox_capacity: usize,
    pub(super) idle_timeout: Duration,
    pub(super) last_active: Instant,
}

impl Actor for OrgActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox_capacity);
        self.metrics.org_actors.inc();
        let check_every = (self.idle_timeout / 4).max(Duration::from_millis(100));
        ctx.run_interval(check_every, |actor, ctx| {
            if actor.last_active.elapsed() >= actor.idle_timeout {
                ctx.stop();
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.metrics.org_actors.dec();
    }
}

/// A new project key. The plaintext lives only in the returned `CreatedKey`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<CreatedKey, CreateKeyError>")]
pub struct CreateKey {
    pub project_id: ProjectId,
    pub name: DisplayName,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Scopes,
    pub context: AuditContext,
    pub claim: Claim,
}

#[derive(Debug)]
pub struct CreatedKey {
    pub key: ApiKey,
    pub record: KeyRecord,
}

/// The key a change is about, looked for within `scope` (a project key's own project; None
/// for a master key), and who asked, for the change's audit event.
#[derive(Debug, Clone)]
pub struct KeyTarget {
    pub key_id: KeyId,
    pub scope: Option<ProjectId>,
    pub context: AuditContext,
    /// Who asks: read again inside the change's transaction.
    pub caller: Caller,
}

/// Revoke a key.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Revocation, RevokeError>")]
pub struct RevokeKey {
    pub target: KeyTarget,
    pub claim: Claim,
}

/// Roll a key: a new key now, the old one expiring after `overlap`.
#[derive(Debug, Clone, Message)]
#[rtype(result = "Result<Roll, RollError>")]
pub struct RollKey {
    pub target: KeyTarget,
    pub overlap: chrono::Duration,
    pub claim: Claim,
}

/// A committed roll; the plaintext of the new key lives only here and in the response.
#[derive(Debug)]
pub struct RolledKey {
    pub key: ApiKey,
    pub record: KeyRecord,
    pub replaced: KeyId,
    /// When the old key now stops working.
    pub replaced_expires_at: DateTime<Utc>,
}

/// A committed roll whose acknowledgements (the old key's new expiry evicted everywhere)
/// may still be on their way.
pub struct Roll {
    rolled: RolledKey,
    listeners: Vec<String>,
    acks: PendingAcks,
}

/// A committed revocation, already refused by this instance, whose acknowledgements by the
/// other instances may still be on their way.
pub struct Revocation {
    outcome: RevokeOutcome,
    /// None when there is nothing to wait for (the key was already revoked).
    acks: Option<PendingAcks>,
}

/// The acknowledgements a revocation waits for: registered before its commit, awaited after
/// the actor moved on, so one instance that does not answer holds this request only, not
/// the organization's other creates and revokes.
pub(super) struct PendingAcks {
    pub(super) waiter: AckWaiter,
    pub(super) timeout: Duration,
    pub(super) metrics: Arc<Metrics>,
}

impl PendingAcks {
    pub(super) async fn wait(self, listeners: &[String]) {
        if let Err(missing) = self.waiter.wait_for(listeners, self.timeout).await {
            self.metrics.revocation_ack_timeouts.inc();
            tracing::warn!(
                listeners = listeners.len(),
                unacknowledged_instances = %missing.join(","),
                "not every instance acknowledged a revocation in time"
            );
        }
    }
}

impl Claimed for CreateKey {
    type Answer = Result<CreatedKey, CreateKeyError>;

    fn claim(&self) -> &Claim {
        &self.claim
    }

    async fn conclude(result: Self::Result) -> Self::Answer {
        result
    }
}

impl Claimed for RevokeKey {
    type Answer = Result<RevokeOutcome, RevokeError>;

    fn claim(&self) -> &Claim {
        &self.claim
    }

    /// The DELETE answers only once every listening instance acknowledged (or the timeout).
    async fn conclude(result: Self::Result) -> Self::Answer {
        let Revocation { outcome, acks } = result?;
        if let Some(acks) = acks {
            acks.wait(&outcome.listeners).await;
        }
        Ok(outcome)
    }
}

impl Claimed for RollKey {
    type Answer = Result<RolledKey, RollError>;

    fn claim(&self) -> &Claim {
        &self.claim
    }

    /// As a revoke: the roll answers once every listening instance evicted the old key, so
    /// none keeps using it past its new expiry.
    async fn conclude(result: Self::Result) -> Self::Answer {
        let Roll {
            rolled,
            listeners,
            acks,
        } = result?;
        acks.wait(&listeners).await;
        Ok(rolled)
    }
}

/// What a change that every instance must acknowledge works with: the actor's handles, and a
/// waiter registered before the change commits, so no acknowledgement can arrive unseen.
pub(super) struct Announcing {
    pub(super) org: OrgId,
    pub(super) store: Store,
    pub(super) cache: Arc<AuthCache>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) waiter: AckWaiter,
    ack_timeout: Duration,
}

impl Announcing {
    /// The acknowledgements to wait for once the change committed.
    pub(super) fn into_pending(self) -> PendingAcks {
        PendingAcks {
            waiter: self.waiter,
            timeout: self.ack_timeout,
            metrics: self.metrics,
        }
    }
}

impl OrgActor {
    /// Runs `work` for a change every instance must acknowledge (revoke, roll, update), as an
    /// atomic response: the organization's next message waits for its transaction.
    pub(super) fn announcing<T, E, Work>(
        &mut self,
        claim: &Claim,
        work: impl FnOnce(Announcing) -> Work,
    ) -> AtomicResponse<Self, Result<T, E>>
    where
        T: 'static,
        E: From<StoreError> + 'static,
        Work: std::future::Future<Output = Result<T, E>> + 'static,
    {
        if let Some(abandoned) = self.abandoned(claim) {
            return abandoned;
        }
        let (org, store, cache, metrics) = self.handles();
        let change = Announcing {
            org,
            store,
            cache,
            metrics,
            waiter: self.acks.expect(uuid::Uuid::new_v4()),
            ack_timeout: self.ack_timeout,
        };
        AtomicResponse::new(Box::pin(work(change).into_actor(self)))
    }

    /// What a message's work needs of the actor, owned, so the work can outlive `&mut self`.
    pub(super) fn handles(&self) -> (OrgId, Store, Arc<AuthCache>, Arc<Metrics>) {
        (
            self.org,
            self.store.clone(),
            self.cache.clone(),
            self.metrics.clone(),
        )
    }

    /// Every message starts here: it counts as activity, and if its requester gave up before
    /// it started, the answer (which nobody reads) is ready and no work is done.
    pub(super) fn abandoned<T: 'static, E: From<StoreError> + 'static>(
        &mut self,
        claim: &Claim,
    ) -> Option<AtomicResponse<Self, Result<T, E>>> {
        self.last_active = Instant::now();
        if claim.start() {
            return None;
        }
        let gave_up = StoreError::Unavailable(anyhow::anyhow!(
            "the requester gave up before the work started"
        ));
        Some(AtomicResponse::new(Box::pin(fut::ready(Err(
            gave_up.into()
        )))))
    }
}

impl Handler<CreateKey> for OrgActor {
    // Atomic: the next message waits until this one's transaction has finished.
    type Result = AtomicResponse<Self, Result<CreatedKey, CreateKeyError>>;

    fn handle(&mut self, msg: CreateKey, _: &mut Self::Context) -> Self::Result {
        if let Some(abandoned) = self.abandoned(&msg.claim) {
            return abandoned;
        }
        let max = self.max_active_keys;
        let (org, store, cache, metrics) = self.handles();
        AtomicResponse::new(Box::pin(
            async move {
                let key = ApiKey::generate(KeyType::Project);
                let new = NewKey {
                    id: KeyId::new(),
                    organization_id: org,
                    project_id: Some(msg.project_id),
                    name: &msg.name,
                    key: &key,
                    expires_at: msg.expires_at,
                    scopes: &msg.scopes,
                    enabled: true,
                    rate_limit: None,
                };
                // Before the transaction begins: a revocation of this key heard from another
                // instance between the commit and the insert below is newer than this epoch,
                // so the insert can't leave the key active here.
                let began = cache.epoch();
                let record = store.create_key(new, max, &msg.context).await?;
                cache
                    .insert_created(key.hash(), record.identity(), began)
                    .await;
                metrics.keys_created.inc();
                Ok(CreatedKey { key, record })
            }
            .into_actor(self),
        ))
    }
}

impl Handler<RevokeKey> for OrgActor {
    type Result = AtomicResponse<Self, Result<Revocation, RevokeError>>;

    fn handle(&mut self, msg: RevokeKey, _: &mut Self::Context) -> Self::Result {
        let claim = msg.claim.clone();
        self.announcing(&claim, move |change| async move {
            let outcome = change
                .store
                .revoke_key(
                    change.org,
                    msg.target.scope,
                    msg.target.key_id,
                    &msg.target.caller,
                    &change.waiter.address(),
                    &msg.target.context,
                )
                .await?;
            // Before the DELETE answers, this instance already refuses the key...
            change
                .cache
                .invalidate(outcome.hash, InvalidationSource::Local)
                .await;
            if outcome.already_revoked {
                return Ok(Revocation {
                    outcome,
                    acks: None,
                });
            }
            change.metrics.keys_revoked.inc();
            // ...and so will every instance that was listening, once it acknowledged:
            // waited for by the requester (`conclude`), not here.
            Ok(Revocation {
                outcome,
                acks: Some(change.into_pending()),
            })
        })
    }
}

impl Handler<RollKey> for OrgActor {
    type Result = AtomicResponse<Self, Result<Roll, RollError>>;

    fn handle(&mut self, msg: RollKey, _: &mut Self::Context) -> Self::Result {
        let claim = msg.claim.clone();
        let max = self.max_active_keys;
        self.announcing(&claim, move |change| async move {
            let key = ApiKey::generate(KeyType::Project);
            // As for a create: the new key's entry is judged by an epoch from before the
            // transaction.
            let began = change.cache.epoch();
            let roll = RollRequest {
                organization_id: change.org,
                scope: msg.target.scope,
                old_key: msg.target.key_id,
                overlap: msg.overlap,
                new_id: KeyId::new(),
                new_key: &key,
                now: Utc::now(),
                caller: &msg.target.caller,
            };
            let outcome = change
                .store
                .roll_key(roll, max, &change.waiter.address(), &msg.target.context)
                .await?;
            // The old key's cached entry (without its new expiry) goes before the answer,
            // here at once and on every listening instance before `conclude` returns.
            change
                .cache
                .invalidate(outcome.announced.hash, InvalidationSource::Local)
                .await;
            change
                .cache
                .insert_created(key.hash(), outcome.new_key.identity(), began)
                .await;
            change.metrics.keys_created.inc();
            change.metrics.keys_rolled.inc();
            Ok(Roll {
                rolled: RolledKey {
                    key,
                    record: outcome.new_key,
                    replaced: outcome.old_key,
                    replaced_expires_at: outcome.old_expires_at,
                },
                listeners: outcome.announced.listeners,
                acks: change.into_pending(),
            })
        })
    }
}
