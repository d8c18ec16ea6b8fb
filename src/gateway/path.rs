//! The one spelling of a request path: normalised once, before routing, so what a route is
//! matched against is exactly what is forwarded to its upstream.
//!
//! RFC 3986 §6.2.2 syntax-based normalisation: percent-encoded unreserved characters are
//! decoded, other percent-encodings are kept with upper-case hex, then dot segments are removed
//! (§5.2.4) from the decoded form — so `%2e%2E` is `..`. Spellings that different servers read
//! differently are refused instead of guessed at: an encoded `/` or `\` inside a segment, a raw
//! `\`, NUL or other control bytes, a broken or double percent-encoding, dot segments that would
//! climb above the root, and dot segments disguised with path parameters (`..;x`, read as `..`
//! by some servlet containers).

use std::borrow::Cow;

use actix_web::dev::ServiceRequest;
use actix_web::http::uri::{PathAndQuery, Uri};

use crate::error::{ApiError, FieldError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("an encoded \"/\" or \"\\\" inside a path segment is ambiguous")]
    EncodedSeparator,
    #[error("a path must not contain \"\\\"")]
    Backslash,
    #[error("a path must not contain NUL or control characters")]
    ControlByte,
    #[error("a \"%\" must be followed by two hexadecimal digits")]
    BrokenPercentEncoding,
    #[error("double percent-encoding (\"%25\" followed by hex digits) is ambiguous")]
    DoubleEncoding,
    #[error("\"..\" segments must not climb above the root")]
    AboveRoot,
    #[error("path parameters (\";\") are refused: some servers strip them (\"admin;x\" read as \"admin\", \"..;\" as \"..\")")]
    PathParameter,
}

/// The normalised form of `raw` (an origin-form path, without the query), or why there is
/// none. Borrows when nothing changes, which is the common case.
pub fn normalize(raw: &str) -> Result<Cow<'_, str>, PathError> {
    let Some(rest) = raw.strip_prefix('/') else {
        // Asterisk-form (`OPTIONS *`) or empty: matches no route; nothing to normalise.
        return Ok(Cow::Borrowed(raw));
    };
    let plain = !raw
        .bytes()
        .any(|b| matches!(b, b'%' | b'\\' | b';') || b.is_ascii_control())
        && !raw.contains("/.")
        && !raw.contains("//");
    if plain {
        return Ok(Cow::Borrowed(raw));
    }
    let mut segments: Vec<String> = Vec::new();
    let mut ends_in_directory = false;
    let mut raw_segments = rest.split('/').peekable();
    while let Some(raw_segment) = raw_segments.next() {
        let last = raw_segments.peek().is_none();
        let segment = normalize_segment(raw_segment)?;
        ends_in_directory = false;
        match segment.as_str() {
            "." => ends_in_directory = true,
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
                ends_in_directory = true;
            }
            // Empty segments merge (`//` is `/`, as nginx's merge_slashes): an upstream that
            // merges them must not see a path another route would have matched.
            "" if !last => {}
            "" => ends_in_directory = true,
            _ => segments.push(segment),
        }
    }
    let mut path = String::with_capacity(raw.len());
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if ends_in_directory || path.is_empty() {
        path.push('/');
    }
    Ok(if path == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(path)
    })
}

fn normalize_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b'%' => {
                let value = hex_pair(bytes, i + 1).ok_or(PathError::BrokenPercentEncoding)?;
                match value {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b'%' if hex_pair(bytes, i + 3).is_some() => {
                        return Err(PathError::DoubleEncoding)
                    }
                    _ if value.is_ascii_control() => return Err(PathError::ControlByte),
                    _ if is_unreserved(value) => out.push(char::from(value)),
                    _ => {
                        out.push('%');
                        out.push_str(&format!("{value:02X}"));
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            b';' => return Err(PathError::PathParameter),
            _ if byte.is_ascii_control() => return Err(PathError::ControlByte),
            _ => {
                // A URI path is ASCII (the HTTP parser guarantees it), so bytes are chars.
                out.push(char::from(byte));
                i += 1;
            }
        }
    }
    Ok(out)
}

fn hex_pair(bytes: &[u8], at: usize) -> Option<u8> {
    let high = char::from(*bytes.get(at)?).to_digit(16)?;
    let low = char::from(*bytes.get(at + 1)?).to_digit(16)?;
    Some((high * 16 + low) as u8)
}

