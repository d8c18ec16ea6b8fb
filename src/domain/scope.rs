//! Scopes: what a key may do, as `resource.action` (OAuth-style), `resource.*` or `*`.
//!
//! A key holds a sorted list of them ([`Scopes`]); a route needs one plain scope
//! ([`ScopeName`]). A wildcard grants every action of its resource (or everything), but is
//! covered — for the no-escalation rule — only by the same wildcard or `*`.

use std::fmt;
use std::sync::Arc;

use actix_web::http::header::HeaderValue;

/// Each part of a scope: a lowercase letter, then up to 31 of `[a-z0-9_-]`.
const PART_MAX_CHARS: usize = 32;

/// The most scopes one key may hold.
pub const MAX_SCOPES: usize = 32;

fn is_part(part: &str) -> bool {
    let mut bytes = part.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && part.len() <= PART_MAX_CHARS
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// A plain `resource.action` scope: what a route needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeName(Box<str>);

impl ScopeName {
    pub fn parse(raw: &str) -> Option<ScopeName> {
        let (resource, action) = raw.split_once('.')?;
        (is_part(resource) && is_part(action)).then(|| ScopeName(raw.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ScopeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a key may hold: a plain scope, every action of a resource, or everything.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScopePattern {
    All,
    Resource(Box<str>),
    Exact(ScopeName),
}

impl ScopePattern {
    pub fn parse(raw: &str) -> Option<ScopePattern> {
        if raw == "*" {
            return Some(ScopePattern::All);
        }
        if let Some(resource) = raw.strip_suffix(".*") {
            return is_part(resource).then(|| ScopePattern::Resource(resource.into()));
        }
        ScopeName::parse(raw).map(ScopePattern::Exact)
    }

    /// Whether holding this pattern grants `needed`, a plain `resource.action` scope.
    pub fn grants(&self, needed: &str) -> bool {
        match self {
            ScopePattern::All => true,
            ScopePattern::Resource(resource) => {
                needed.split_once('.').map(|(r, _)| r) == Some(&**resource)
            }
            ScopePattern::Exact(name) => name.as_str() == needed,
        }
    }

    /// Whether a holder of this pattern may hand `other` on: a plain scope is covered by
    /// anything that grants it; a wildcard only by the same wildcard or `*`.
    pub fn covers(&self, other: &ScopePattern) -> bool {
        match (self, other) {
            (ScopePattern::All, _) => true,
            (_, ScopePattern::Exact(name)) => self.grants(name.as_str()),
            (mine, theirs) => mine == theirs,
        }
    }
}

impl fmt::Display for ScopePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopePattern::All => f.write_str("*"),
            ScopePattern::Resource(resource) => write!(f, "{resource}.*"),
            ScopePattern::Exact(name) => f.write_str(name.as_str()),
        }
    }
}

/// A key's scopes, sorted by their text (the stored order, shown everywhere). Cheap to clone:
/// the common `["*"]` is a constant, any other list is shared, with its `X-LogStitch-Scopes`
/// header value made once when the key is loaded rather than on every request.
#[derive(Clone, PartialEq, Eq)]
pub enum Scopes {
    All,
    Listed(Arc<Listed>),
}

#[derive(PartialEq, Eq)]
pub struct Listed {
    patterns: Box<[ScopePattern]>,
    texts: Box<[String]>,
    header: HeaderValue,
}

impl Scopes {
    /// From stored texts. A text this version can't read (a hand-edited row) grants nothing
    /// but is still shown, so nothing about the key is hidden.
    pub fn from_stored(texts: Vec<String>) -> Scopes {
        if texts.len() == 1 && texts[0] == "*" {
            return Scopes::All;
        }
        let mut texts = texts;
        texts.sort();
        texts.dedup();
        let patterns = texts
            .iter()
            .filter_map(|text| ScopePattern::parse(text))
            .collect();
        let header = HeaderValue::from_str(&texts.join(" "))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        Scopes::Listed(Arc::new(Listed {
            patterns,
            texts: texts.into_boxed_slice(),
            header,
        }))
    }

    /// From parsed patterns (a create or a PATCH): sorted by text, as stored.
    pub fn from_patterns(patterns: &[ScopePattern]) -> Scopes {
        Scopes::from_stored(patterns.iter().map(ToString::to_string).collect())
    }

    /// Whether these scopes grant `needed`, a plain `resource.action` scope.
    pub fn grants(&self, needed: &str) -> bool {
        match self {
            Scopes::All => true,
            Scopes::Listed(listed) => listed.patterns.iter().any(|held| held.grants(needed)),
        }
    }

    /// Whether a holder of these scopes may hand `wanted` on (no escalation).
    pub fn covers(&self, wanted: &ScopePattern) -> bool {
        match self {
            Scopes::All => true,
            Scopes::Listed(listed) => listed.patterns.iter().any(|held| held.covers(wanted)),
        }
    }

    /// The texts, sorted: as stored and shown.
    pub fn texts(&self) -> Vec<String> {
        match self {
            Scopes::All => vec!["*".to_owned()],
            Scopes::Listed(listed) => listed.texts.to_vec(),
        }
    }

    /// `X-LogStitch-Scopes`: space-separated, in the stored order.
    pub fn header_value(&self) -> HeaderValue {
        match self {
            Scopes::All => HeaderValue::from_static("*"),
            Scopes::Listed(listed) => listed.header.clone(),
        }
    }
}

/// The scopes an instance knows: the built-in `keys.read` and `keys.write`, and every scope a
/// configured gateway route names. A key may be given only these (or a wildcard that covers
/// one of them), so a typo can't mint a scope nothing checks.
#[derive(Debug, Clone)]
pub struct ScopeCatalog {
    known: std::collections::BTreeSet<ScopeName>,
}

/// Built-in scopes: listing keys, and revoking, rolling and updating them.
pub const BUILT_IN_SCOPES: [&str; 2] = ["keys.read", "keys.write"];

impl ScopeCatalog {
    /// The built-ins and `named` (names that aren't plain scopes are left out: the settings
    /// refuse them before this is built).
    pub fn new<'a>(named: impl IntoIterator<Item = &'a str>) -> ScopeCatalog {
        ScopeCatalog {
            known: BUILT_IN_SCOPES
                .into_iter()
                .chain(named)
                .filter_map(ScopeName::parse)
                .collect(),
        }
    }

    /// Whether a key may be given `pattern`: a plain scope the catalog names, a wildcard
    /// covering at least one, or `*`.
    pub fn admits(&self, pattern: &ScopePattern) -> bool {
        match pattern {
            ScopePattern::All => true,
            ScopePattern::Exact(name) => self.known.contains(name),
            ScopePattern::Resource(_) => {
                self.known.iter().any(|name| pattern.grants(name.as_str()))
            }
        }
    }

    /// The known scopes, for an error message.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.known.iter().map(ScopeName::as_str)
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.texts()).finish()
    }
}

