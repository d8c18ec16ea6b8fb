//! Who the client is: the TCP peer, unless the peer is one of `server.trusted_proxies`, in which
//! case the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy. This one
//! address is what the failed-auth throttle, the request log and the audit trail see.
//!
//! Walking from the right is what makes it safe: each trusted proxy appends the address it saw,
//! so everything right of the first untrusted entry was written by our own proxies, and
//! everything left of it may have been written by the client.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// `server.trusted_proxies`: CIDRs (`10.0.0.0/8`, `::1/128`) or single addresses.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(networks: Vec<IpNet>) -> TrustedProxies {
        TrustedProxies(networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|network| network.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client's address for a request from `peer` carrying `headers`.
    pub fn client_ip(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = canonical(peer?.ip());
        if self.is_empty() || !self.contains(peer) {
            return Some(peer);
        }
        let mut client = peer;
        // Header order is arrival order; within a header, left to right.
        let values: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .map(|value| value.to_str().unwrap_or(""))
            .collect();
        let entries = values.iter().rev().flat_map(|value| value.rsplit(','));
        for entry in entries {
            if !self.contains(client) {
                break;
            }
            match parse_entry(entry.trim()) {
                Some(ip) => client = ip,
                // Garbage where an address should be: stop at the last proxy we trust rather
                // than believe anything further left.
                None => break,
            }
        }
        Some(client)
    }
}

/// An `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry
        .parse::<SocketAddr>()
        .ok()
        .map(|addr| canonical(addr.ip()))
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`, as a dual-stack socket reports IPv4 peers) is the IPv4
/// address, so one CIDR list and one throttle bucket cover both spellings.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl<'de> Deserialize<'de> for TrustedProxies {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Vec::<String>::deserialize(deserializer)?;
        raw.iter()
            .map(|entry| {
                let entry = entry.trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        serde::de::Error::custom(format!(
                            "server.trusted_proxies: {entry:?} is not a CIDR like 10.0.0.0/8 or an address"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies(list.iter().map(|n| n.parse().unwrap()).collect())
    }

    fn xff(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(
                HeaderName::from_static("x-forwarded-for"),
                HeaderValue::from_static(value),
            );
        }
        headers
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client_whatever_it_claims() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client_ip(peer("192.0.2.1"), &xff(&["203.0.113.5"])),
            ip("192.0.2.1")
        );
        let lb = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            lb.client_ip(peer("192.0.2.1"), &xff(&["203.0.113.5"])),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_entry_is_the_client() {
        let lb = proxies(&["10.0.0.0/8", "127.0.0.1/32"]);
        let cases: &[(&str, &[&'static str], &str)] = &[
            // The client forged "1.1.1.1"; the load balancer appended what it saw.
            (
                "127.0.0.1",
                &["1.1.1.1, 203.0.113.5, 10.0.0.7"],
                "203.0.113.5",
            ),
            // Several headers are one list, in order.
            (
                "10.0.0.9",
                &["1.1.1.1", "203.0.113.5", "10.0.0.7"],
                "203.0.113.5",
            ),
            // No list, or garbage where an address should be: the trusted hop stays.
            ("10.0.0.9", &[], "10.0.0.9"),
            ("10.0.0.9", &["203.0.113.5, not-an-ip"], "10.0.0.9"),
            // All entries trusted: the leftmost is as far as we can see.
            ("10.0.0.9", &["10.1.1.1, 10.2.2.2"], "10.1.1.1"),
            // Ports and IPv4-mapped peers.
            ("::ffff:10.0.0.9", &["[2001:db8::1]:443"], "2001:db8::1"),
            ("10.0.0.9", &["203.0.113.5:5000"], "203.0.113.5"),
        ];
        for (from, list, client) in cases {
            assert_eq!(
                lb.client_ip(peer(from), &xff(list)),
                ip(client),
                "{from} {list:?}"
            );
        }
    }

    #[test]
    fn settings_accept_cidrs_and_addresses_and_name_a_bad_entry() {
        let parsed: TrustedProxies =
            serde_json::from_str(r#"["10.0.0.0/8", "::1", "192.0.2.7"]"#).unwrap();
        assert!(parsed.contains("10.200.0.1".parse().unwrap()));
        assert!(parsed.contains("::1".parse().unwrap()));
        assert!(parsed.contains("192.0.2.7".parse().unwrap()));
        assert!(!parsed.contains("192.0.2.8".parse().unwrap()));
        let error = serde_json::from_str::<TrustedProxies>(r#"["10.0.0.0/33"]"#).unwrap_err();
        assert!(
            error.to_string().contains("server.trusted_proxies"),
            "{error}"
        );
    }
}
