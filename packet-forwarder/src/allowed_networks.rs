//! The source networks a gateway's datagrams may come from (issue 12): CIDR blocks, IPv4 and
//! IPv6. Semtech UDP carries no authentication, so the source address is the only thing a
//! server can check; on a network where addresses can be spoofed this narrows, not closes,
//! the door (docs/operations.md, "Gateway security").

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A gateway's allowed source networks; empty = anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct AllowedNetworks(Vec<IpNet>);

/// One entry of a list that is not a network.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a network in CIDR notation (e.g. 192.0.2.0/24 or 2001:db8::/32)")]
pub struct CidrError {
    /// Position in the list, for messages like `allowedNetworks[2]`.
    pub index: usize,
    pub text: String,
}

impl AllowedNetworks {
    /// No restriction.
    pub fn anywhere() -> Self {
        AllowedNetworks(Vec::new())
    }

    /// The networks as given, with host bits cleared (`10.1.2.3/8` is `10.0.0.0/8`) so that
    /// what is stored and shown is what is matched.
    pub fn new(networks: impl IntoIterator<Item = IpNet>) -> Self {
        AllowedNetworks(networks.into_iter().map(|n| n.trunc()).collect())
    }

    /// Parses CIDR strings; a bare address stands for that one host (`/32`, `/128`).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, CidrError> {
        let parsed = items
            .iter()
            .enumerate()
            .map(|(index, s)| {
                let text = s.as_ref().trim();
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| CidrError { index, text: s.as_ref().to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AllowedNetworks::new(parsed))
    }

    /// Whether a datagram from `ip` is accepted. An IPv4-mapped IPv6 address (what a
    /// dual-stack socket bound to `[::]` reports for IPv4 peers) is matched as IPv4.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.is_empty() || self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn is_anywhere(&self) -> bool {
        self.0.is_empty()
    }

    pub fn networks(&self) -> &[IpNet] {
        &self.0
    }

    /// The CIDR strings, as the REST API shows them.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(IpNet::to_string).collect()
    }
}

impl fmt::Display for AllowedNetworks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("anywhere");
        }
        f.write_str(&self.to_strings().join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_empty_list_admits_every_address() {
        let any = AllowedNetworks::anywhere();
        assert!(any.admits(ip("203.0.113.9")));
        assert!(any.admits(ip("2001:db8::1")));
        assert_eq!(any.to_string(), "anywhere");
    }

    #[test]
    fn ipv4_and_ipv6_blocks_admit_only_their_addresses() {
        let nets = AllowedNetworks::parse(&["192.0.2.0/24", "2001:db8:1::/48"]).unwrap();
        assert!(nets.admits(ip("192.0.2.1")));
        assert!(nets.admits(ip("192.0.2.255")));
        assert!(!nets.admits(ip("192.0.3.1")));
        assert!(nets.admits(ip("2001:db8:1:ffff::7")));
        assert!(!nets.admits(ip("2001:db8:2::1")));
        // An IPv6 block never admits an IPv4 address and the other way round.
        assert!(!AllowedNetworks::parse(&["::/0"]).unwrap().admits(ip("192.0.2.1")));
        assert!(!AllowedNetworks::parse(&["0.0.0.0/0"]).unwrap().admits(ip("2001:db8::1")));
    }

    #[test]
    fn ipv4_mapped_ipv6_sources_are_matched_as_ipv4() {
        let nets = AllowedNetworks::parse(&["127.0.0.0/8"]).unwrap();
        assert!(nets.admits(ip("::ffff:127.0.0.2")));
        assert!(!nets.admits(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn a_bare_address_is_one_host_and_host_bits_are_cleared() {
        let nets = AllowedNetworks::parse(&["127.0.0.1", " 10.1.2.3/8 ", "2001:db8::5"]).unwrap();
        assert_eq!(nets.to_strings(), ["127.0.0.1/32", "10.0.0.0/8", "2001:db8::5/128"]);
        assert!(nets.admits(ip("127.0.0.1")));
        assert!(!nets.admits(ip("127.0.0.2")));
        assert!(nets.admits(ip("10.200.0.1")));
    }

    #[test]
    fn a_bad_entry_is_reported_with_its_position() {
        for bad in ["10.0.0.0/33", "10.0.0/8", "example.com", "", "2001:db8::/129"] {
            let err = AllowedNetworks::parse(&["10.0.0.0/8", bad]).unwrap_err();
            assert_eq!(err.index, 1, "{bad}");
            assert_eq!(err.text, bad);
        }
    }

    #[test]
    fn serialised_as_a_list_of_cidr_strings() {
        let nets = AllowedNetworks::parse(&["192.0.2.0/24", "2001:db8::/32"]).unwrap();
        let text = serde_json::to_string(&nets).unwrap();
        assert_eq!(text, r#"["192.0.2.0/24","2001:db8::/32"]"#);
        assert_eq!(serde_json::from_str::<AllowedNetworks>(&text).unwrap(), nets);
        assert_eq!(serde_json::from_str::<AllowedNetworks>("[]").unwrap(), AllowedNetworks::anywhere());
    }
}