impl serde::Serialize for Scopes {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Scopes::All => ["*"].serialize(serializer),
            Scopes::Listed(listed) => listed.texts.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(raw: &str) -> ScopePattern {
        ScopePattern::parse(raw).expect("a scope pattern")
    }

    #[test]
    fn parts_are_lowercase_words_of_at_most_32() {
        assert!(ScopeName::parse("events.write").is_some());
        assert!(ScopeName::parse("a.b").is_some());
        assert!(ScopeName::parse("my_api-2.read_all").is_some());
        let longest = format!("{}.x", "a".repeat(32));
        assert!(ScopeName::parse(&longest).is_some());
        for bad in [
            "",
            "events",
            "events.",
            ".write",
            "Events.write",
            "1events.write",
            "events.write.all",
            "events.*",
            "*",
            "events .write",
            "évents.write",
            &format!("{}.x", "a".repeat(33)),
        ] {
            assert!(ScopeName::parse(bad).is_none(), "{bad:?}");
        }
        assert_eq!(pattern("*"), ScopePattern::All);
        assert_eq!(pattern("events.*"), ScopePattern::Resource("events".into()));
        assert!(ScopePattern::parse("*.write").is_none());
        assert!(ScopePattern::parse("*.*").is_none());
    }

    #[test]
    fn wildcards_grant_their_resource_and_are_covered_only_by_themselves_or_all() {
        let held = Scopes::from_stored(vec!["keys.read".into(), "keys.write".into()]);
        assert!(held.grants("keys.read"));
        assert!(!held.grants("events.write"));
        assert!(!held.covers(&pattern("keys.*")));
        assert!(held.covers(&pattern("keys.write")));
        let wildcard = Scopes::from_stored(vec!["keys.*".into()]);
        assert!(wildcard.grants("keys.anything"));
        assert!(!wildcard.grants("keysx.read"));
        assert!(wildcard.covers(&pattern("keys.*")));
        assert!(!wildcard.covers(&pattern("*")));
        assert!(Scopes::All.covers(&pattern("*")));
    }

    #[test]
    fn stored_order_is_sorted_and_shown_in_the_header() {
        let scopes = Scopes::from_patterns(&[pattern("keys.read"), pattern("events.write")]);
        assert_eq!(scopes.texts(), ["events.write", "keys.read"]);
        assert_eq!(scopes.header_value(), "events.write keys.read");
        assert_eq!(Scopes::from_stored(vec!["*".into()]), Scopes::All);
        assert_eq!(Scopes::All.header_value(), "*");
        assert_eq!(
            serde_json::to_value(&scopes).unwrap(),
            serde_json::json!(["events.write", "keys.read"])
        );
    }

    #[test]
    fn the_catalog_knows_the_built_ins_and_the_routes_scopes() {
        let catalog = ScopeCatalog::new(["events.write", "events.read"]);
        for admitted in [
            "keys.read",
            "keys.write",
            "events.write",
            "keys.*",
            "events.*",
            "*",
        ] {
            assert!(catalog.admits(&pattern(admitted)), "{admitted}");
        }
        for refused in ["events.delete", "billing.*", "billing.read"] {
            assert!(!catalog.admits(&pattern(refused)), "{refused}");
        }
    }

    #[test]
    fn an_unreadable_stored_scope_is_shown_and_grants_nothing() {
        let scopes = Scopes::from_stored(vec!["Weird".into(), "events.read".into()]);
        assert_eq!(scopes.texts(), ["Weird", "events.read"]);
        assert!(scopes.grants("events.read"));
        assert!(!scopes.grants("events.write"));
    }
}
