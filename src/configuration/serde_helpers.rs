//! Deserializers shared by the sections.

use std::time::Duration;

use serde::Deserialize;

/// Settings named `…_ms` / `…_secs` stay integers in files and the environment; the code
/// only ever sees a `Duration`.
pub(super) fn millis<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_millis)
}

pub(super) fn secs<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    u64::deserialize(deserializer).map(Duration::from_secs)
}
