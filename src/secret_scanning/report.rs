//! A verified report's body: a JSON array of at most 1,000 `{token, type, url?, source?}`
//! objects. Read whole before anything is acted on, so a bad entry anywhere changes nothing.

use serde_json::Value;

use crate::error::{ApiError, FieldError};

/// The most tokens one report may carry.
pub const MAX_TOKENS: usize = 1000;

/// One reported token. The plaintext is a secret: never logged, stored or shown.
pub struct ReportedToken {
    pub token: String,
    /// The scanner's name for the token type, answered back as sent.
    pub token_type: String,
    pub url: Option<String>,
    pub source: Option<String>,
}

impl std::fmt::Debug for ReportedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportedToken")
            .field("token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("url", &self.url)
            .field("source", &self.source)
            .finish()
    }
}

/// The longest `url` or `source` kept (characters): a partner's report is trusted, but what it
/// says is stored in the append-only audit trail and sent in every webhook.
pub const MAX_SITE_CHARS: usize = 2048;
/// At most this many problems are listed in one answer.
const MAX_PROBLEMS: usize = 100;

/// The tokens of a verified body; a 400 `validation_error` listing every entry at fault (never
/// quoting a token) for anything else. Fields other than these four are ignored, so a partner
/// adding one breaks nothing. A `url` or `source` longer than [`MAX_SITE_CHARS`] is cut.
pub fn parse(body: &[u8]) -> Result<Vec<ReportedToken>, ApiError> {
    let refused = |problems: Vec<FieldError>| {
        ApiError::validation(
            "The report must be a JSON array of at most 1000 {token, type, url?, source?} objects",
            problems,
        )
    };
    let Ok(Value::Array(entries)) = serde_json::from_slice::<Value>(body) else {
        return Err(refused(vec![FieldError::new(
            "body",
            "must be a JSON array",
        )]));
    };
    if entries.len() > MAX_TOKENS {
        return Err(refused(vec![FieldError::new(
            "body",
            "must hold at most 1000 tokens",
        )]));
    }
    let mut problems = Vec::new();
    let mut tokens = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let Value::Object(mut entry) = entry else {
            problems.push(FieldError::new(format!("[{index}]"), "must be an object"));
            continue;
        };
        let mut text = |name: &str, required: bool| match entry.remove(name) {
            Some(Value::String(value)) => Some(value),
            None | Some(Value::Null) if !required => None,
            None => {
                problems.push(FieldError::new(format!("[{index}].{name}"), "is required"));
                None
            }
            Some(_) => {
                problems.push(FieldError::new(
                    format!("[{index}].{name}"),
                    "must be a string",
                ));
                None
            }
        };
        let (token, token_type) = (text("token", true), text("type", true));
        let (url, source) = (text("url", false), text("source", false));
        if let (Some(token), Some(token_type)) = (token, token_type) {
            tokens.push(ReportedToken {
                token,
                token_type,
                url: url.map(cut),
                source: source.map(cut),
            });
        }
    }
    if !problems.is_empty() {
        problems.truncate(MAX_PROBLEMS);
        return Err(refused(problems));
    }
    Ok(tokens)
}

fn cut(mut text: String) -> String {
    if let Some((end, _)) = text.char_indices().nth(MAX_SITE_CHARS) {
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field and message the refusal names (checked never to quote the token).
    fn field_of(body: &str) -> String {
        let error = parse(body.as_bytes()).unwrap_err();
        let detail = &error.details()[0];
        let text = format!("{error:?} {} {}", detail.field, detail.message);
        assert!(!text.contains("mk_secret"), "{text}");
        text
    }

    #[test]
    fn a_report_is_read_whole() {
        let tokens = parse(
            br#"[{"token":"a","type":"t","url":"https://x","source":"content","extra":1},
                 {"token":"b","type":"u","url":null}]"#,
        )
        .unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].url.as_deref(), Some("https://x"));
        assert_eq!(tokens[0].source.as_deref(), Some("content"));
        assert_eq!(
            (tokens[1].url.as_deref(), tokens[1].source.as_deref()),
            (None, None)
        );
        assert!(parse(b"[]").unwrap().is_empty());
        assert!(!format!("{:?}", tokens[0]).contains("\"a\""));
    }

    #[test]
    fn anything_else_is_refused_naming_the_entry() {
        assert!(field_of("{}").contains("body"));
        assert!(field_of("not json").contains("body"));
        assert!(field_of(r#"[{"token":"mk_secret"}]"#).contains("[0].type"));
        assert!(field_of(r#"[{"token":"mk_secret","type":"t"}, 3]"#).contains("[1]"));
        assert!(field_of(r#"[{"token":1,"type":"t"}]"#).contains("[0].token"));
        assert!(field_of(r#"[{"token":"mk_secret","type":"t","url":5}]"#).contains("[0].url"));
        let all = parse(br#"[{"token":1,"type":"t"}, 3, {"type":"t"}]"#).unwrap_err();
        let fields: Vec<_> = all.details().iter().map(|d| d.field.as_ref()).collect();
        assert_eq!(fields, ["[0].token", "[1]", "[2].token"]);
        let long = format!(
            r#"[{{"token":"a","type":"t","url":"{}"}}]"#,
            "é".repeat(5000)
        );
        let cut = parse(long.as_bytes()).unwrap();
        assert_eq!(cut[0].url.as_ref().unwrap().chars().count(), MAX_SITE_CHARS);
        let many = format!("[{}]", vec![r#"{"token":"a","type":"t"}"#; 1001].join(","));
        assert!(field_of(&many).contains("at most 1000"));
        let most = format!("[{}]", vec![r#"{"token":"a","type":"t"}"#; 1000].join(","));
        assert_eq!(parse(most.as_bytes()).unwrap().len(), 1000);
    }
}
