//! Where a webhook may go: the URL rules (`parse_url`), the addresses never contacted without
//! `webhooks.allow_private_targets` (`is_forbidden`), and the name resolved and checked
//! (`resolve`, and `lookup_checked` for the client's connector, which runs it at every
//! connection so a name that changes what it resolves to is judged again).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, ParseError, Url};

/// The longest URL an endpoint may have.
pub const MAX_URL_LEN: usize = 2048;

/// A webhook endpoint's URL, checked by `parse_url`: absolute, `https://` (or `http://` when
/// allowed), with a host, no userinfo, no fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetUrl {
    /// As given (already free of whitespace): what is stored and shown.
    raw: String,
    /// The URL as sent: host normalised (IPv4 in any notation as dotted quad, IDN as ASCII).
    uri: http::Uri,
    /// The host without brackets, when it is an IP literal.
    literal: Option<IpAddr>,
    host: String,
    port: u16,
}

impl TargetUrl {
    /// The URL as it was given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The URL the request goes to.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// The host, an IPv6 literal without its brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host's address when the URL names one directly.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        self.literal
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Checks an endpoint URL; the error is the `details[].message` for the field `url`.
pub fn parse_url(raw: &str, allow_http: bool) -> Result<TargetUrl, &'static str> {
    if raw.chars().count() > MAX_URL_LEN {
        return Err("must be at most 2048 characters");
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    let url = Url::parse(raw).map_err(|error| match error {
        ParseError::EmptyHost => "must have a host",
        _ => "must be an absolute URL",
    })?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ if allow_http => return Err("must be an http:// or https:// URL"),
        _ => return Err("must be an https:// URL"),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a username or password");
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment");
    }
    let (host, literal) = match url.host() {
        Some(Host::Domain(name)) if !name.is_empty() => (name.to_owned(), None),
        Some(Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
        Some(Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
        _ => return Err("must have a host"),
    };
    let port = url
        .port_or_known_default()
        .ok_or("must be an absolute URL")?;
    let uri = url
        .as_str()
        .parse::<http::Uri>()
        .map_err(|_| "must be an absolute URL")?;
    Ok(TargetUrl {
        raw: raw.to_owned(),
        uri,
        literal,
        host,
        port,
    })
}

/// Why a target is not contacted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetRefused {
    /// The host is, or resolves to (among others), an address `is_forbidden` refuses.
    #[error("{host} resolves to a private or reserved address ({address})")]
    Forbidden { host: String, address: IpAddr },
    /// The name resolves to nothing (or the lookup failed).
    #[error("{host} does not resolve: {reason}")]
    Unresolved { host: String, reason: String },
}

impl TargetRefused {
    /// The `details[].message` for the field `url` (without the addresses).
    pub fn message(&self) -> &'static str {
        match self {
            TargetRefused::Forbidden { .. } => {
                "must not resolve to a loopback, private, link-local, multicast or reserved address"
            }
            TargetRefused::Unresolved { .. } => "host does not resolve",
        }
    }
}

