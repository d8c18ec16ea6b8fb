//! Human-readable labels for keys, projects and organizations: 1-100 Unicode characters, not blank.

use std::fmt;

pub const NAME_MAX_CHARS: usize = 100;

#[derive(Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// The error text is what the client sees, built from the same constant the check uses.
    pub fn parse(raw: &str) -> Result<DisplayName, String> {
        let chars = raw.chars().count();
        if chars == 0 || chars > NAME_MAX_CHARS {
            return Err(format!("must be 1-{NAME_MAX_CHARS} characters"));
        }
        if raw.trim().is_empty() {
            return Err("must not be blank".to_owned());
        }
        if raw.chars().any(char::is_control) {
            return Err("must not contain control characters".to_owned());
        }
        Ok(DisplayName(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A name read back from the database, which only ever stores parsed names.
    pub fn from_stored(stored: String) -> DisplayName {
        DisplayName(stored)
    }
}

impl fmt::Debug for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_one_to_a_hundred_characters() {
        assert!(DisplayName::parse("a").is_ok());
        assert!(DisplayName::parse(&"a".repeat(100)).is_ok());
        assert!(DisplayName::parse("Production API Key").is_ok());
    }

    #[test]
    fn counts_unicode_characters_not_bytes() {
        // 100 characters, 400 bytes.
        assert!(DisplayName::parse(&"🔑".repeat(100)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(101)).is_err());
    }

    #[test]
    fn refuses_empty_blank_long_and_control_characters() {
        assert!(DisplayName::parse("").is_err());
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("\t\n").is_err());
        assert!(DisplayName::parse(&"a".repeat(101)).is_err());
        assert!(DisplayName::parse("bad\u{0}name").is_err());
    }

    #[test]
    fn message_states_the_limit() {
        assert_eq!(
            DisplayName::parse("").unwrap_err(),
            "must be 1-100 characters"
        );
    }
}
