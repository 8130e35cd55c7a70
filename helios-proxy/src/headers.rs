//! What the proxy does to request headers on their way upstream: hop-by-hop headers
//! stripped (RFC 9110 7.6.1: the fixed list and every name the `Connection` header lists),
//! `X-Forwarded-For/Proto/Host` and RFC 7239 `Forwarded` set, `Via` added. Whether
//! incoming forwarding headers are kept (and appended to) or replaced depends on whether
//! the peer is a trusted proxy ([`TrustedProxies`]): from anyone else they are a client's
//! claim about its own address, and are dropped.
//!
//! Headers are `(name, value)` pairs with lowercase names (as hyper gives them), so the
//! core needs no HTTP crate; the binary converts.
//!
//! Invariants (property-tested):
//! - After [`upstream_headers`], no hop-by-hop header and no header named in an incoming
//!   `Connection` value remains (except `upgrade`/`connection: upgrade` when tunnelling).
//! - From an untrusted peer, `x-forwarded-for` is exactly the peer's address and `forwarded`
//!   has exactly one element: nothing the client sent survives.
//! - From a trusted peer, the incoming chain is kept and the peer appended.

use crate::error::ProxyError;
use std::net::IpAddr;

/// The hop-by-hop headers of RFC 9110 7.6.1, `proxy-connection` (which old clients send)
/// and `proxy-authorization` (credentials meant for this proxy, never for the backend).
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// Addresses whose forwarding headers are believed: CIDR blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    blocks: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses CIDR blocks (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128),
    /// naming the first bad one.
    pub fn parse<S: AsRef<str>>(blocks: &[S]) -> Result<Self, ProxyError> {
        let mut out = Vec::with_capacity(blocks.len());
        for b in blocks {
            let b = b.as_ref();
            let bad = || ProxyError::Invalid {
                field: "trusted_proxies",
                reason: format!("{b:?} is not an address or CIDR block"),
            };
            let (addr, len) = match b.split_once('/') {
                Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
                None => (b, None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| bad())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = len.unwrap_or(max);
            if len > max {
                return Err(bad());
            }
            out.push((ip, len));
        }
        Ok(TrustedProxies { blocks: out })
    }

    /// Whether `ip` is in one of the blocks (an IPv4-mapped IPv6 address as its IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.blocks.iter().any(|&(net, len)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), len),
            _ => false,
        })
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let full = usize::from(len / 8);
    let rest = len % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// Where a request came from and what it asked for, for the forwarding headers.
#[derive(Debug, Clone, Copy)]
pub struct Hop<'a> {
    /// The peer's address (the client, or a proxy in front of us).
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy.
    pub peer_trusted: bool,
    /// `http` or `https`: how the request reached us.
    pub proto: &'a str,
    /// The request's host (its `Host` header or `:authority`), if any.
    pub host: Option<&'a str>,
    /// Keep `upgrade` and `connection: upgrade` (a WebSocket or other upgrade being
    /// tunnelled).
    pub upgrade: bool,
}

