//! What the proxy does to headers. Upstream ([`upstream_headers`]): hop-by-hop headers
//! stripped (RFC 9110 7.6.1: the fixed list and every name the `Connection` header lists),
//! `X-Forwarded-For/Proto/Host` and RFC 7239 `Forwarded` set, `Via` added. Whether
//! incoming forwarding headers are kept (and appended to) or replaced depends on whether
//! the peer is a trusted proxy ([`TrustedProxies`]): from anyone else they are a client's
//! claim about its own address, and are dropped. Downstream ([`downstream_headers`]): the
//! backend's hop-by-hop headers stripped the same way, `Via` added.
//!
//! Both work on the request's own `http::HeaderMap` in place: entries are removed or
//! added, never converted, so every other header reaches the backend byte for byte (values
//! that are not UTF-8, RFC 9110's obs-text, included) and a request costs no string copies.
//!
//! Invariants (property-tested):
//! - After [`upstream_headers`], no hop-by-hop header and no header named in an incoming
//!   `Connection` value remains (except `upgrade`/`connection: upgrade` when tunnelling).
//! - From an untrusted peer, `x-forwarded-for` is exactly the peer's address and `forwarded`
//!   has exactly one element: nothing the client sent survives.
//! - From a trusted peer, the incoming chain is kept and the peer appended.
//! - Every other header is kept, value for value, in order.

use crate::error::ProxyError;
use http::header::{CONNECTION, Entry, FORWARDED, UPGRADE, VIA};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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

/// The names an incoming `Connection` header lists, besides the fixed list (unparsable
/// ones skipped: they cannot name a header).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|t| HeaderName::from_bytes(t.trim_ascii()).ok())
        .collect()
}

/// Removes the fixed hop-by-hop headers and those `Connection` lists.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    for name in connection_listed(h) {
        h.remove(name);
    }
    for name in HOP_BY_HOP {
        h.remove(name);
    }
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

/// Removes every `name` header: the values that are text, in order.
fn take_text(h: &mut HeaderMap, name: &HeaderName) -> Vec<String> {
    let values = match h.entry(name) {
        Entry::Occupied(e) => e.remove_entry_mult().1.collect::<Vec<_>>(),
        Entry::Vacant(_) => return Vec::new(),
    };
    values
        .into_iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

/// A header value we made from text that is already valid (addresses, tokens, the
/// request's own host); anything else is dropped rather than sent malformed.
fn put(h: &mut HeaderMap, name: HeaderName, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.append(name, v);
    }
}

