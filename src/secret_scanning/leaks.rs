//! What a verified report does: each token labelled, each live key of ours revoked (as DELETE
//! revokes, acknowledged by every instance), in the report's order, one transaction per key.
//! Look-alikes are judged by their checksum alone: a flood of them costs no database work.

use std::collections::{HashMap, HashSet};

use futures_util::future::join_all;
use serde::Serialize;

use super::report::ReportedToken;
use crate::actors::{Claim, Claimed, OrgActors, RevokeLeakedKey};
use crate::audit::AuditContext;
use crate::domain::{ApiKey, KeyHash, KeyType};
use crate::error::ApiError;
use crate::metrics::{LeakedKeyType, Metrics, TokenLabel};
use crate::store::{LeakSite, ReportedKey, Store};

/// One token's answer, in GitHub's feedback shape.
#[derive(Debug, Serialize)]
pub struct Feedback<'a> {
    /// SHA-256 (hex) of the token: the partner matches it to what it sent.
    pub token_hash: String,
    pub token_type: &'a str,
    pub label: &'static str,
}

/// What acting on a report needs.
pub struct Handles<'a> {
    pub store: &'a Store,
    pub actors: &'a OrgActors,
    pub metrics: &'a Metrics,
}

/// Labels every token and revokes the live keys among them. An error (the store or the
/// actors unavailable) comes after what was revoked before it committed: the partner's retry
/// finds those keys revoked already and finishes the rest.
pub async fn act_on<'a>(
    tokens: &'a [ReportedToken],
    provider: &str,
    context: &AuditContext,
    handles: Handles<'_>,
) -> Result<Vec<Feedback<'a>>, ApiError> {
    let hashes: Vec<Option<(KeyHash, KeyType)>> = tokens
        .iter()
        .map(|reported| {
            let key_type = ApiKey::check_format(&reported.token).ok()?;
            Some((KeyHash::of(&reported.token), key_type))
        })
        .collect();
    let well_formed: Vec<KeyHash> = hashes.iter().flatten().map(|(hash, _)| *hash).collect();
    let ours: HashMap<KeyHash, ReportedKey> = if well_formed.is_empty() {
        HashMap::new()
    } else {
        handles.metrics.secret_scanning.lookups.inc();
        let found = handles.store.find_reported_keys(&well_formed).await?;
        found.into_iter().map(|key| (key.hash, key)).collect()
    };
    let mut feedback = Vec::with_capacity(tokens.len());
    // The live keys to revoke, each once (the same token twice in one report is revoked once),
    // in the report's order, with the entry that reported it first.
    let mut seen: HashSet<KeyHash> = HashSet::new();
    let mut to_revoke: Vec<(&ReportedKey, KeyType, &ReportedToken)> = Vec::new();
    for (reported, hashed) in tokens.iter().zip(&hashes) {
        let known = (*hashed).and_then(|(hash, key_type)| Some((ours.get(&hash)?, key_type)));
        let label = match known {
            Some(_) => TokenLabel::TruePositive,
            None => TokenLabel::FalsePositive,
        };
        if let Some((key, key_type)) = known.filter(|(key, _)| key.live) {
            if seen.insert(key.hash) {
                to_revoke.push((key, key_type, reported));
            }
        }
        handles.metrics.secret_scanning.tokens.inc(provider, label);
        feedback.push(Feedback {
            token_hash: KeyHash::of(&reported.token).to_hex(),
            token_type: &reported.token_type,
            label: label.as_str(),
        });
    }
    revoke_all(&to_revoke, provider, context, &handles).await?;
    Ok(feedback)
}

/// Revokes each key in turn, each in its own transaction, stopping at the first failure; then
/// waits for every committed revocation's acknowledgements side by side (so a report of many
/// keys waits one ack timeout at most, not one per key) before answering, error or not.
async fn revoke_all(
    keys: &[(&ReportedKey, KeyType, &ReportedToken)],
    provider: &str,
    context: &AuditContext,
    handles: &Handles<'_>,
) -> Result<(), ApiError> {
    let mut committed = Vec::with_capacity(keys.len());
    let mut failure: Option<ApiError> = None;
    for (key, key_type, reported) in keys {
        let message = RevokeLeakedKey {
            key_id: key.key_id,
            site: LeakSite {
                url: reported.url.clone(),
                source: reported.source.clone(),
            },
            context: context.clone(),
            claim: Claim::default(),
        };
        let answer = match handles.actors.answer(key.organization_id, message).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                failure = Some(error.into());
                break;
            }
            Err(error) => {
                failure = Some(error.into());
                break;
            }
        };
        committed.push(async move {
            let revoked = RevokeLeakedKey::conclude(Ok(answer)).await;
            (*key, *key_type, revoked)
        });
    }
    for (key, key_type, revoked) in join_all(committed).await {
        // The acknowledgements can't fail once committed; `false`: revoked or expired meanwhile.
        if !matches!(revoked, Ok(true)) {
            continue;
        }
        tracing::warn!(
            key_id = %key.key_id,
            organization_id = %key.organization_id,
            "revoked a key a secret-scanning partner reported leaked"
        );
        let key_type = match key_type {
            KeyType::Master => LeakedKeyType::Master,
            KeyType::Project => LeakedKeyType::Project,
        };
        handles
            .metrics
            .secret_scanning
            .keys_revoked
            .inc(provider, key_type);
    }
    failure.map_or(Ok(()), Err)
}
