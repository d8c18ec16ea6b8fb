//! `[log]`: how log lines are written.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    #[serde(deserialize_with = "log_format")]
    pub format: LogFormat,
}

// serde's own error doesn't carry the key; this names the setting.
fn log_format<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<LogFormat, D::Error> {
    match String::deserialize(deserializer)?.as_str() {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        other => Err(serde::de::Error::custom(format!(
            "log.format: {other:?} is not \"human\" or \"json\""
        ))),
    }
}
