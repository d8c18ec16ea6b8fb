//! Which headers cross the gateway, each way, and the forwarding headers it adds.
//!
//! Names are compared as many upstream stacks read them (CGI, WSGI, Rack map `-` and `_` to
//! one variable, case-insensitively): a client's `X_LogStitch_Project_Id` is our
//! `X-LogStitch-Project-Id` to them, so it is treated as ours and never forwarded.

use std::net::IpAddr;

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers the gateway sets on forwarded requests: a client's copy, in any spelling, is dropped.
const OURS: [&str; 5] = [
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];
const OUR_PREFIX: &str = "x-logstitch-";

/// Client headers some upstream stacks obey as if a proxy had set them: URL and method
/// overrides (IIS, Symfony, Zend: a route's permission bypassed), client-address claims, and
/// credentials meant for a proxy. Never forwarded, in any spelling.
const NEVER_FORWARDED: [&str; 11] = [
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
];
const PROXY_PREFIX: &str = "proxy-";

/// Whether `name` is, read with `_` as `-`, one of the headers only the gateway may set.
pub fn is_ours(name: &str) -> bool {
    has_our_prefix(name)
        || OURS
            .iter()
            .any(|ours| name.len() == ours.len() && starts_like(name, ours))
}

/// `x-logstitch-…`, in any spelling.
fn has_our_prefix(name: &str) -> bool {
    name.len() > OUR_PREFIX.len() && starts_like(name, OUR_PREFIX)
}

/// `name` begins with `lower` (lower case, hyphens), comparing case-insensitively with `_`
/// read as `-`.
fn starts_like(name: &str, lower: &str) -> bool {
    let canonical = |byte: u8| match byte {
        b'_' => b'-',
        _ => byte.to_ascii_lowercase(),
    };
    name.len() >= lower.len()
        && name
            .bytes()
            .zip(lower.bytes())
            .all(|(a, b)| canonical(a) == b)
}

/// Calls `keep` for every header except hop-by-hop ones (RFC 9110 §7.6.1: `Connection`, the
/// fields it names, and the classic list) and the framing headers the body type sets itself.
pub fn for_each_end_to_end<'a>(
    headers: &'a HeaderMap,
    mut keep: impl FnMut(&'a HeaderName, &'a HeaderValue),
) {
    let named_by_connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in headers {
        let hop_by_hop = matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "content-length"
        ) || named_by_connection.iter().any(|n| n == name.as_str());
        if !hop_by_hop {
            keep(name, value);
        }
    }
}

/// Whether a client's end-to-end header may reach the upstream.
pub fn forwards_request_header(name: &HeaderName, underscores: bool) -> bool {
    let name = name.as_str();
    // Header names are lower case here (the parser normalises them).
    let claims_to_be_a_proxy = starts_like(name, PROXY_PREFIX)
        || NEVER_FORWARDED
            .iter()
            .any(|never| name.len() == never.len() && starts_like(name, never));
    name != "authorization"
        && !is_ours(name)
        && !claims_to_be_a_proxy
        && (underscores || !name.contains('_'))
}

/// Whether an upstream's end-to-end response header may reach the client.
pub fn forwards_response_header(name: &HeaderName, expose_ours: bool) -> bool {
    expose_ours || !has_our_prefix(name.as_str())
}

/// Who called and how, as the upstream is told: `X-Forwarded-For` (the client's list, if any,
/// then the peer this gateway saw), `X-Forwarded-Proto`, `X-Forwarded-Host`, and the same
/// facts as one more `Forwarded` element (RFC 7239). Proto and host come from a trusted proxy's
/// own `X-Forwarded-*` when the peer is one, else from this connection.
pub struct Forwarding {
    pub peer: IpAddr,
    pub peer_is_trusted: bool,
}

