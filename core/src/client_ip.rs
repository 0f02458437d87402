//! Which address a request came from when load balancers stand in front of
//! the edge: the peer's, unless the peer is a trusted proxy, in which case the
//! header it sets names the client. Headers from any other peer are ignored,
//! so a client cannot choose its own rate-limit bucket.

use ipnet::IpNet;
use std::net::IpAddr;

/// Where a trusted proxy puts the client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientIpHeader {
    /// `X-Forwarded-For`: the rightmost address that is not a trusted proxy
    /// (each proxy appends its peer; only the right end is not forgeable).
    XForwardedFor,
    /// RFC 7239 `Forwarded`: its `for=` values, read the same way.
    Forwarded,
    /// A header holding one address, set by the proxy and never appended to
    /// (`CF-Connecting-IP`, `True-Client-IP`, `X-Real-IP`); lower-case name.
    Single(String),
}

impl ClientIpHeader {
    pub fn parse(name: &str) -> Result<ClientIpHeader, String> {
        let name = name.trim().to_ascii_lowercase();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("`{name}` is not a header name"));
        }
        Ok(match name.as_str() {
            "x-forwarded-for" => ClientIpHeader::XForwardedFor,
            "forwarded" => ClientIpHeader::Forwarded,
            _ => ClientIpHeader::Single(name),
        })
    }

    /// The header's name, as the gateway strips it before forwarding.
    pub fn name(&self) -> &str {
        match self {
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
            ClientIpHeader::Forwarded => "forwarded",
            ClientIpHeader::Single(name) => name,
        }
    }
}

/// `a.b.c.d/n` or `v6/n` (a bare address is its own /32 or /128), comma separated.
pub fn parse_cidrs(spec: &str) -> Result<Vec<IpNet>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|cidr| {
            cidr.parse::<IpNet>()
                .or_else(|_| cidr.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("`{cidr}` is not an address or CIDR range"))
        })
        .collect()
}

/// The client's address for a request from `peer` with `headers`
/// (lower-cased names).
pub fn resolve(
    peer: IpAddr,
    headers: &[(String, String)],
    trusted: &[IpNet],
    header: &ClientIpHeader,
) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(&canonical(*ip)));
    if !is_trusted(&peer) {
        return peer;
    }
    let values = headers
        .iter()
        .filter(|(name, _)| name == header.name())
        .map(|(_, value)| value.as_str());
    let hops: Vec<Option<IpAddr>> = match header {
        ClientIpHeader::Single(_) => {
            // One value; several lines of it are a forgery or a misconfiguration.
            let values: Vec<&str> = values.collect();
            return match values.as_slice() {
                [one] => parse_address(one).unwrap_or(peer),
                _ => peer,
            };
        }
        ClientIpHeader::XForwardedFor => values
            .flat_map(|v| v.split(','))
            .map(parse_address)
            .collect(),
        ClientIpHeader::Forwarded => values
            .flat_map(|v| v.split(','))
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (name, value) = pair.trim().split_once('=')?;
                    name.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_address(value))?
                })
            })
            .collect(),
    };
    // From the right: our trusted proxies appended these; the first address
    // that is not one of them is the client as the outermost proxy saw it.
    // An entry that is not an address (`unknown`, an obfuscated name) ends
    // the walk at the last proxy we can vouch for.
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        match hop {
            Some(ip) if is_trusted(&ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:5678`, quoted or not.
pub fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    let host = match text.strip_prefix('[') {
        Some(rest) => rest.split(']').next()?,
        None => text.rsplit_once(':').map(|(host, _)| host)?,
    };
    host.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| IpAddr::from([0, 0, 0, 0]))
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let trusted = parse_cidrs("10.0.0.0/8").unwrap_or_default();
        let spoofed = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("cf-connecting-ip", "1.2.3.4"),
        ]);
        for header in ["x-forwarded-for", "cf-connecting-ip", "forwarded"] {
            let header = ClientIpHeader::parse(header).unwrap_or(ClientIpHeader::XForwardedFor);
            assert_eq!(
                resolve(ip("198.51.100.1"), &spoofed, &trusted, &header),
                ip("198.51.100.1")
            );
        }
        // No trusted proxies at all (the default): headers are never read.
        assert_eq!(
            resolve(
                ip("10.0.0.1"),
                &spoofed,
                &[],
                &ClientIpHeader::XForwardedFor
            ),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn x_forwarded_for_is_read_from_the_right_past_trusted_hops() {
        let trusted = parse_cidrs("10.0.0.0/8, 192.168.1.1").unwrap_or_default();
        let xff = ClientIpHeader::XForwardedFor;
        let peer = ip("10.0.0.1");
        // One hop: the load balancer appended the client.
        let one = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(resolve(peer, &one, &trusted, &xff), ip("203.0.113.7"));
        // Two hops, and a client that forged an entry on the left.
        let two = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.7, 192.168.1.1")]);
        assert_eq!(resolve(peer, &two, &trusted, &xff), ip("203.0.113.7"));
        // Split over two lines, with ports.
        let lines = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "203.0.113.7:5000, 10.1.1.1"),
        ]);
        assert_eq!(resolve(peer, &lines, &trusted, &xff), ip("203.0.113.7"));
        // Nothing but proxies: the leftmost proxy; no header: the peer.
        let proxies = headers(&[("x-forwarded-for", "10.2.2.2, 10.3.3.3")]);
        assert_eq!(resolve(peer, &proxies, &trusted, &xff), ip("10.2.2.2"));
        assert_eq!(resolve(peer, &[], &trusted, &xff), peer);
        // Garbage stops the walk at the last trusted hop.
        let garbage = headers(&[("x-forwarded-for", "203.0.113.7, nonsense, 10.3.3.3")]);
        assert_eq!(resolve(peer, &garbage, &trusted, &xff), ip("10.3.3.3"));
    }

    #[test]
    fn forwarded_and_single_value_headers() {
        let trusted = parse_cidrs("127.0.0.1/32, ::1").unwrap_or_default();
        let peer = ip("127.0.0.1");
        let forwarded = headers(&[(
            "forwarded",
            "for=1.2.3.4, for=\"[2001:db8::7]:4711\";proto=https, for=127.0.0.1",
        )]);
        assert_eq!(
            resolve(peer, &forwarded, &trusted, &ClientIpHeader::Forwarded),
            ip("2001:db8::7")
        );
        let cf = ClientIpHeader::parse("CF-Connecting-IP").unwrap_or(ClientIpHeader::Forwarded);
        assert_eq!(cf, ClientIpHeader::Single("cf-connecting-ip".into()));
        let one = headers(&[("cf-connecting-ip", "203.0.113.9")]);
        assert_eq!(resolve(peer, &one, &trusted, &cf), ip("203.0.113.9"));
        let two = headers(&[
            ("cf-connecting-ip", "203.0.113.9"),
            ("cf-connecting-ip", "1.1.1.1"),
        ]);
        assert_eq!(resolve(peer, &two, &trusted, &cf), peer);
        // An IPv4-mapped peer matches an IPv4 range.
        assert_eq!(
            resolve(ip("::ffff:127.0.0.1"), &one, &trusted, &cf),
            ip("203.0.113.9")
        );
        assert!(parse_cidrs("10.0.0.0/33").is_err());
        assert!(ClientIpHeader::parse("x forwarded").is_err());
    }
}
