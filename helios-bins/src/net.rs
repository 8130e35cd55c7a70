//! What the servers share about their clients' addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The client identity of an address for rate limits, login throttling and per-address
/// connection caps: an IPv4 address, or an IPv6 address's /64 (one subscriber's prefix; a
/// host owns 2^64 of them). An IPv4-mapped IPv6 address is its IPv4 address. `Copy` and
/// hashable, so counting connections per client allocates nothing; its `Display` is
/// [`client_key`]'s text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientId {
    /// An IPv4 client.
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 client's address.
    V6Prefix(u64),
}

impl ClientId {
    /// The identity of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientId::V4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientId::V4(v4),
                None => ClientId::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientId::V4(v4) => write!(f, "{v4}"),
            ClientId::V6Prefix(p) => write!(f, "{}/64", Ipv6Addr::from(u128::from(*p) << 64)),
        }
    }
}

/// [`ClientId::of`] as text: the key rate limits and throttles are stored under.
pub fn client_key(ip: IpAddr) -> String {
    ClientId::of(ip).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_identity_is_the_ipv4_address_or_the_ipv6_64() {
        let key = |s: &str| client_key(s.parse().unwrap());
        assert_eq!(key("10.1.2.3"), "10.1.2.3");
        assert_eq!(key("::ffff:10.1.2.3"), "10.1.2.3");
        // Every address of one /64 is one client; the next /64 is another.
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:3::1"), "2001:db8:1:3::/64");
        assert_eq!(key("::1"), "::/64");
        let id = |s: &str| ClientId::of(s.parse().unwrap());
        assert_eq!(id("2001:db8:1:2::1"), id("2001:db8:1:2:ffff::9"));
        assert_ne!(id("2001:db8:1:2::1"), id("2001:db8:1:3::1"));
        assert_eq!(id("::ffff:10.1.2.3"), id("10.1.2.3"));
    }
}