impl Forwarding {
    pub fn headers(&self, client: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        let trusted = |name: &str| self.peer_is_trusted.then(|| joined(client, name)).flatten();
        let proto = trusted("x-forwarded-proto").unwrap_or_else(|| "http".to_owned());
        let host = trusted("x-forwarded-host").or_else(|| joined(client, "host"));
        let peer = self.peer.to_string();

        let mut out = Vec::with_capacity(4);
        let for_list = match joined(client, "x-forwarded-for") {
            Some(list) => format!("{list}, {peer}"),
            None => peer.clone(),
        };
        push(&mut out, "x-forwarded-for", for_list);
        push(&mut out, "x-forwarded-proto", proto.clone());
        if let Some(host) = &host {
            push(&mut out, "x-forwarded-host", host.clone());
        }
        let node = match self.peer {
            IpAddr::V4(_) => peer,
            IpAddr::V6(_) => format!("\"[{peer}]\""),
        };
        let mut element = format!("for={node};proto={}", token_or_quoted(&proto));
        if let Some(host) = &host {
            element.push_str(";host=");
            element.push_str(&token_or_quoted(host));
        }
        // Like X-Forwarded-For, the client's chain is kept and extended; from an untrusted
        // peer only its `for=` claims stay, so no proto or host claim of the client's survives.
        let earlier = joined(client, "forwarded").map(|list| {
            if self.peer_is_trusted {
                list
            } else {
                only_for_parameters(&list)
            }
        });
        let forwarded = match earlier.filter(|list| !list.is_empty()) {
            Some(list) => format!("{list}, {element}"),
            None => element,
        };
        push(&mut out, "forwarded", forwarded);
        out
    }
}

/// A `Forwarded` list (RFC 7239) with every parameter but `for` removed; elements left empty
/// are dropped. Splits on `,` and `;` outside quoted strings.
fn only_for_parameters(list: &str) -> String {
    let mut elements = Vec::new();
    for element in split_unquoted(list, ',') {
        let kept: Vec<&str> = split_unquoted(element, ';')
            .into_iter()
            .map(str::trim)
            .filter(|pair| {
                pair.split_once('=')
                    .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
            })
            .collect();
        if !kept.is_empty() {
            elements.push(kept.join(";"));
        }
    }
    elements.join(", ")
}

