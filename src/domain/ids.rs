//! Typed identifiers, so a project id can't be passed where a key id is expected.

use uuid::Uuid;

macro_rules! uuid_id {
    ($name:ident) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }

            /// Accepts the hyphenated form only ("550e8400-e29b-41d4-a716-446655440000").
            pub fn parse(raw: &str) -> Option<Self> {
                if raw.len() != 36 {
                    return None;
                }
                Uuid::try_parse(raw).ok().map($name)
            }

            /// The all-zero id, which no stored row has.
            pub const fn nil() -> Self {
                $name(Uuid::nil())
            }

            pub fn from_uuid(id: Uuid) -> Self {
                $name(id)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        /// From settings files: the hyphenated form only, like [`Self::parse`].
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                $name::parse(&raw).ok_or_else(|| {
                    serde::de::Error::custom(format!("{raw:?} is not a hyphenated UUID"))
                })
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(OrgId);
uuid_id!(ProjectId);
uuid_id!(KeyId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hyphenated_uuids_only() {
        assert!(KeyId::parse("550e8400-e29b-41d4-a716-446655440000").is_some());
        assert!(KeyId::parse("550e8400e29b41d4a716446655440000").is_none());
        assert!(KeyId::parse("not-a-uuid").is_none());
        assert!(KeyId::parse("").is_none());
        assert!(KeyId::parse("550e8400-e29b-41d4-a716-44665544000é").is_none());
    }

    #[test]
    fn new_ids_are_distinct() {
        assert_ne!(ProjectId::new(), ProjectId::new());
    }
}
