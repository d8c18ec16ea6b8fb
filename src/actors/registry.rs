//! Finds or starts an organization's actor. Actors live on one dedicated arbiter; the map is
//! sharded so lookups for different organizations rarely contend. A stopped actor (idle) is
//! replaced on next use.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::prelude::*;
use actix_rt::ArbiterHandle;

use super::claim::Claimed;
use super::org::OrgActor;
use crate::auth::AuthCache;
use crate::configuration::Settings;
use crate::domain::OrgId;
use crate::error::{ApiError, ErrorCode};
use crate::invalidation::RevocationAcks;
use crate::metrics::Metrics;
use crate::store::Store;

const SHARDS: usize = 16;

/// The actor's mailbox stayed full, or it could not be reached: the caller answers 503.
#[derive(Debug, thiserror::Error)]
#[error("organization actor unavailable: {0}")]
pub struct ActorUnavailable(#[source] MailboxError);

impl From<ActorUnavailable> for ApiError {
    fn from(error: ActorUnavailable) -> Self {
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            "Key management is busy; retry shortly",
        )
        .with_cause(error)
    }
}

pub struct OrgActors {
    shards: Vec<Mutex<HashMap<OrgId, Addr<OrgActor>>>>,
    hasher: RandomState,
    arbiter: ArbiterHandle,
    store: Store,
    cache: Arc<AuthCache>,
    acks: Arc<RevocationAcks>,
    ack_timeout: Duration,
    metrics: Arc<Metrics>,
    max_active_keys: i64,
    mailbox_capacity: usize,
    idle_timeout: Duration,
    ask_timeout: Duration,
}

impl OrgActors {
    pub fn new(
        arbiter: ArbiterHandle,
        store: Store,
        cache: Arc<AuthCache>,
        acks: Arc<RevocationAcks>,
        metrics: Arc<Metrics>,
        settings: &Settings,
    ) -> OrgActors {
        OrgActors {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            arbiter,
            store,
            cache,
            acks,
            ack_timeout: settings.listener.ack_timeout,
            metrics,
            max_active_keys: i64::from(settings.keys.max_active_per_org.get()),
            mailbox_capacity: settings.actors.mailbox_capacity.get(),
            idle_timeout: settings.actors.idle_timeout,
            ask_timeout: settings.actors.ask_timeout,
        }
    }

    /// Sends `msg` to the organization's actor, waits for its answer, then concludes it
    /// ([`Claimed::conclude`]) with the actor already free for the next message. An actor that
    /// stopped in between is replaced once. A message not started within the ask timeout
    /// (full mailbox, busy actor) is abandoned: `ActorUnavailable`, and it will never run. A
    /// started one is waited for to the end, so the answer always tells what happened.
    pub async fn ask<M>(&self, org: OrgId, msg: M) -> Result<M::Answer, ActorUnavailable>
    where
        M: Message + Claimed + Clone + Send + 'static,
        M::Result: Send,
        OrgActor: Handler<M>,
        <OrgActor as Actor>::Context: ToEnvelope<OrgActor, M>,
    {
        let answer = self.answer(org, msg).await?;
        Ok(M::conclude(answer).await)
    }

    /// [`ask`](Self::ask) without the conclusion: the actor's answer, for a requester that
    /// concludes several messages side by side ([`Claimed::conclude`] each, before its answer).
    pub async fn answer<M>(&self, org: OrgId, msg: M) -> Result<M::Result, ActorUnavailable>
    where
        M: Message + Claimed + Clone + Send + 'static,
        M::Result: Send,
        OrgActor: Handler<M>,
        <OrgActor as Actor>::Context: ToEnvelope<OrgActor, M>,
    {
        let mut retried = false;
        loop {
            let addr = self.actor_for(org);
            let mut request = std::pin::pin!(addr.send(msg.clone()));
            match tokio::time::timeout(self.ask_timeout, request.as_mut()).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(MailboxError::Closed)) if !retried => retried = true,
                Ok(Err(error)) => return Err(ActorUnavailable(error)),
                Err(_) if msg.claim().abandon() => {
                    return Err(ActorUnavailable(MailboxError::Timeout))
                }
                // Started: it finishes within the store's deadline; wait for its answer.
                Err(_) => return request.await.map_err(ActorUnavailable),
            }
        }
    }

    fn actor_for(&self, org: OrgId) -> Addr<OrgActor> {
        let shard = &self.shards[self.hasher.hash_one(org) as usize % SHARDS];
        let mut actors = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(addr) = actors.get(&org).filter(|addr| addr.connected()) {
            return addr.clone();
        }
        actors.retain(|_, addr| addr.connected());
        let actor = OrgActor {
            org,
            acks: self.acks.clone(),
            ack_timeout: self.ack_timeout,
            store: self.store.clone(),
            cache: self.cache.clone(),
            metrics: self.metrics.clone(),
            max_active_keys: self.max_active_keys,
            mailbox_capacity: self.mailbox_capacity,
            idle_timeout: self.idle_timeout,
            last_active: Instant::now(),
        };
        let addr = OrgActor::start_in_arbiter(&self.arbiter, move |_| actor);
        actors.insert(org, addr.clone());
        addr
    }
}
