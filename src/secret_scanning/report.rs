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

/// The tokens of a verified body; a 400 `validation_error` naming the entry at fault (never
/// quoting a token) for anything else. Fields other than these four are ignored, so a
/// partner adding one breaks nothing.
pub fn parse(body: &[u8]) -> Result<Vec<ReportedToken>, ApiError> {
    let invalid = |field: String, message: &'static str| {
        ApiError::validation(
            "The report must be a JSON array of at most 1000 {token, type, url?, source?} objects",
            vec![FieldError::new(field, message)],
        )
    };
    let Ok(Value::Array(entries)) = serde_json::from_slice::<Value>(body) else {
        return Err(invalid("body".into(), "must be a JSON array"));
    };
    if entries.len() > MAX_TOKENS {
        return Err(invalid("body".into(), "must hold at most 1000 tokens"));
    }
    let mut tokens = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let Value::Object(mut entry) = entry else {
            return Err(invalid(format!("[{index}]"), "must be an object"));
        };
        let mut text = |name: &str, required: bool| match entry.remove(name) {
            Some(Value::String(value)) => Ok(Some(value)),
            None | Some(Value::Null) if !required => Ok(None),
            None => Err(invalid(format!("[{index}].{name}"), "is required")),
            Some(_) => Err(invalid(format!("[{index}].{name}"), "must be a string")),
        };
        let token = text("token", true)?.expect("required");
        let token_type = text("type", true)?.expect("required");
        let url = text("url", false)?;
        let source = text("source", false)?;
        tokens.push(ReportedToken {
            token,
            token_type,
            url,
            source,
        });
    }
    Ok(tokens)
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
        let many = format!("[{}]", vec![r#"{"token":"a","type":"t"}"#; 1001].join(","));
        assert!(field_of(&many).contains("at most 1000"));
        let most = format!("[{}]", vec![r#"{"token":"a","type":"t"}"#; 1000].join(","));
        assert_eq!(parse(most.as_bytes()).unwrap().len(), 1000);
    }
}
