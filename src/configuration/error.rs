//! What loading settings fails with: each error names the setting at fault.

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid settings: {0}")]
    Load(#[from] config::ConfigError),
    /// A value of the wrong type or range, or an unknown key, at `path`.
    #[error("invalid setting `{path}`: {problem}")]
    Value { path: String, problem: String },
    #[error("invalid setting `{setting}`: {problem}")]
    Invalid {
        setting: &'static str,
        problem: &'static str,
    },
}

/// A check that types alone can't express failed for `setting`.
pub(super) fn invalid(setting: &'static str, problem: &'static str) -> Result<(), SettingsError> {
    Err(SettingsError::Invalid { setting, problem })
}
