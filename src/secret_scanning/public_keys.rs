//! A provider's public keys: the document it publishes (`{"public_keys": [{"key_identifier",
//! "key" (PEM, ECDSA P-256), "is_current"}]}`), fetched through the checked outbound client,
//! kept for `keys_ttl`, and fetched again early when a report names an identifier the
//! document lacks — at most once per `refetch_min_interval`, so reports naming made-up
//! identifiers can't turn into a flood of fetches.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use p256::ecdsa::VerifyingKey;
use p256::pkcs8::DecodePublicKey;
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::metrics::{KeyFetchOutcome, Metrics};
use crate::outbound::{OutboundClient, TargetUrl};

/// The largest keys document read (GitHub's is a few kilobytes).
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// What a key identifier came to.
#[derive(Debug, Clone)]
pub enum KeyLookup {
    Found(VerifyingKey),
    /// Not in the document, even after fetching it again (or a refetch was too recent).
    Unknown,
    /// No document could be fetched, so nothing can be verified now.
    Unavailable,
}

/// One provider's keys, shared by every request on this instance.
pub struct PublicKeys {
    provider: String,
    url: TargetUrl,
    client: OutboundClient,
    ttl: Duration,
    refetch_min_interval: Duration,
    /// The keys in hand, read without waiting for a fetch under way: a report naming a made-up
    /// identifier (which may fetch, for up to the fetch timeout) never holds up genuine ones.
    in_hand: RwLock<InHand>,
    /// Held across a fetch: concurrent reports that need one wait for it instead of each
    /// making one.
    attempts: Mutex<Attempts>,
}

#[derive(Default)]
struct InHand {
    keys: HashMap<String, VerifyingKey>,
    /// When the keys in hand were fetched; None before the first success.
    fetched_at: Option<Instant>,
}

#[derive(Default)]
struct Attempts {
    /// When a fetch was last tried, successful or not: a document that can't be fetched is
    /// tried again at most once per `refetch_min_interval`, not at every report.
    tried_at: Option<Instant>,
    /// When a report naming an unknown identifier last made a fetch.
    refetched_at: Option<Instant>,
}

#[derive(Deserialize)]
struct Document {
    public_keys: Vec<DocumentKey>,
}

#[derive(Deserialize)]
struct DocumentKey {
    key_identifier: String,
    key: String,
    // `is_current` is read but not needed: any listed key verifies, current or not.
    #[allow(dead_code)]
    is_current: Option<bool>,
}

impl PublicKeys {
    pub fn new(
        provider: &str,
        url: TargetUrl,
        client: OutboundClient,
        ttl: Duration,
        refetch_min_interval: Duration,
    ) -> PublicKeys {
        PublicKeys {
            provider: provider.to_owned(),
            url,
            client,
            ttl,
            refetch_min_interval,
            in_hand: RwLock::new(InHand::default()),
            attempts: Mutex::new(Attempts::default()),
        }
    }

    /// The key named `identifier`.
    pub async fn key(&self, identifier: &str, metrics: &Metrics) -> KeyLookup {
        let (listed, stale) = self.in_hand(identifier);
        // A listed key is used at once while the document is fresh, or (stale) while another
        // report's fetch is under way; anything else waits its turn to fetch.
        let mut attempts = match (listed, stale, self.attempts.try_lock()) {
            (Some(key), false, _) | (Some(key), true, Err(_)) => return KeyLookup::Found(key),
            (_, _, Ok(attempts)) => attempts,
            (None, _, Err(_)) => self.attempts.lock().await,
        };
        // Another report's fetch may have ended while this one waited.
        let (_, stale) = self.in_hand(identifier);
        let fetch_now = stale && self.not_within_interval(attempts.tried_at);
        if fetch_now {
            self.fetch(&mut attempts, metrics).await;
        }
        if let (Some(key), _) = self.in_hand(identifier) {
            return KeyLookup::Found(key);
        }
        // A new identifier: the provider may have rotated its key since the last fetch.
        if !fetch_now && self.not_within_interval(attempts.refetched_at) {
            attempts.refetched_at = Some(Instant::now());
            self.fetch(&mut attempts, metrics).await;
            if let (Some(key), _) = self.in_hand(identifier) {
                return KeyLookup::Found(key);
            }
        }
        if self.read().fetched_at.is_none() {
            return KeyLookup::Unavailable;
        }
        KeyLookup::Unknown
    }

