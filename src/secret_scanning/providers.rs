//! The configured scanning partners and how a report from one is authenticated: the key its
//! identifier header names, and that key's signature over the raw body.

use std::collections::HashMap;
use std::sync::Arc;

use actix_web::http::header::HeaderMap;
use http::HeaderName;

use super::public_keys::{KeyLookup, PublicKeys};
use super::signature::verifies;
use crate::configuration::{SecretScanningSettings, SettingsError};
use crate::metrics::{Metrics, ReportOutcome};
use crate::outbound::{parse_url, OutboundClient};

/// One partner, as `[[secret_scanning.providers]]` configures it.
pub struct Provider {
    pub name: Arc<str>,
    key_id_header: HeaderName,
    signature_header: HeaderName,
    keys: PublicKeys,
}

/// Why a report is not authentic; each is a 401 `invalid_signature`, but for `KeysUnavailable`
/// (a 503: nothing can be verified until the keys document can be fetched).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotAuthentic {
    MissingHeaders,
    UnknownKey,
    BadSignature,
    KeysUnavailable,
}

impl NotAuthentic {
    pub fn outcome(self) -> ReportOutcome {
        match self {
            NotAuthentic::MissingHeaders => ReportOutcome::MissingHeaders,
            NotAuthentic::UnknownKey => ReportOutcome::UnknownKey,
            NotAuthentic::BadSignature => ReportOutcome::BadSignature,
            NotAuthentic::KeysUnavailable => ReportOutcome::KeysUnavailable,
        }
    }
}

impl Provider {
    /// What the 401 (or 503) says: enough for a partner to tell its headers are misnamed from
    /// a signature that doesn't verify, nothing an attacker could use.
    pub fn explain(&self, refusal: NotAuthentic) -> String {
        match refusal {
            NotAuthentic::MissingHeaders => format!(
                "The report must carry the {} and {} headers",
                self.key_id_header, self.signature_header
            ),
            NotAuthentic::UnknownKey => {
                "The report names a key identifier the provider does not publish".to_owned()
            }
            NotAuthentic::BadSignature => {
                "The report's signature does not verify with the provider's published key"
                    .to_owned()
            }
            NotAuthentic::KeysUnavailable => {
                "The provider's public keys can't be fetched now; retry shortly".to_owned()
            }
        }
    }

    /// Whether `body` is signed by one of the provider's listed keys, as the headers say.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        metrics: &Metrics,
    ) -> Result<(), NotAuthentic> {
        // Header names are case-insensitive: `HeaderName`s are stored lowercase.
        let (Some(identifier), Some(signature)) = (
            headers.get(self.key_id_header.as_str()),
            headers.get(self.signature_header.as_str()),
        ) else {
            return Err(NotAuthentic::MissingHeaders);
        };
        let Ok(identifier) = identifier.to_str() else {
            return Err(NotAuthentic::UnknownKey);
        };
        match self.keys.key(identifier.trim(), metrics).await {
            KeyLookup::Found(key) if verifies(&key, signature.as_bytes(), body) => Ok(()),
            KeyLookup::Found(_) => Err(NotAuthentic::BadSignature),
            KeyLookup::Unknown => Err(NotAuthentic::UnknownKey),
            KeyLookup::Unavailable => Err(NotAuthentic::KeysUnavailable),
        }
    }
}

/// Every configured partner, by its path name.
pub struct Providers(HashMap<String, Provider>);

impl Providers {
    /// From the settings (already checked at load; checked again here for the URL's form).
    pub fn from_settings(settings: &SecretScanningSettings) -> Result<Providers, SettingsError> {
        // Any address: a keys URL is the operator's setting (like the database's), never a
        // customer's, so the SSRF rules for webhook targets don't apply; the bounds do.
        let client = OutboundClient::new(settings.fetch_timeout, true);
        let mut providers = HashMap::new();
        for (index, provider) in settings.providers()?.into_iter().enumerate() {
            let url = parse_url(&provider.keys_url, settings.allow_http).map_err(|problem| {
                SettingsError::Value {
                    path: format!("secret_scanning.providers[{index}].keys_url"),
                    problem: problem.to_owned(),
                }
            })?;
            let keys = PublicKeys::new(
                &provider.name,
                url,
                client.clone(),
                settings.keys_ttl,
                settings.refetch_min_interval,
            );
            providers.insert(
                provider.name.clone(),
                Provider {
                    name: Arc::from(provider.name.as_str()),
                    key_id_header: provider.key_id_header,
                    signature_header: provider.signature_header,
                    keys,
                },
            );
        }
        Ok(Providers(providers))
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}