fn split_unquoted(text: &str, separator: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut quoted, mut escaped, mut start) = (false, false, 0);
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            _ if c == separator && !quoted => {
                parts.push(&text[start..at]);
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Every value of `name`, in order, as one comma-separated list (RFC 9110 §5.3).
fn joined(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut values = headers
        .get_all(name)
        .filter_map(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|value| !value.is_empty());
    let first = values.next()?.to_owned();
    Some(values.fold(first, |mut list, value| {
        list.push_str(", ");
        list.push_str(value);
        list
    }))
}

fn push(out: &mut Vec<(HeaderName, HeaderValue)>, name: &'static str, value: String) {
    // Built from header values that were valid and ASCII digits/dots/colons: always valid.
    if let Ok(value) = HeaderValue::try_from(value) {
        out.push((HeaderName::from_static(name), value));
    }
}

/// RFC 7239 §4: a value is a token, or else a quoted string.
fn token_or_quoted(value: &str) -> String {
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !value.is_empty() && value.chars().all(is_tchar) {
        return value.to_owned();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    fn get(out: &[(HeaderName, HeaderValue)], name: &str) -> String {
        let found: Vec<_> = out.iter().filter(|(n, _)| n == name).collect();
        assert_eq!(found.len(), 1, "{name}: {out:?}");
        found[0].1.to_str().unwrap().to_owned()
    }

    #[test]
    fn our_names_in_any_spelling_are_ours() {
        for name in [
            "x-logstitch-project-id",
            "x_logstitch_project_id",
            "X_LogStitch_Key-Type",
            "x-logstitch-anything",
            "x_request_id",
            "X-Request-Id",
            "x_forwarded_for",
            "forwarded",
        ] {
            assert!(is_ours(name), "{name}");
        }
        for name in [
            "x-logstitch-",
            "x-logstitchy",
            "x-request-ids",
            "x-custom",
            "accept",
        ] {
            assert!(!is_ours(name), "{name}");
        }
    }

    #[test]
    fn underscored_names_are_dropped_unless_enabled_and_ours_never_pass() {
        let name = |n: &'static str| HeaderName::from_static(n);
        assert!(!forwards_request_header(&name("x_custom"), false));
        assert!(forwards_request_header(&name("x_custom"), true));
        assert!(!forwards_request_header(
            &name("x_logstitch_project_id"),
            true
        ));
        assert!(!forwards_request_header(&name("x_request_id"), true));
        assert!(!forwards_request_header(&name("authorization"), true));
        for claim in [
            "x-original-url",
            "x_rewrite_url",
            "x-http-method-override",
            "x-real-ip",
            "true-client-ip",
            "proxy-authorization",
            "proxy_connection",
        ] {
            assert!(!forwards_request_header(&name(claim), true), "{claim}");
        }
        assert!(forwards_request_header(&name("x-custom"), false));
    }

    #[test]
    fn upstream_logstitch_headers_stay_inside_unless_exposed() {
        let name = |n: &'static str| HeaderName::from_static(n);
        assert!(!forwards_response_header(
            &name("x-logstitch-key-id"),
            false
        ));
        assert!(!forwards_response_header(
            &name("x_logstitch_key_id"),
            false
        ));
        assert!(forwards_response_header(&name("x-logstitch-key-id"), true));
        assert!(forwards_response_header(&name("x-upstream"), false));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_dropped() {
        let headers = map(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-kept", "yes"),
            ("accept", "application/json"),
        ]);
        let mut kept = Vec::new();
        for_each_end_to_end(&headers, |name, _| kept.push(name.as_str().to_owned()));
        kept.sort();
        assert_eq!(kept, ["accept", "x-kept"]);
    }

    /// (client headers, peer, trusted?) → the four forwarding headers, in order:
    /// X-Forwarded-For, -Proto, -Host, Forwarded.
    #[test]
    fn forwarding_headers_extend_the_client_s_and_believe_only_a_trusted_peer() {
        type Case = (
            &'static [(&'static str, &'static str)],
            &'static str,
            bool,
            [&'static str; 4],
        );
        let cases: &[Case] = &[
            // An untrusted peer is appended; its proto and host claims are ignored.
            (
                &[
                    ("host", "gateway.test"),
                    ("x-forwarded-for", "203.0.113.9"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "evil.test"),
                ],
                "192.0.2.1",
                false,
                [
                    "203.0.113.9, 192.0.2.1",
                    "http",
                    "gateway.test",
                    "for=192.0.2.1;proto=http;host=gateway.test",
                ],
            ),
            // An untrusted client's Forwarded keeps only its `for=` claims.
            (
                &[
                    ("host", "gw.test"),
                    ("forwarded", "for=9.9.9.9;proto=https;host=admin.internal"),
                    ("forwarded", "by=x;host=\"a,b\", For=\"[2001:db8::1]\""),
                ],
                "127.0.0.1",
                false,
                [
                    "127.0.0.1",
                    "http",
                    "gw.test",
                    "for=9.9.9.9, For=\"[2001:db8::1]\", for=127.0.0.1;proto=http;host=gw.test",
                ],
            ),
            // A trusted proxy's proto and host are kept; lists are extended; IPv6 quoted.
            (
                &[
                    ("host", "internal:8080"),
                    ("x-forwarded-for", "198.51.100.7"),
                    ("x-forwarded-for", "10.0.0.2"),
                    ("x-forwarded-proto", "https"),
                    ("x-forwarded-host", "api.example.com"),
                    ("forwarded", "for=198.51.100.7"),
                ],
                "::1",
                true,
                [
                    "198.51.100.7, 10.0.0.2, ::1",
                    "https",
                    "api.example.com",
                    "for=198.51.100.7, for=\"[::1]\";proto=https;host=api.example.com",
                ],
            ),
            // A host with a port is not a token: quoted in Forwarded.
            (
                &[("host", "localhost:8080")],
                "127.0.0.1",
                false,
                [
                    "127.0.0.1",
                    "http",
                    "localhost:8080",
                    "for=127.0.0.1;proto=http;host=\"localhost:8080\"",
                ],
            ),
        ];
        for (client, peer, trusted, expected) in cases {
            let out = Forwarding {
                peer: peer.parse().unwrap(),
                peer_is_trusted: *trusted,
            }
            .headers(&map(client));
            let names = [
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "forwarded",
            ];
            for (name, value) in names.iter().zip(expected) {
                assert_eq!(get(&out, name), *value, "{name} for {client:?}");
            }
        }
    }
}