    /// The key named `identifier` among those in hand, and whether they are due a fetch.
    fn in_hand(&self, identifier: &str) -> (Option<VerifyingKey>, bool) {
        let in_hand = self.read();
        let stale = in_hand.fetched_at.is_none_or(|at| at.elapsed() >= self.ttl);
        (in_hand.keys.get(identifier).copied(), stale)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, InHand> {
        self.in_hand.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn not_within_interval(&self, last: Option<Instant>) -> bool {
        last.is_none_or(|at| at.elapsed() >= self.refetch_min_interval)
    }

    /// Fetches the document; on failure the keys in hand stay (logged and counted).
    async fn fetch(&self, attempts: &mut Attempts, metrics: &Metrics) {
        attempts.tried_at = Some(Instant::now());
        let fetches = &metrics.secret_scanning.key_fetches;
        match self.fetch_document().await {
            Ok(keys) => {
                fetches.inc(&self.provider, KeyFetchOutcome::Ok);
                tracing::info!(
                    provider = %self.provider,
                    keys = keys.len(),
                    "fetched the secret-scanning provider's public keys"
                );
                let fetched_at = Some(Instant::now());
                *self.in_hand.write().unwrap_or_else(PoisonError::into_inner) =
                    InHand { keys, fetched_at };
            }
            Err(problem) => {
                fetches.inc(&self.provider, KeyFetchOutcome::Failed);
                tracing::warn!(
                    provider = %self.provider,
                    url = %self.url,
                    %problem,
                    kept = self.read().keys.len(),
                    "could not fetch the secret-scanning provider's public keys"
                );
            }
        }
    }

    async fn fetch_document(&self) -> Result<HashMap<String, VerifyingKey>, String> {
        let fetched = self
            .client
            .get(&self.url, MAX_DOCUMENT_BYTES)
            .await
            .map_err(|attempt| attempt.detail)?;
        if !(200..300).contains(&fetched.status) {
            return Err(format!("answered {}", fetched.status));
        }
        parse_document(&fetched.body)
    }
}

/// The keys of a document. A key whose PEM can't be read is skipped (and logged): one bad
/// entry doesn't take the provider's other keys with it.
fn parse_document(body: &[u8]) -> Result<HashMap<String, VerifyingKey>, String> {
    let document: Document = serde_json::from_slice(body)
        .map_err(|error| format!("not a public keys document: {error}"))?;
    let mut keys = HashMap::new();
    for entry in document.public_keys {
        match VerifyingKey::from_public_key_pem(entry.key.trim()) {
            Ok(key) => {
                keys.insert(entry.key_identifier, key);
            }
            Err(error) => tracing::warn!(
                key_identifier = %entry.key_identifier,
                %error,
                "skipped a public key that is not a PEM ECDSA P-256 key"
            ),
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::{EncodePublicKey, LineEnding};

    use super::*;

    fn pem() -> String {
        let signing = SigningKey::random(&mut rand::rngs::OsRng);
        VerifyingKey::from(&signing)
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    }

    #[test]
    fn a_document_lists_every_readable_key_current_or_not() {
        let body = serde_json::json!({"public_keys": [
            {"key_identifier": "old", "key": pem(), "is_current": false},
            {"key_identifier": "new", "key": pem(), "is_current": true},
            {"key_identifier": "junk", "key": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----", "is_current": true},
        ]});
        let keys = parse_document(body.to_string().as_bytes()).unwrap();
        let mut names: Vec<_> = keys.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["new", "old"]);
    }

    #[test]
    fn anything_else_is_no_document() {
        for body in [&b"[]"[..], b"{}", b"not json", b"{\"public_keys\": {}}"] {
            assert!(parse_document(body).is_err(), "{body:?}");
        }
    }
}