/// RFC 3986 §2.3.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// Before routing: rewrites the request's path to its normal form (so routes match it and
/// the gateway forwards it), or refuses it: 400 `validation_error`, not routed.
pub fn normalize_request(req: &mut ServiceRequest) -> Result<(), ApiError> {
    let path = match normalize(req.path()) {
        Ok(Cow::Borrowed(_)) => return Ok(()),
        Ok(Cow::Owned(path)) => path,
        Err(problem) => {
            return Err(ApiError::validation(
                "Invalid request path",
                vec![FieldError::new("path", problem.to_string())],
            ))
        }
    };
    let uri = with_path(req.uri(), &path);
    req.match_info_mut().get_mut().update(&uri);
    req.head_mut().uri = uri;
    Ok(())
}

fn with_path(uri: &Uri, path: &str) -> Uri {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    // Built from a path the parser accepted, re-encoded with URI characters only.
    parts.path_and_query = Some(
        PathAndQuery::try_from(path_and_query).expect("a normalised path is a valid URI path"),
    );
    Uri::from_parts(parts).expect("only the path changed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        normalize(raw).unwrap().into_owned()
    }

    #[test]
    fn plain_paths_are_borrowed_unchanged() {
        for raw in [
            "/",
            "/api/v1/events",
            "/api/v1/events/a.b",
            "/a/b/",
            "/a/%3Bb",
        ] {
            assert!(
                matches!(normalize(raw), Ok(Cow::Borrowed(p)) if p == raw),
                "{raw}"
            );
        }
    }

    #[test]
    fn dot_segments_go_and_only_unreserved_encodings_are_decoded() {
        for (raw, normal) in [
            ("/api/v1/open/../events/x", "/api/v1/events/x"),
            ("/api/v1/open/%2e%2e/events/x", "/api/v1/events/x"),
            ("/api/v1/open/.%2E/events/x", "/api/v1/events/x"),
            ("/api/v1/open/%2E./events", "/api/v1/events"),
            ("/api/./v1/%2e/events", "/api/v1/events"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/..", "/"),
            ("/api/v1/%65vents", "/api/v1/events"),
            ("/x/a%2cb%3f", "/x/a%2Cb%3F"),
            ("/x/caf%c3%a9", "/x/caf%C3%A9"),
            ("/x/a%20b", "/x/a%20b"),
            ("/x/%7E%2D%5F", "/x/~-_"),
            ("/x/100%25", "/x/100%25"),
            ("/x/%25zz", "/x/%25zz"),
            ("/ingest//admin/x", "/ingest/admin/x"),
            ("//x", "/x"),
            ("/a//", "/a/"),
            ("/a/%3b", "/a/%3B"),
        ] {
            assert_eq!(ok(raw), normal, "{raw}");
            assert_eq!(ok(normal), normal, "normalising {normal} again");
        }
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        let cases = [
            ("/api/v1/open%2f..%2fevents", PathError::EncodedSeparator),
            ("/api/v1/open/%2F", PathError::EncodedSeparator),
            ("/api/v1/open/..%5Cevents", PathError::EncodedSeparator),
            ("/api/v1/open\\..\\events", PathError::Backslash),
            ("/api/v1/a%00b", PathError::ControlByte),
            ("/api/v1/a%0Ab", PathError::ControlByte),
            ("/api/v1/a%7fb", PathError::ControlByte),
            ("/api/v1/a%zz", PathError::BrokenPercentEncoding),
            ("/api/v1/a%4", PathError::BrokenPercentEncoding),
            ("/api/v1/a%", PathError::BrokenPercentEncoding),
            ("/api/v1/%252e%252e/x", PathError::DoubleEncoding),
            ("/..", PathError::AboveRoot),
            ("/api/../../x", PathError::AboveRoot),
            ("/%2e%2e/x", PathError::AboveRoot),
            ("/api/v1/open/..;/events", PathError::PathParameter),
            ("/api/v1/open/.;x/events", PathError::PathParameter),
            ("/ingest/admin;a/x", PathError::PathParameter),
            ("/ingest/admin;/x", PathError::PathParameter),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize(raw), Err(expected), "{raw}");
        }
    }
}
