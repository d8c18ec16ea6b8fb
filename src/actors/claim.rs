//! The protocol between a requester and an organization's actor: who decides a message's
//! fate, and what the requester does with the answer.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use actix::prelude::*;

/// Who gets to decide a message's fate: the actor by starting it, or the requester by giving
/// up first. Exactly one of them wins, so a request answered 503 never has its work done
/// anyway, and a started one is always waited for.
#[derive(Debug, Clone, Default)]
pub struct Claim(Arc<AtomicU8>);

const PENDING: u8 = 0;
const STARTED: u8 = 1;
const ABANDONED: u8 = 2;

impl Claim {
    /// The actor: true when it may do the work.
    pub fn start(&self) -> bool {
        self.0
            .compare_exchange(PENDING, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The requester: true when it gave up before the work started.
    pub(super) fn abandon(&self) -> bool {
        self.0
            .compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Messages that carry a [`Claim`], and what their requester does with the actor's answer.
pub trait Claimed: Message {
    /// What [`OrgActors::ask`] returns.
    type Answer;

    fn claim(&self) -> &Claim;

    /// Runs after the actor answered, outside its atomic section: work the request must wait
    /// for but the organization's other messages need not (a revoke's acknowledgements).
    fn conclude(result: Self::Result) -> impl Future<Output = Self::Answer>;
}
