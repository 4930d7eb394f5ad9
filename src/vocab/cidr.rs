//! CIDR lists for FL_CONTROL_ALLOW: which source addresses may reach the Control API port.
//!
//! Accepted forms, separated by commas and/or whitespace: `10.0.0.0/24`, `192.168.1.7` (a
//! single host, /32), `2001:db8::/32`, `::1` (/128), `[fd00::]/8`. Bits set below the prefix
//! (`10.0.0.5/24`) are an error, not silently masked: the operator probably meant a host or a
//! different prefix. An IPv4-mapped IPv6 peer (`::ffff:10.0.0.5`, what a dual-stack socket
//! reports) matches the IPv4 entries.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The variable whose value [`parse_cidr_list`] reads; errors name it.
pub const CONTROL_ALLOW_VAR: &str = "FL_CONTROL_ALLOW";

/// One network: an address and a prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// A network from its parts; `None` when the prefix is too long or host bits are set.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = max_prefix(addr);
        if prefix > max {
            return None;
        }
        let cidr = Cidr { addr, prefix };
        (mask_addr(addr, prefix) == addr).then_some(cidr)
    }

    /// A single host (/32 or /128).
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr { addr, prefix: max_prefix(addr) }
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Parse one entry. The error says what is wrong with it (without naming the variable).
    pub fn parse(entry: &str) -> Result<Cidr, String> {
        let (addr_s, prefix_s) = match entry.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (entry, None),
        };
        let addr_s = addr_s.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(addr_s);
        let addr: IpAddr = addr_s
            .parse()
            .map_err(|_| format!("{addr_s:?} is not an IPv4 or IPv6 address (a CIDR is ADDRESS or ADDRESS/PREFIX; names are not accepted)"))?;
        let max = max_prefix(addr);
        let prefix = match prefix_s {
            None => max,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("prefix {p:?} is not a number 0-{max}"));
                }
                match p.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => return Err(format!("prefix /{p} is longer than {max} bits")),
                }
            }
        };
        let masked = mask_addr(addr, prefix);
        if masked != addr {
            return Err(format!("host bits are set below the /{prefix} prefix (the network is {masked}/{prefix}; for one host write {addr})"));
        }
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is inside this network. IPv4-mapped IPv6 addresses are compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => mask_addr(ip, self.prefix) == self.addr,
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Parse FL_CONTROL_ALLOW: entries separated by commas and/or whitespace; empty (or only
/// separators) is an empty list, which means "the Control port listens on loopback only".
/// Every bad entry is reported, each quoted, in one message that names the variable.
pub fn parse_cidr_list(value: &str) -> Result<Vec<Cidr>, String> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for entry in value.split(|c: char| c == ',' || c.is_whitespace()).filter(|e| !e.is_empty()) {
        match Cidr::parse(entry) {
            Ok(c) if !out.contains(&c) => out.push(c),
            Ok(_) => {}
            Err(why) => problems.push(format!("{entry:?}: {why}")),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(format!("{CONTROL_ALLOW_VAR}: {}", problems.join("; ")))
    }
}

/// Whether `ip` is inside any of `list`.
pub fn any_contains(list: &[Cidr], ip: IpAddr) -> bool {
    list.iter().any(|c| c.contains(ip))
}

/// The loopback networks (127.0.0.0/8, ::1/128): who may use the Control port when
/// FL_CONTROL_ALLOW is empty.
pub fn loopback() -> Vec<Cidr> {
    vec![
        Cidr { addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), prefix: 8 },
        Cidr { addr: IpAddr::V6(Ipv6Addr::LOCALHOST), prefix: 128 },
    ]
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as IPv4; everything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The address width of the family: 32 or 128.
fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// `addr` with every bit after the first `prefix` cleared (`prefix` ≤ the family's width).
fn mask_addr(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix.min(128))).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_networks_and_hosts_of_both_families() {
        let list = parse_cidr_list("10.0.0.0/24, 192.168.1.7\n2001:db8::/32 ::1,[fd00::]/8  ,0.0.0.0/0").unwrap();
        let shown: Vec<String> = list.iter().map(Cidr::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/24", "192.168.1.7/32", "2001:db8::/32", "::1/128", "fd00::/8", "0.0.0.0/0"]);
        assert_eq!(parse_cidr_list("").unwrap(), vec![]);
        assert_eq!(parse_cidr_list(" , \t").unwrap(), vec![]);
        // Duplicates collapse.
        assert_eq!(parse_cidr_list("10.0.0.1 10.0.0.1/32").unwrap().len(), 1);
    }

    #[test]
    fn errors_name_the_variable_and_every_bad_entry() {
        let e = parse_cidr_list("10.0.0.0/24, 10.0.0.5/24, example.org, 10.0.0.0/33, ::/129, 1.2.3.4/x, 1.2.3.4/").unwrap_err();
        assert!(e.starts_with("FL_CONTROL_ALLOW: "), "{e}");
        assert!(e.contains("\"10.0.0.5/24\": host bits are set below the /24 prefix (the network is 10.0.0.0/24"), "{e}");
        assert!(e.contains("\"example.org\": \"example.org\" is not an IPv4 or IPv6 address"), "{e}");
        assert!(e.contains("\"10.0.0.0/33\": prefix /33 is longer than 32 bits"), "{e}");
        assert!(e.contains("\"::/129\": prefix /129 is longer than 128 bits"), "{e}");
        assert!(e.contains("\"1.2.3.4/x\": prefix \"x\" is not a number 0-32"), "{e}");
        assert!(e.contains("\"1.2.3.4/\": prefix \"\" is not a number"), "{e}");
        assert!(!e.contains("\"10.0.0.0/24\""), "a good entry is not reported: {e}");
        assert!(parse_cidr_list("10.0.0.0/24;10.0.1.0/24").is_err(), "semicolons are not separators");
        assert!(parse_cidr_list("10.0.0.0/+8").is_err());
    }

    #[test]
    fn matching_follows_the_prefix() {
        let net = Cidr::parse("10.1.2.0/23").unwrap();
        assert!(net.contains(ip("10.1.2.0")) && net.contains(ip("10.1.3.255")));
        assert!(!net.contains(ip("10.1.4.0")) && !net.contains(ip("10.1.1.255")));
        let all4 = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all4.contains(ip("203.0.113.9")) && !all4.contains(ip("2001:db8::1")));
        let v6 = Cidr::parse("2001:db8:abcd::/48").unwrap();
        assert!(v6.contains(ip("2001:db8:abcd:ffff::1")) && !v6.contains(ip("2001:db8:abce::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let host = Cidr::parse("127.0.0.9").unwrap();
        assert!(host.contains(ip("127.0.0.9")) && !host.contains(ip("127.0.0.10")));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_entries() {
        let net = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(net.contains(ip("::ffff:192.0.2.44")));
        assert!(!net.contains(ip("::ffff:198.51.100.1")));
        assert!(any_contains(&loopback(), ip("::ffff:127.0.0.1")));
        assert!(any_contains(&loopback(), ip("::1")) && any_contains(&loopback(), ip("127.8.9.10")));
        assert!(!any_contains(&loopback(), ip("10.0.0.1")) && !any_contains(&[], ip("127.0.0.1")));
    }

    #[test]
    fn constructor_refuses_host_bits_and_long_prefixes() {
        assert!(Cidr::new(ip("10.0.0.0"), 8).is_some());
        assert!(Cidr::new(ip("10.0.0.1"), 8).is_none());
        assert!(Cidr::new(ip("10.0.0.0"), 33).is_none());
        assert_eq!(Cidr::host(ip("::2")).to_string(), "::2/128");
    }

    proptest::proptest! {
        #[test]
        fn a_network_contains_exactly_the_addresses_sharing_its_prefix(a: u32, b: u32, prefix in 0u8..=32) {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            let net = Cidr::new(IpAddr::V4(Ipv4Addr::from(a & mask)), prefix).unwrap();
            proptest::prop_assert_eq!(net.contains(IpAddr::V4(Ipv4Addr::from(b))), (a & mask) == (b & mask));
            proptest::prop_assert_eq!(Cidr::parse(&net.to_string()).unwrap(), net);
        }
    }
}