/// Resolves the target's host and checks every address: one forbidden address refuses the
/// whole name (unless `allow_private`). An IP literal is checked as it is.
pub async fn resolve(
    target: &TargetUrl,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, TargetRefused> {
    match target.literal {
        Some(ip) => check(
            &target.host,
            vec![SocketAddr::new(ip, target.port)],
            allow_private,
        ),
        None => lookup_checked(&target.host, target.port, allow_private).await,
    }
}

/// DNS for `host` (tokio's resolver), then `check`.
pub(super) async fn lookup_checked(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, TargetRefused> {
    let unresolved = |reason: String| TargetRefused::Unresolved {
        host: host.to_owned(),
        reason,
    };
    let addresses = tokio::net::lookup_host((host, port))
        .await
        .map_err(|error| unresolved(error.to_string()))?
        .collect::<Vec<_>>();
    if addresses.is_empty() {
        return Err(unresolved("no addresses".to_owned()));
    }
    check(host, addresses, allow_private)
}

fn check(
    host: &str,
    addresses: Vec<SocketAddr>,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, TargetRefused> {
    if !allow_private {
        if let Some(bad) = addresses.iter().find(|a| is_forbidden(a.ip())) {
            return Err(TargetRefused::Forbidden {
                host: host.to_owned(),
                address: bad.ip(),
            });
        }
    }
    Ok(addresses)
}

/// Whether an address is never a webhook target (without `allow_private_targets`): loopback,
/// private, shared (CGNAT), link-local, multicast, unspecified, broadcast, documentation,
/// benchmarking and other special-purpose ranges. IPv6 forms that carry an IPv4 address
/// (mapped, compatible, NAT64, 6to4) are judged by that address; any other IPv6 address
/// outside global unicast (2000::/3) is refused.
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

/// IPv4 special-purpose blocks (RFC 6890 and successors), as (network, prefix length).
const FORBIDDEN_V4: &[([u8; 4], u32)] = &[
    ([0, 0, 0, 0], 8),       // "this network", unspecified
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
    ([192, 88, 99, 0], 24),  // 6to4 relay anycast
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
    ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
    ([224, 0, 0, 0], 4),     // multicast
    ([240, 0, 0, 0], 4),     // reserved, and 255.255.255.255 broadcast
];

/// 2000::/3, the only IPv6 space allocated for global unicast: outside it (and the forms
/// carrying an IPv4 address) nothing is a webhook target.
const GLOBAL_UNICAST_V6: u128 = 0x2000 << 112;

/// IPv6 blocks refused within global unicast (those carrying IPv4 are judged in
/// `forbidden_v6`); fc00::/7 and the rest outside 2000::/3 are listed for the reader.
const FORBIDDEN_V6: &[(u128, u32)] = &[
    (0x0064_ff9b_0001 << 80, 48), // local-use NAT64 (RFC 8215)
    (0x0100 << 112, 64),          // discard-only
    (0x2001 << 112, 23),          // IETF protocol assignments (Teredo, ORCHID, benchmarking)
    (0x2001_0db8 << 96, 32),      // documentation
    (0x3fff << 112, 20),          // documentation (RFC 9637)
    (0xfc00 << 112, 7),           // unique local
    (0xfe80 << 112, 10),          // link-local
    (0xfec0 << 112, 10),          // site-local (deprecated)
    (0xff00 << 112, 8),           // multicast
];

fn in_block(bits: u128, width: u32, network: u128, prefix: u32) -> bool {
    let shift = width - prefix;
    prefix == 0 || bits >> shift == network >> shift
}

fn forbidden_v4(ip: Ipv4Addr) -> bool {
    let bits = u128::from(u32::from(ip));
    FORBIDDEN_V4
        .iter()
        .any(|(net, prefix)| in_block(bits, 32, u32::from_be_bytes(*net).into(), *prefix))
}

fn forbidden_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    if ip.is_unspecified() || ip.is_loopback() {
        return true;
    }
    let embedded = |bits: u128| Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible), 64:ff9b::a.b.c.d (NAT64).
    if in_block(bits, 128, 0xffff << 32, 96)
        || in_block(bits, 128, 0, 96)
        || in_block(bits, 128, 0x0064_ff9b << 96, 96)
    {
        return forbidden_v4(embedded(bits));
    }
    // 6to4: 2002:a.b.c.d::/48 reaches a.b.c.d's network.
    if in_block(bits, 128, 0x2002 << 112, 16) {
        return forbidden_v4(embedded(bits >> 80));
    }
    // Only global unicast (2000::/3) is routed on the Internet; everything else (IPv4-translated
    // ::ffff:0:0/96, SRv6 5f00::/16, unassigned space) is never a receiver.
    !in_block(bits, 128, GLOBAL_UNICAST_V6, 3)
        || FORBIDDEN_V6
            .iter()
            .any(|(net, prefix)| in_block(bits, 128, *net, *prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden(text: &str) -> bool {
        is_forbidden(text.parse().unwrap())
    }

    #[test]
    fn ipv4_special_ranges_are_forbidden_and_public_ones_are_not() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "127.255.255.254",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
        ] {
            assert!(forbidden(ip), "{ip} should be forbidden");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "93.184.215.14",
        ] {
            assert!(!forbidden(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn ipv6_special_ranges_are_forbidden_and_public_ones_are_not() {
        for ip in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "64:ff9b:1::1",
            "100::1",
            "::ffff:0:7f00:1",
            "::ffff:0:a00:1",
            "5f00::1",
            "4000::1",
            "e000::1",
        ] {
            assert!(forbidden(ip), "{ip} should be forbidden");
        }
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "2001:4860::8888",
        ] {
            assert!(!forbidden(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn ipv6_carrying_ipv4_is_judged_by_the_ipv4() {
        for ip in [
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::1",
            "2002:c0a8:101::",
        ] {
            assert!(forbidden(ip), "{ip} should be forbidden");
        }
        for ip in ["::ffff:8.8.8.8", "64:ff9b::1.1.1.1", "2002:808:808::1"] {
            assert!(!forbidden(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn urls_are_checked() {
        let ok = parse_url("https://example.com/hooks?x=1", false).unwrap();
        assert_eq!(ok.as_str(), "https://example.com/hooks?x=1");
        assert_eq!((ok.host(), ok.port()), ("example.com", 443));
        assert_eq!(ok.ip_literal(), None);
        let v6 = parse_url("https://[::ffff:127.0.0.1]:8443/", false).unwrap();
        assert_eq!(v6.ip_literal(), Some("::ffff:127.0.0.1".parse().unwrap()));
        let odd = parse_url("https://0x7f.1/", false).unwrap();
        assert_eq!(odd.ip_literal(), Some("127.0.0.1".parse().unwrap()));
        assert!(parse_url("http://example.com/", true).is_ok());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        for (raw, allow_http, problem) in [
            ("http://example.com/", false, "must be an https:// URL"),
            (
                "ftp://example.com/",
                true,
                "must be an http:// or https:// URL",
            ),
            ("/relative", false, "must be an absolute URL"),
            (
                "https://user:pw@example.com/",
                false,
                "must not contain a username or password",
            ),
            (
                "https://user@example.com/",
                false,
                "must not contain a username or password",
            ),
            (
                "https://example.com/#top",
                false,
                "must not contain a fragment",
            ),
            ("https://:443/", false, "must have a host"),
            (
                "https://exa mple.com/",
                false,
                "must not contain whitespace or control characters",
            ),
            (long.as_str(), false, "must be at most 2048 characters"),
        ] {
            assert_eq!(parse_url(raw, allow_http), Err(problem), "{raw}");
        }
    }

    #[tokio::test]
    async fn resolve_refuses_forbidden_names_and_literals_unless_allowed() {
        for raw in [
            "http://127.0.0.1:9/",
            "http://[::1]:9/",
            "http://[::ffff:127.0.0.1]:9/",
            "http://localhost:9/",
        ] {
            let target = parse_url(raw, true).unwrap();
            let refused = resolve(&target, false).await.unwrap_err();
            assert!(
                matches!(refused, TargetRefused::Forbidden { .. }),
                "{raw}: {refused}"
            );
            let addresses = resolve(&target, true).await.unwrap();
            assert!(addresses.iter().all(|a| a.port() == 9), "{raw}");
        }
    }

    #[tokio::test]
    async fn an_unknown_name_is_unresolved() {
        let target = parse_url("https://no-such-host.invalid/", false).unwrap();
        let refused = resolve(&target, true).await.unwrap_err();
        assert!(
            matches!(refused, TargetRefused::Unresolved { .. }),
            "{refused}"
        );
        assert_eq!(refused.message(), "host does not resolve");
    }
}
