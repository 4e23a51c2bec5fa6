//! Which address a request comes from, when the gateway stands behind proxies it trusts.
//!
//! The failed-authentication backoff keys on the client's address. Behind an L7 balancer
//! (an ingress, Azure Container Apps' Envoy, nginx) every request arrives from the balancer,
//! so one client guessing tokens would lock out everyone. Requests whose TCP peer is in
//! `gateway.trusted_proxies` are therefore keyed on the address that proxy reports in
//! `X-Forwarded-For`: the rightmost entry that is not itself a trusted proxy, because each
//! proxy appends the address it saw and only the entries added by trusted proxies can be
//! believed. From any other peer the header is ignored, so a client cannot pick the address
//! it is judged by.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

/// Entries of `X-Forwarded-For` looked at, at most: more hops than this is not a real chain.
const MAX_HOPS: usize = 32;

/// The networks whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trusts `nets`; none means no header is ever believed.
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The address to judge a request by: `peer`, or what trusted proxies say stood behind it.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if self.0.is_empty() || !self.trusts(client) {
            return client;
        }
        // Header lines in order, each a comma-separated list: one chain, read from the right.
        // Entries are split as bytes, so junk a client put at the left of a line cannot hide
        // the entries proxies appended to its right.
        let hops: Vec<&[u8]> = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| value.as_bytes().split(|b| *b == b','))
            .collect();
        for hop in hops.iter().rev().take(MAX_HOPS) {
            match parse_hop(hop) {
                Some(ip) => client = ip.to_canonical(),
                // What a trusted proxy added cannot be read: the last readable hop stands.
                None => break,
            }
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, or an address with a port as some balancers
/// write it (`192.0.2.1:5678`, `[2001:db8::1]:443`).
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// Parses `gateway.trusted_proxies` entries: networks (`10.0.0.0/8`) or single addresses.
///
/// # Errors
/// The entry and why it is not a network.
pub fn parse_net(entry: &str) -> Result<IpNet, String> {
    let net = entry
        .parse::<IpNet>()
        .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{entry:?} is not an IP network such as 10.0.0.0/8 or an address"))?;
    // Addresses are compared in their canonical form (IPv4-mapped IPv6 as IPv4), so a mapped
    // network would never match anything.
    match net {
        IpNet::V6(v6) if v6.addr().to_ipv4_mapped().is_some() => Err(format!(
            "{entry:?} is an IPv4-mapped IPv6 network: write it as IPv4"
        )),
        net => Ok(net),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(nets.iter().map(|n| parse_net(n).unwrap()).collect())
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_its_own_address_whatever_it_sends() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            t.client_ip(ip("192.0.2.1"), &xff(&["198.51.100.7"])),
            ip("192.0.2.1")
        );
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), &xff(&["198.51.100.7"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let t = trusted(&["10.0.0.0/8", "127.0.0.1"]);
        // A client-supplied (spoofed) first entry is skipped over, not believed.
        let headers = xff(&["203.0.113.9, 198.51.100.7", "10.1.2.3"]);
        assert_eq!(t.client_ip(ip("10.0.0.1"), &headers), ip("198.51.100.7"));
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &xff(&["198.51.100.7"])),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn odd_chains_fall_back_to_the_last_hop_that_can_be_believed() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &xff(&["unknown"])),
            ip("10.0.0.1")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &xff(&["garbage, 10.2.2.2"])),
            ip("10.2.2.2")
        );
        // Every hop trusted: the leftmost is as far as the chain goes.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &xff(&["10.3.3.3, 10.2.2.2"])),
            ip("10.3.3.3")
        );
        // Ports, as some balancers write them.
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &xff(&["198.51.100.7:5678"])),
            ip("198.51.100.7")
        );
        assert_eq!(
            t.client_ip(ip("10.0.0.1"), &xff(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        // A client's non-ASCII junk on the left of the line nginx appends to.
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\xff\xfe, 198.51.100.7").unwrap(),
        );
        assert_eq!(t.client_ip(ip("10.0.0.1"), &headers), ip("198.51.100.7"));
    }

    #[test]
    fn mapped_and_v6_addresses_compare_as_what_they_are() {
        let t = trusted(&["127.0.0.0/8", "fd00::/8"]);
        assert_eq!(
            t.client_ip(ip("::ffff:127.0.0.1"), &xff(&["2001:db8::1"])),
            ip("2001:db8::1")
        );
        assert_eq!(
            t.client_ip(ip("fd00::5"), &xff(&["::ffff:192.0.2.4"])),
            ip("192.0.2.4")
        );
    }

    #[test]
    fn config_entries_are_networks_or_addresses() {
        assert!(parse_net("10.0.0.0/8").is_ok());
        assert!(parse_net("127.0.0.1").is_ok());
        assert!(parse_net("::1").is_ok());
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("proxy.local").is_err());
        assert!(parse_net("::ffff:10.0.0.0/104").is_err());
    }
}
