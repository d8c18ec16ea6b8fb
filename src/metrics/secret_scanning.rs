//! Secret scanning (src/secret_scanning): partners' reports by outcome, the tokens in them by
//! label, the keys revoked for leaking, and the fetches of partners' public keys. Every family
//! is labelled by provider, whose values are the configured names: bounded by the settings.

use prometheus::{IntCounter, IntCounterVec};

use super::family::{label_values, Families, LabelValue};

label_values! {
    /// `logstitch_secret_scanning_reports_total{provider, outcome}`, each report counted once.
    ReportOutcome {
        Verified => "verified",
        MissingHeaders => "missing_headers",
        UnknownKey => "unknown_key",
        BadSignature => "bad_signature",
        TooLarge => "too_large",
        InvalidBody => "invalid_body",
        KeysUnavailable => "keys_unavailable",
        Failed => "failed",
    }
}

label_values! {
    /// `logstitch_secret_scanning_tokens_total{provider, label}`.
    TokenLabel {
        TruePositive => "true_positive",
        FalsePositive => "false_positive",
    }
}

label_values! {
    /// `logstitch_secret_scanning_keys_revoked_total{provider, key_type}`.
    LeakedKeyType {
        Master => "master",
        Project => "project",
    }
}

label_values! {
    /// `logstitch_secret_scanning_key_fetches_total{provider, outcome}`.
    KeyFetchOutcome {
        Ok => "ok",
        Failed => "failed",
    }
}

/// A counter family labelled by provider and one enum label.
pub struct ProviderCounter<L> {
    family: IntCounterVec,
    label: std::marker::PhantomData<L>,
}

impl<L: LabelValue> ProviderCounter<L> {
    fn new(families: &Families, name: &str, help: &str, label: &str) -> ProviderCounter<L> {
        ProviderCounter {
            family: families.counter_vec(name, help, &["provider", label]),
            label: std::marker::PhantomData,
        }
    }

    /// Every value of the label at zero for `provider`.
    fn register(&self, provider: &str) {
        for value in L::ALL {
            self.family.with_label_values(&[provider, value.as_str()]);
        }
    }

    pub fn inc_by(&self, provider: &str, value: L, by: u64) {
        self.family
            .with_label_values(&[provider, value.as_str()])
            .inc_by(by);
    }

    pub fn inc(&self, provider: &str, value: L) {
        self.inc_by(provider, value, 1);
    }
}

/// Every secret-scanning family.
pub struct SecretScanningMetrics {
    pub reports: ProviderCounter<ReportOutcome>,
    pub tokens: ProviderCounter<TokenLabel>,
    pub keys_revoked: ProviderCounter<LeakedKeyType>,
    pub key_fetches: ProviderCounter<KeyFetchOutcome>,
    /// Database queries made for reported tokens (well-formed ones only).
    pub lookups: IntCounter,
}

impl SecretScanningMetrics {
    pub(super) fn new(families: &Families) -> SecretScanningMetrics {
        SecretScanningMetrics {
            reports: ProviderCounter::new(
                families,
                "logstitch_secret_scanning_reports_total",
                "Secret-scanning reports by provider and outcome: verified (acted on), missing_headers, unknown_key, bad_signature, too_large, invalid_body, keys_unavailable, failed (a store error mid-report)",
                "outcome",
            ),
            tokens: ProviderCounter::new(
                families,
                "logstitch_secret_scanning_tokens_total",
                "Tokens in verified secret-scanning reports, by provider and label (true_positive: a key we issued, in any state)",
                "label",
            ),
            keys_revoked: ProviderCounter::new(
                families,
                "logstitch_secret_scanning_keys_revoked_total",
                "Keys revoked because a secret-scanning provider reported them leaked, by provider and key type",
                "key_type",
            ),
            key_fetches: ProviderCounter::new(
                families,
                "logstitch_secret_scanning_key_fetches_total",
                "Fetches of a secret-scanning provider's public keys document, by provider and outcome",
                "outcome",
            ),
            lookups: families.counter(
                "logstitch_secret_scanning_lookups_total",
                "Database queries made for tokens in secret-scanning reports (look-alikes that fail the checksum make none)",
            ),
        }
    }

    /// Every series of `providers` at zero.
    pub fn register_providers<'a>(&self, providers: impl IntoIterator<Item = &'a str>) {
        for provider in providers {
            self.reports.register(provider);
            self.tokens.register(provider);
            self.keys_revoked.register(provider);
            self.key_fetches.register(provider);
        }
    }
}