/// Turns the request's headers `h` into those to send upstream, in place, for a request
/// that came through `hop`. See the module docs.
pub fn upstream_headers(h: &mut HeaderMap, hop: &Hop<'_>) {
    let upgrade = if hop.upgrade {
        h.get(UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(h);
    let xff_in = take_text(h, &X_FORWARDED_FOR);
    let fwd_in = take_text(h, &FORWARDED);
    let xfp_in = take_text(h, &X_FORWARDED_PROTO);
    let xfh_in = take_text(h, &X_FORWARDED_HOST);
    let via_in = take_text(h, &VIA);
    let (xff_in, fwd_in, xfp_in, xfh_in) = if hop.peer_trusted {
        (
            xff_in,
            fwd_in,
            xfp_in.into_iter().next(),
            xfh_in.into_iter().next(),
        )
    } else {
        (Vec::new(), Vec::new(), None, None)
    };
    if let Some(v) = upgrade {
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(UPGRADE, v);
    }
    let mut xff: Vec<&str> = xff_in
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let peer = hop.peer.to_string();
    xff.push(&peer);
    put(h, X_FORWARDED_FOR.clone(), xff.join(", "));
    put(
        h,
        X_FORWARDED_PROTO.clone(),
        xfp_in.unwrap_or_else(|| hop.proto.to_owned()),
    );
    if let Some(host) = xfh_in.or(hop.host.map(str::to_owned)) {
        put(h, X_FORWARDED_HOST.clone(), host);
    }
    let mut element = format!(
        "for={};proto={}",
        forwarded_node(hop.peer),
        forwarded_value(hop.proto)
    );
    if let Some(host) = hop.host {
        element.push_str(";host=");
        element.push_str(&forwarded_value(host));
    }
    let mut fwd: Vec<&str> = fwd_in
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .collect();
    fwd.push(&element);
    put(h, FORWARDED.clone(), fwd.join(", "));
    add_via(h, via_in);
}

/// Appends this proxy to the `Via` chain `before` (what came in), as one header.
fn add_via(h: &mut HeaderMap, before: Vec<String>) {
    if before.is_empty() {
        h.insert(VIA, HeaderValue::from_static(VIA_SELF));
        return;
    }
    let mut via = before;
    via.push(VIA_SELF.to_owned());
    put(h, VIA, via.join(", "));
}

/// This proxy in a `Via` chain.
const VIA_SELF: &str = "1.1 helios-proxy";

/// Turns a backend's response headers `h` into those sent to the client, in place:
/// hop-by-hop headers stripped (the fixed list and what its `Connection` lists; on a
/// `101 Switching Protocols`, `switching`, its `Upgrade` kept with `Connection: upgrade`),
/// this proxy appended to `Via`.
pub fn downstream_headers(h: &mut HeaderMap, switching: bool) {
    let upgrade = if switching {
        h.get(UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(h);
    if let Some(u) = upgrade {
        h.insert(UPGRADE, u);
        h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let via_in = take_text(h, &VIA);
    add_via(h, via_in);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in pairs {
            m.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn get<'a>(hs: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        hs.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    fn up(incoming: &HeaderMap, hop: &Hop<'_>) -> HeaderMap {
        let mut out = incoming.clone();
        upstream_headers(&mut out, hop);
        out
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
        let out = up(&incoming, &hop("10.0.0.9", false));
        for gone in ["connection", "keep-alive", "x-secret", "te"] {
            assert!(get(&out, gone).is_empty(), "{gone} survived");
        }
        assert_eq!(get(&out, "accept"), ["*/*"]);
        assert_eq!(get(&out, "via"), ["1.1 helios-proxy"]);
    }

    #[test]
    fn values_that_are_not_text_pass_byte_for_byte() {
        let mut incoming = HeaderMap::new();
        let raw = HeaderValue::from_bytes(b"caf\xe9 \xff").unwrap();
        incoming.append("x-latin1", raw.clone());
        incoming.append("x-latin1", HeaderValue::from_static("second"));
        let out = up(&incoming, &hop("10.0.0.9", false));
        let got: Vec<&HeaderValue> = out.get_all("x-latin1").iter().collect();
        assert_eq!(got, [&raw, &HeaderValue::from_static("second")]);
    }

    #[test]
    fn responses_lose_hop_by_hop_headers_and_gain_via() {
        let mut r = h(&[
            ("connection", "x-internal"),
            ("x-internal", "1"),
            ("transfer-encoding", "chunked"),
            ("via", "1.1 backend-cache"),
            ("content-type", "text/plain"),
        ]);
        downstream_headers(&mut r, false);
        assert!(get(&r, "x-internal").is_empty());
        assert!(get(&r, "connection").is_empty());
        assert!(get(&r, "transfer-encoding").is_empty());
        assert_eq!(get(&r, "via"), ["1.1 backend-cache, 1.1 helios-proxy"]);
        assert_eq!(get(&r, "content-type"), ["text/plain"]);
        let mut switching = h(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
        downstream_headers(&mut switching, true);
        assert_eq!(get(&switching, "upgrade"), ["websocket"]);
        assert_eq!(get(&switching, "connection"), ["upgrade"]);
    }

    #[test]
    fn forwarding_headers_from_strangers_are_replaced_and_from_proxies_extended() {
        let incoming = h(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "http"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        let out = up(&incoming, &hop("203.0.113.7", false));
        assert_eq!(get(&out, "x-forwarded-for"), ["203.0.113.7"]);
        assert_eq!(get(&out, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&out, "x-forwarded-host"), ["shop.example"]);
        assert_eq!(
            get(&out, "forwarded"),
            ["for=203.0.113.7;proto=https;host=shop.example"]
        );
        let out = up(&incoming, &hop("10.0.0.2", true));
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
        let out = up(&HeaderMap::new(), &hop("2001:db8::1", false));
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
        let out = up(&incoming, &tunnel);
        assert_eq!(get(&out, "upgrade"), ["websocket"]);
        assert_eq!(get(&out, "connection"), ["upgrade"]);
        assert!(get(&up(&incoming, &hop("10.0.0.9", false)), "upgrade").is_empty());
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

    const MADE: [&str; 5] = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "via",
    ];

    proptest! {
        /// Whatever a client sends: no hop-by-hop or Connection-listed header survives,
        /// from an untrusted peer no forwarding claim of its own does, and every other
        /// header is kept, value for value, in order.
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
                ], "[!-~]([ -~]{0,18}[!-~])?"),
                0..12,
            ),
            trusted in any::<bool>(),
        ) {
            let pairs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let incoming = h(&pairs);
            let listed: Vec<HeaderName> = connection_listed(&incoming);
            let out = up(&incoming, &hop("198.51.100.1", trusted));
            for n in out.keys() {
                prop_assert!(!listed.contains(n) || MADE.contains(&n.as_str()), "{n} survived");
                prop_assert!(!HOP_BY_HOP.contains(&n.as_str()), "{n} survived");
            }
            for n in incoming.keys() {
                if listed.contains(n) || HOP_BY_HOP.contains(&n.as_str()) || MADE.contains(&n.as_str()) {
                    continue;
                }
                let before: Vec<_> = incoming.get_all(n).iter().collect();
                let after: Vec<_> = out.get_all(n).iter().collect();
                prop_assert_eq!(before, after, "{} changed", n);
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