/// The names an incoming `Connection` header lists (lowercased), besides the fixed list.
fn connection_listed(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n == "connection")
        .flat_map(|(_, v)| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// `for=` of RFC 7239: IPv6 addresses bracketed and quoted.
fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// A `forwarded` parameter value: a token as is, anything else quoted (RFC 7230 quoted
/// string; `"` and `\` escaped).
fn forwarded_value(v: &str) -> String {
    let token = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:".contains(&b));
    if token && !v.contains(':') {
        v.to_owned()
    } else {
        let escaped: String = v
            .chars()
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

/// The headers to send upstream for a request that came with `incoming` through `hop`.
/// See the module docs.
pub fn upstream_headers(incoming: &[(String, String)], hop: &Hop<'_>) -> Vec<(String, String)> {
    let listed = connection_listed(incoming);
    let forwarding = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
    ];
    let mut out: Vec<(String, String)> = Vec::with_capacity(incoming.len() + 4);
    let mut xff_in: Vec<&str> = Vec::new();
    let mut fwd_in: Vec<&str> = Vec::new();
    let mut xfp_in = None;
    let mut xfh_in = None;
    for (name, value) in incoming {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || listed.iter().any(|l| l == n) {
            continue;
        }
        if forwarding.contains(&n) {
            if hop.peer_trusted {
                match n {
                    "x-forwarded-for" => xff_in.push(value),
                    "forwarded" => fwd_in.push(value),
                    "x-forwarded-proto" => xfp_in = xfp_in.or(Some(value.as_str())),
                    _ => xfh_in = xfh_in.or(Some(value.as_str())),
                }
            }
            continue;
        }
        out.push((name.clone(), value.clone()));
    }
    if hop.upgrade
        && let Some((_, v)) = incoming.iter().find(|(n, _)| n == "upgrade")
    {
        out.push(("connection".to_owned(), "upgrade".to_owned()));
        out.push(("upgrade".to_owned(), v.clone()));
    }
    let mut xff: Vec<String> = xff_in
        .iter()
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    xff.push(hop.peer.to_string());
    out.push(("x-forwarded-for".to_owned(), xff.join(", ")));
    out.push((
        "x-forwarded-proto".to_owned(),
        xfp_in.unwrap_or(hop.proto).to_owned(),
    ));
    if let Some(h) = xfh_in.or(hop.host) {
        out.push(("x-forwarded-host".to_owned(), h.to_owned()));
    }
    let mut element = format!(
        "for={};proto={}",
        forwarded_node(hop.peer),
        forwarded_value(hop.proto)
    );
    if let Some(h) = hop.host {
        element.push_str(";host=");
        element.push_str(&forwarded_value(h));
    }
    let mut fwd: Vec<String> = fwd_in
        .iter()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    fwd.push(element);
    out.push(("forwarded".to_owned(), fwd.join(", ")));
    let via = incoming
        .iter()
        .filter(|(n, _)| n == "via")
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>();
    out.retain(|(n, _)| n != "via");
    let mut via: Vec<String> = via.into_iter().map(str::to_owned).collect();
    via.push("1.1 helios-proxy".to_owned());
    out.push(("via".to_owned(), via.join(", ")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn get<'a>(hs: &'a [(String, String)], name: &str) -> Vec<&'a str> {
        hs.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn hop(peer: &str, trusted: bool) -> Hop<'static> {
        Hop {
            peer: peer.parse().unwrap(),
            peer_trusted: trusted,
            proto: "https",
            host: Some("shop.example"),
            upgrade: false,
        }
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_stripped() {
        let incoming = h(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]);
        let out = upstream_headers(&incoming, &hop("10.0.0.9", false));
        for gone in ["connection", "keep-alive", "x-secret", "te"] {
            assert!(get(&out, gone).is_empty(), "{gone} survived");
        }
        assert_eq!(get(&out, "accept"), ["*/*"]);
        assert_eq!(get(&out, "via"), ["1.1 helios-proxy"]);
    }

    #[test]
    fn forwarding_headers_from_strangers_are_replaced_and_from_proxies_extended() {
        let incoming = h(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "http"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        let out = upstream_headers(&incoming, &hop("203.0.113.7", false));
        assert_eq!(get(&out, "x-forwarded-for"), ["203.0.113.7"]);
        assert_eq!(get(&out, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&out, "x-forwarded-host"), ["shop.example"]);
        assert_eq!(
            get(&out, "forwarded"),
            ["for=203.0.113.7;proto=https;host=shop.example"]
        );
        let out = upstream_headers(&incoming, &hop("10.0.0.2", true));
        assert_eq!(get(&out, "x-forwarded-for"), ["1.2.3.4, 10.0.0.2"]);
        assert_eq!(
            get(&out, "x-forwarded-proto"),
            ["http"],
            "the first proxy saw http"
        );
        assert_eq!(
            get(&out, "forwarded"),
            ["for=1.2.3.4, for=10.0.0.2;proto=https;host=shop.example"]
        );
        let out = upstream_headers(&[], &hop("2001:db8::1", false));
        assert_eq!(
            get(&out, "forwarded"),
            ["for=\"[2001:db8::1]\";proto=https;host=shop.example"]
        );
    }

    #[test]
    fn an_upgrade_is_kept_when_tunnelling() {
        let incoming = h(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        let mut tunnel = hop("10.0.0.9", false);
        tunnel.upgrade = true;
        let out = upstream_headers(&incoming, &tunnel);
        assert_eq!(get(&out, "upgrade"), ["websocket"]);
        assert_eq!(get(&out, "connection"), ["upgrade"]);
        assert!(
            get(
                &upstream_headers(&incoming, &hop("10.0.0.9", false)),
                "upgrade"
            )
            .is_empty()
        );
    }

    #[test]
    fn trusted_blocks() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "192.168.1.1", "::1/128", "2001:db8::/33"])
            .unwrap();
        for yes in [
            "10.255.0.1",
            "192.168.1.1",
            "::1",
            "::ffff:10.0.0.1",
            "2001:db8:7fff::1",
        ] {
            assert!(t.contains(yes.parse().unwrap()), "{yes}");
        }
        for no in ["11.0.0.1", "192.168.1.2", "::2", "2001:db8:8000::1"] {
            assert!(!t.contains(no.parse().unwrap()), "{no}");
        }
        for bad in ["10.0.0.0/33", "banana", "::1/129", "10.0.0.0/x"] {
            assert!(TrustedProxies::parse(&[bad]).is_err(), "{bad}");
        }
    }

    proptest! {
        /// Whatever a client sends: no hop-by-hop or Connection-listed header survives,
        /// and from an untrusted peer no forwarding claim of its own does.
        #[test]
        fn nothing_hop_by_hop_or_forged_survives(
            headers in proptest::collection::vec(
                (prop_oneof![
                    Just("connection".to_owned()),
                    Just("keep-alive".to_owned()),
                    Just("x-forwarded-for".to_owned()),
                    Just("forwarded".to_owned()),
                    Just("x-a".to_owned()),
                    Just("x-b".to_owned()),
                    Just("via".to_owned()),
                    "[a-z]{1,6}",
                ], "[ -~]{0,20}"),
                0..12,
            ),
            trusted in any::<bool>(),
        ) {
            let listed = connection_listed(&headers);
            let out = upstream_headers(&headers, &hop("198.51.100.1", trusted));
            for (n, _) in &out {
                prop_assert!(!listed.contains(n) || n == "x-forwarded-for" || n == "forwarded" || n == "via"
                    || n == "x-forwarded-proto" || n == "x-forwarded-host", "{n} survived");
                prop_assert!(!HOP_BY_HOP.contains(&n.as_str()), "{n} survived");
            }
            let xff = get(&out, "x-forwarded-for");
            prop_assert_eq!(xff.len(), 1);
            if !trusted {
                prop_assert_eq!(xff[0], "198.51.100.1");
                prop_assert_eq!(get(&out, "forwarded").len(), 1);
                prop_assert!(!get(&out, "forwarded")[0].contains(','));
            } else {
                prop_assert!(xff[0].ends_with("198.51.100.1"));
            }
        }
    }
}
