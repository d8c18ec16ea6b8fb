//! The `scopes` field of a create or an update: 1–32 distinct scopes, each one this instance
//! knows (or a wildcard covering one), stored sorted.

use serde_json::Value;

use crate::domain::{ScopeCatalog, ScopePattern, Scopes, MAX_SCOPES};
use crate::routes::body::Fields;

/// Reads `scopes` when present; None when absent, or when invalid (the problems are in
/// `fields`, each at `scopes` or `scopes[i]`, quoting the entry).
pub(super) fn read_scopes(fields: &mut Fields, catalog: &ScopeCatalog) -> Option<Scopes> {
    let value = fields.value("scopes")?.clone();
    let entries = match value {
        Value::Array(entries) if (1..=MAX_SCOPES).contains(&entries.len()) => entries,
        _ => {
            fields.refuse(
                "scopes",
                format!("must be an array of 1 to {MAX_SCOPES} scopes (resource.action, resource.* or *)"),
            );
            return None;
        }
    };
    let mut patterns: Vec<ScopePattern> = Vec::with_capacity(entries.len());
    let mut valid = true;
    for (index, entry) in entries.iter().enumerate() {
        let field = format!("scopes[{index}]");
        let problem = match entry {
            Value::String(text) => match ScopePattern::parse(text) {
                None => Some(format!(
                    "\"{text}\" is not a scope: resource.action (each part [a-z][a-z0-9_-]{{0,31}}), resource.* or *"
                )),
                Some(pattern) if patterns.contains(&pattern) => {
                    Some(format!("\"{text}\" is listed more than once"))
                }
                Some(pattern) if !catalog.admits(&pattern) => Some(match pattern {
                    ScopePattern::Resource(_) => {
                        format!("\"{text}\" covers no scope this service knows ({})", known(catalog))
                    }
                    _ => format!("\"{text}\" is not a scope this service knows ({})", known(catalog)),
                }),
                Some(pattern) => {
                    patterns.push(pattern);
                    None
                }
            },
            _ => Some("must be a string".to_owned()),
        };
        if let Some(problem) = problem {
            fields.refuse(field, problem);
            valid = false;
        }
    }
    valid.then(|| Scopes::from_patterns(&patterns))
}

fn known(catalog: &ScopeCatalog) -> String {
    catalog.names().collect::<Vec<_>>().join(", ")
}
