//! `[secret_scanning]`: the scanning partners whose leak reports this service acts on, where
//! each publishes its public keys, and how those keys are fetched and kept.

use std::time::Duration;

use http::HeaderName;
use serde::Deserialize;

use super::error::SettingsError;
use super::serde_helpers::secs;

/// What `github` needs no setting for: its documented headers and keys document.
const GITHUB: KnownProvider = KnownProvider {
    name: "github",
    keys_url: Some("https://api.github.com/meta/public_keys/secret_scanning"),
    key_id_header: "Github-Public-Key-Identifier",
    signature_header: "Github-Public-Key-Signature",
};
/// GitLab's headers; its keys document is the operator's to name (`keys_url`).
const GITLAB: KnownProvider = KnownProvider {
    name: "gitlab",
    keys_url: None,
    key_id_header: "Gitlab-Public-Key-Identifier",
    signature_header: "Gitlab-Public-Key-Signature",
};

/// A name is a path segment: lowercase letters, digits and `-`, at most this long.
const MAX_NAME_LEN: usize = 64;
/// The longest a keys document fetch may be given.
const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(60);

struct KnownProvider {
    name: &'static str,
    keys_url: Option<&'static str>,
    key_id_header: &'static str,
    signature_header: &'static str,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretScanningSettings {
    /// `http://` keys documents are fetched (tests); else `https://` only.
    pub allow_http: bool,
    /// How long a fetched keys document is used before it is fetched again.
    #[serde(rename = "keys_ttl_secs", deserialize_with = "secs")]
    pub keys_ttl: Duration,
    /// A report naming a key identifier not in the document fetches it again, at most this
    /// often per provider and instance.
    #[serde(rename = "refetch_min_interval_secs", deserialize_with = "secs")]
    pub refetch_min_interval: Duration,
    /// A keys document must arrive whole within this.
    #[serde(
        rename = "fetch_timeout_ms",
        deserialize_with = "super::serde_helpers::millis"
    )]
    pub fetch_timeout: Duration,
    pub providers: Vec<ProviderSettings>,
}

/// One `[[secret_scanning.providers]]` as written: `github` and `gitlab` fill in what they
/// leave out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub name: String,
    pub keys_url: Option<String>,
    pub key_id_header: Option<String>,
    pub signature_header: Option<String>,
}

/// A provider with every setting known and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanningProvider {
    pub name: String,
    pub keys_url: String,
    pub key_id_header: HeaderName,
    pub signature_header: HeaderName,
}

impl SecretScanningSettings {
    /// The providers, defaults filled in, each checked; the error names the setting at fault.
    pub fn providers(&self) -> Result<Vec<ScanningProvider>, SettingsError> {
        let mut resolved: Vec<ScanningProvider> = Vec::new();
        for (index, provider) in self.providers.iter().enumerate() {
            let setting = |field: &str| format!("secret_scanning.providers[{index}].{field}");
            let wrong = |field: &str, problem: &str| SettingsError::Value {
                path: setting(field),
                problem: problem.to_owned(),
            };
            let name = provider.name.as_str();
            let name_ok = !name.is_empty()
                && name.len() <= MAX_NAME_LEN
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !name_ok {
                return Err(wrong("name", "must be 1-64 characters of a-z, 0-9 and -"));
            }
            if resolved.iter().any(|seen| seen.name == name) {
                return Err(wrong("name", "names another provider already listed"));
            }
            let known = [GITHUB, GITLAB]
                .into_iter()
                .find(|known| known.name == name);
            let keys_url = provider
                .keys_url
                .clone()
                .or_else(|| known.as_ref().and_then(|k| k.keys_url.map(str::to_owned)))
                .ok_or_else(|| wrong("keys_url", "must be set for this provider"))?;
            self.check_keys_url(&keys_url)
                .map_err(|problem| wrong("keys_url", problem))?;
            let header = |field: &str, given: &Option<String>, default: Option<&str>| {
                let value = given
                    .as_deref()
                    .or(default)
                    .ok_or_else(|| wrong(field, "must be set for this provider"))?;
                HeaderName::try_from(value)
                    .map_err(|_| wrong(field, "must be a valid HTTP header name"))
            };
            let key_id_header = header(
                "key_id_header",
                &provider.key_id_header,
                known.as_ref().map(|k| k.key_id_header),
            )?;
            let signature_header = header(
                "signature_header",
                &provider.signature_header,
                known.as_ref().map(|k| k.signature_header),
            )?;
            if key_id_header == signature_header {
                return Err(wrong(
                    "signature_header",
                    "must differ from key_id_header (each carries its own value)",
                ));
            }
            resolved.push(ScanningProvider {
                name: name.to_owned(),
                keys_url,
                key_id_header,
                signature_header,
            });
        }
        Ok(resolved)
    }

    /// The rules the fetch itself applies (`outbound::parse_url`), checked here so a bad URL
    /// stops the binary at start like every bad setting.
    fn check_keys_url(&self, raw: &str) -> Result<(), &'static str> {
        let url = url::Url::parse(raw).map_err(|_| "must be an absolute URL")?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err("must be https:// (http:// needs secret_scanning.allow_http = true)")
            }
            _ => return Err("must be an https:// URL"),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not contain a username or password");
        }
        if url.fragment().is_some() {
            return Err("must not contain a fragment");
        }
        Ok(())
    }

    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        let zero_or_over = |setting: &str, bad: bool, problem: &str| {
            if bad {
                Err(SettingsError::Value {
                    path: setting.to_owned(),
                    problem: problem.to_owned(),
                })
            } else {
                Ok(())
            }
        };
        zero_or_over(
            "secret_scanning.keys_ttl_secs",
            self.keys_ttl.is_zero(),
            "must be at least 1",
        )?;
        zero_or_over(
            "secret_scanning.fetch_timeout_ms",
            self.fetch_timeout.is_zero() || self.fetch_timeout > MAX_FETCH_TIMEOUT,
            "must be from 1 to 60000 (1 minute)",
        )?;
        self.providers().map(|_| ())
    }
}
