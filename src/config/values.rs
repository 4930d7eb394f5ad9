//! Pure parsers for single context values. Each returns the typed value or the rule it broke,
//! phrased to follow "must be" ("an integer >= 1") or as a full reason.

use crate::vocab::STATE_DIR;
use super::model::{Address, CudaDevices, Database, Endpoint, Host};
use crate::net::{Ipv4Net, Route4};
use crate::vars::Bound;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Component, Path, PathBuf};

/// `YES`/`NO`, any case.
pub fn yes_no(s: &str) -> Result<bool, String> {
    match s.trim() {
        v if v.eq_ignore_ascii_case("yes") => Ok(true),
        v if v.eq_ignore_ascii_case("no") => Ok(false),
        _ => Err("must be YES or NO".into()),
    }
}

/// A decimal integer in `min..=max`; the error is the rule from the table.
pub fn int(s: &str, min: i64, max: i64, rule: &str) -> Result<i64, String> {
    let v = s.trim();
    let digits = v.strip_prefix(['-', '+']).unwrap_or(v);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("must be {rule}"));
    }
    match v.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be {rule}")),
    }
}

/// A finite decimal number within the bounds.
pub fn float(s: &str, lo: Bound, hi: Bound, rule: &str) -> Result<f64, String> {
    let v = s.trim();
    let ok_chars = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b));
    let x = match v.parse::<f64>() {
        Ok(x) if ok_chars && x.is_finite() => x,
        _ => return Err(format!("must be {rule}")),
    };
    let lo_ok = match lo {
        Bound::None => true,
        Bound::Incl(b) => x >= b,
        Bound::Excl(b) => x > b,
    };
    let hi_ok = match hi {
        Bound::None => true,
        Bound::Incl(b) => x <= b,
        Bound::Excl(b) => x < b,
    };
    if lo_ok && hi_ok { Ok(x) } else { Err(format!("must be {rule}")) }
}

/// Why `name` is not a DNS host name (RFC 1123 labels), or `None` when it is one.
pub fn dns_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 253 {
        return Some("a host name has 1 to 253 characters");
    }
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Some("each dot-separated label has 1 to 63 characters");
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Some("a host name has only letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("a label does not start or end with '-'");
        }
    }
    if name.trim_end_matches('.').rsplit('.').next().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
        return Some("looks like an IP address but is not a valid one");
    }
    None
}

/// A host: IPv4, `[IPv6]` (brackets required when `bracketed`), or a DNS name.
fn host(s: &str) -> Result<Host, String> {
    if let Some(v6) = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        return v6
            .parse::<Ipv6Addr>()
            .map(|a| Host::Ip(IpAddr::V6(a)))
            .map_err(|_| format!("{v6:?} is not an IPv6 address"));
    }
    if let Ok(ip) = s.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    match dns_name_problem(s) {
        None => Ok(Host::Name(s.to_ascii_lowercase())),
        Some(why) => Err(format!("{s:?} is neither an IP address nor a host name ({why})")),
    }
}

/// A TCP port, 1-65535.
fn port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(format!("port {s:?} is not a number from 1 to 65535")),
    }
}

/// `host:port`, `[v6]:port`.
pub fn host_port(s: &str) -> Result<Address, String> {
    let v = s.trim();
    if v.contains("://") {
        return Err("must be host:port without a scheme (e.g. 10.0.0.5:8000)".into());
    }
    if v.matches(':').count() > 1 && !v.starts_with('[') {
        return Err("must be host:port with an IPv6 address in brackets ([2001:db8::1]:8000)".into());
    }
    let Some((h, p)) = v.rsplit_once(':') else {
        return Err("must be host:port (the port is missing, e.g. 10.0.0.5:8000)".into());
    };
    let host = host(h).map_err(|e| format!("must be host:port: {e}"))?;
    let port = port(p).map_err(|e| format!("must be host:port: {e}"))?;
    Ok(Address { host, port })
}

/// ONEGATE_ENDPOINT: `http(s)://host[:port][/path]`.
pub fn url(s: &str) -> Result<Endpoint, String> {
    let v = s.trim();
    let (https, rest) = if let Some(r) = v.strip_prefix("http://") {
        (false, r)
    } else if let Some(r) = v.strip_prefix("https://") {
        (true, r)
    } else {
        return Err("must be a URL http://host:port".into());
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (h, p) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(i) => (&authority[..=i], authority[i + 1..].strip_prefix(':')),
            None => return Err("must be a URL http://host:port (unclosed '[')".into()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host = host(h).map_err(|e| format!("must be a URL http://host:port: {e}"))?;
    let port = match p {
        Some(p) => port(p).map_err(|e| format!("must be a URL http://host:port: {e}"))?,
        None if https => 443,
        None => 80,
    };
    Ok(Endpoint {
        url: v.trim_end_matches('/').to_string(),
        https,
        host,
        port,
        path: path.trim_end_matches('/').to_string(),
    })
}

/// `all`, or comma-separated GPU indices without duplicates.
pub fn cuda_devices(s: &str) -> Result<CudaDevices, String> {
    let v = s.trim();
    if v.eq_ignore_ascii_case("all") {
        return Ok(CudaDevices::All);
    }
    let mut out = Vec::new();
    for part in v.split(',').map(str::trim) {
        match part.parse::<u32>() {
            Ok(i) if part.bytes().all(|b| b.is_ascii_digit()) && i < 1024 => {
                if out.contains(&i) {
                    return Err(format!("lists GPU {i} twice"));
                }
                out.push(i);
            }
            _ => return Err("must be all, or a comma-separated list of GPU indices (0,1)".into()),
        }
    }
    Ok(CudaDevices::Indices(out))
}

/// An absolute path without `.`/`..` parts, under (or equal to) the state directory.
pub fn state_path(s: &str) -> Result<PathBuf, String> {
    let p = Path::new(s.trim());
    let clean = p.is_absolute() && p.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !clean || !p.starts_with(STATE_DIR) {
        return Err(format!(
            "must be an absolute path under {STATE_DIR} (the state disk; everything else is read-only or lost at power-off)"
        ));
    }
    Ok(p.components().collect())
}

/// FL_DATABASE: `:flwr-in-memory:`, or a file under the state directory.
pub fn database(s: &str) -> Result<Database, String> {
    let v = s.trim();
    if v == ":flwr-in-memory:" || v == ":memory:" {
        return Ok(Database::InMemory);
    }
    let p = Path::new(v);
    let full = if p.is_absolute() { p.to_path_buf() } else { Path::new(STATE_DIR).join(p) };
    match state_path(&full.to_string_lossy()) {
        Ok(f) if f != Path::new(STATE_DIR) => Ok(Database::File(f)),
        _ => Err(format!(
            "must be a file path under {STATE_DIR} (absolute, or relative to it, without '..'), or :flwr-in-memory:"
        )),
    }
}

/// `02:00:ac:14:00:13` (any case, also `-` separated).
pub fn mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.trim().split([':', '-']).collect();
    let mut out = [0u8; 6];
    if parts.len() != 6 {
        return Err("must be a MAC address xx:xx:xx:xx:xx:xx".into());
    }
    for (o, p) in out.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return Err("must be a MAC address xx:xx:xx:xx:xx:xx".into());
        }
        *o = u8::from_str_radix(p, 16).map_err(|_| "must be a MAC address xx:xx:xx:xx:xx:xx".to_string())?;
    }
    Ok(out)
}

/// An IPv4 address (ETH<n>_IP, _GATEWAY).
pub fn ipv4(s: &str) -> Result<Ipv4Addr, String> {
    s.trim().parse().map_err(|_| "must be an IPv4 address".into())
}

/// An IPv6 address (ETH<n>_IP6, _IP6_ULA, _IP6_GATEWAY).
pub fn ipv6(s: &str) -> Result<Ipv6Addr, String> {
    s.trim().parse().map_err(|_| "must be an IPv6 address".into())
}

/// Dotted netmask with contiguous ones, or a prefix length `0..=32` (also `/24`).
pub fn netmask(s: &str) -> Result<u8, String> {
    let v = s.trim();
    let err = || "must be a netmask like 255.255.255.0 (contiguous ones) or a prefix length 0-32".to_string();
    if let Ok(m) = v.parse::<Ipv4Addr>() {
        let bits = u32::from(m);
        let prefix = bits.leading_ones();
        return if bits.checked_shl(prefix).unwrap_or(0) == 0 { Ok(prefix as u8) } else { Err(err()) };
    }
    let n = v.strip_prefix('/').unwrap_or(v);
    match n.parse::<u8>() {
        Ok(p) if p <= 32 && n.bytes().all(|b| b.is_ascii_digit()) => Ok(p),
        _ => Err(err()),
    }
}

/// Words separated by commas and/or whitespace.
fn words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ',' || c.is_whitespace()).filter(|w| !w.is_empty())
}

/// Name servers: IPv4/IPv6 addresses separated by spaces or commas.
pub fn ip_list(s: &str) -> Result<Vec<IpAddr>, String> {
    words(s).map(|w| w.parse::<IpAddr>().map_err(|_| format!("{w:?} is not an IP address"))).collect()
}

/// Search domains separated by spaces or commas.
pub fn domains(s: &str) -> Result<Vec<String>, String> {
    words(s)
        .map(|w| match dns_name_problem(w) {
            None => Ok(w.trim_end_matches('.').to_ascii_lowercase()),
            Some(why) => Err(format!("{w:?} is not a domain name ({why})")),
        })
        .collect()
}

/// An IPv4 network `a.b.c.d/n` or a host address (`/32`).
fn ipv4_net(s: &str) -> Result<Ipv4Net, String> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, netmask(p).map_err(|_| format!("{s:?}: prefix length must be 0-32"))?),
        None => (s, 32),
    };
    let addr = a.parse::<Ipv4Addr>().map_err(|_| format!("{a:?} is not an IPv4 address"))?;
    Ok(Ipv4Net { addr, prefix: p })
}

/// ETHx_ROUTES: `DST via GW, …` (DST an address or CIDR) or the legacy `DST MASK GW, …`.
pub fn routes(s: &str) -> Result<Vec<Route4>, String> {
    let mut out = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let w: Vec<&str> = entry.split_whitespace().collect();
        let route = match w.as_slice() {
            [dst, via, gw] if via.eq_ignore_ascii_case("via") => Route4 {
                dst: ipv4_net(dst)?,
                via: ipv4(gw).map_err(|_| format!("gateway {gw:?} is not an IPv4 address"))?,
            },
            [dst, mask, gw] => {
                let prefix = netmask(mask).map_err(|_| format!("{mask:?} is not a netmask"))?;
                let addr = dst.parse::<Ipv4Addr>().map_err(|_| format!("{dst:?} is not an IPv4 address"))?;
                Route4 {
                    dst: Ipv4Net { addr, prefix },
                    via: ipv4(gw).map_err(|_| format!("gateway {gw:?} is not an IPv4 address"))?,
                }
            }
            _ => return Err(format!("route {entry:?} must be \"DST via GW\" or \"DST MASK GW\"")),
        };
        out.push(route);
    }
    Ok(out)
}

/// one-context's `net-15-hostname`: every character other than `[-a-zA-Z0-9.]` becomes `-`,
/// then leading and trailing `-` are stripped.
pub fn sanitize_hostname(s: &str) -> String {
    let mapped: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '-' }).collect();
    mapped.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_no_and_numbers() {
        assert_eq!(yes_no(" yes "), Ok(true));
        assert_eq!(yes_no("NO"), Ok(false));
        assert_eq!(yes_no("true"), Err("must be YES or NO".into()));
        assert_eq!(int("3", 1, i64::MAX, "an integer >= 1"), Ok(3));
        for bad in ["0", "-1", "1.5", "", "3x", "0x10", "1_000", "99999999999999999999"] {
            assert_eq!(int(bad, 1, i64::MAX, "an integer >= 1"), Err("must be an integer >= 1".into()), "{bad}");
        }
        let r = "a number >= 0 and < 0.5";
        assert_eq!(float("0", Bound::Incl(0.0), Bound::Excl(0.5), r), Ok(0.0));
        assert_eq!(float("0.49", Bound::Incl(0.0), Bound::Excl(0.5), r), Ok(0.49));
        for bad in ["0.5", "-0.1", "nan", "inf", "abc", "", "1e400"] {
            assert!(float(bad, Bound::Incl(0.0), Bound::Excl(0.5), r).is_err(), "{bad}");
        }
        assert_eq!(float("1e-3", Bound::Excl(0.0), Bound::None, "x"), Ok(0.001));
        assert!(float("0", Bound::Excl(0.0), Bound::Incl(1.0), "x").is_err());
        assert_eq!(float("1.0", Bound::Excl(0.0), Bound::Incl(1.0), "x"), Ok(1.0));
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(host_port("10.0.0.5:8000").unwrap().to_string(), "10.0.0.5:8000");
        assert_eq!(host_port("[2001:db8::1]:8000").unwrap().to_string(), "[2001:db8::1]:8000");
        assert_eq!(host_port("SuperLink.example:9092").unwrap().to_string(), "superlink.example:9092");
        assert!(host_port("2001:db8::1:8000").unwrap_err().contains("brackets"));
        assert!(host_port("10.0.0.5").unwrap_err().contains("port is missing"));
        assert!(host_port("10.0.0.5:0").is_err());
        assert!(host_port("10.0.0.5:65536").is_err());
        assert!(host_port("http://10.0.0.5:8000").unwrap_err().contains("without a scheme"));
        assert!(host_port("bad_host:80").is_err());
        assert!(host_port("10.0.0:80").unwrap_err().contains("looks like an IP address"));
    }

    #[test]
    fn urls() {
        let e = url("http://169.254.16.9:5030").unwrap();
        assert_eq!((e.https, e.port, e.host.to_string(), e.path.as_str()), (false, 5030, "169.254.16.9".into(), ""));
        let e = url("https://[fd00::1]/onegate/").unwrap();
        assert_eq!((e.https, e.port, e.host.to_string(), e.path.as_str()), (true, 443, "fd00::1".into(), "/onegate"));
        assert_eq!(e.url, "https://[fd00::1]/onegate");
        assert_eq!(url("http://onegate.example").unwrap().port, 80);
        for bad in ["169.254.16.9:5030", "ftp://x", "http://", "http://[fd00::1", "http://h:99999"] {
            assert!(url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cuda_and_paths() {
        assert_eq!(cuda_devices("all"), Ok(CudaDevices::All));
        assert_eq!(cuda_devices("0, 2"), Ok(CudaDevices::Indices(vec![0, 2])));
        assert!(cuda_devices("0,0").unwrap_err().contains("twice"));
        for bad in ["", "gpu0", "0;1", "-1", "0,"] {
            assert!(cuda_devices(bad).is_err(), "{bad}");
        }
        assert_eq!(state_path("/var/lib/flower/ckpt/"), Ok(PathBuf::from("/var/lib/flower/ckpt")));
        for bad in ["/tmp/ckpt", "ckpt", "/var/lib/flower/../etc", "/var/lib/flowerx"] {
            assert!(state_path(bad).is_err(), "{bad}");
        }
        assert_eq!(database("state.db"), Ok(Database::File("/var/lib/flower/state.db".into())));
        assert_eq!(database("/var/lib/flower/db/s.db"), Ok(Database::File("/var/lib/flower/db/s.db".into())));
        assert_eq!(database(":flwr-in-memory:"), Ok(Database::InMemory));
        for bad in ["/etc/x.db", "../x.db", "/var/lib/flower"] {
            assert!(database(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn network_values() {
        assert_eq!(mac("02:00:AC:14:00:13"), Ok([2, 0, 0xac, 0x14, 0, 0x13]));
        for bad in ["02:00:ac:14:00", "02:00:ac:14:00:1g", "0200ac140013", "2:0:ac:14:0:13"] {
            assert!(mac(bad).is_err(), "{bad}");
        }
        assert_eq!(netmask("255.255.0.0"), Ok(16));
        assert_eq!(netmask("255.255.255.255"), Ok(32));
        assert_eq!(netmask("0.0.0.0"), Ok(0));
        assert_eq!(netmask("24"), Ok(24));
        assert_eq!(netmask("/20"), Ok(20));
        for bad in ["255.0.255.0", "255.255.255.1", "33", "x"] {
            assert!(netmask(bad).is_err(), "{bad}");
        }
        assert_eq!(ip_list("8.8.8.8 1.1.1.1,2001:4860::8888").unwrap().len(), 3);
        assert!(ip_list("8.8.8.8 dns.google").unwrap_err().contains("dns.google"));
        assert_eq!(domains("Example.COM. corp.local").unwrap(), vec!["example.com", "corp.local"]);
        assert!(domains("bad_domain").is_err());
    }

    #[test]
    fn routes_in_both_syntaxes() {
        let r = routes("10.0.0.0/8 via 192.168.1.1, 172.16.5.4 via 192.168.1.2").unwrap();
        assert_eq!(
            r[0],
            Route4 { dst: Ipv4Net { addr: Ipv4Addr::new(10, 0, 0, 0), prefix: 8 }, via: Ipv4Addr::new(192, 168, 1, 1) }
        );
        assert_eq!(r[1].dst.prefix, 32);
        let r = routes("10.0.0.0 255.0.0.0 192.168.1.1, 10.1.0.0 255.255.0.0 192.168.1.2").unwrap();
        assert_eq!((r[0].dst.prefix, r[1].dst.prefix), (8, 16));
        assert!(routes("10.0.0.0/8 192.168.1.1").is_err());
        assert!(routes("10.0.0.0/8 via gw").unwrap_err().contains("gateway"));
        assert_eq!(routes(" , ").unwrap(), vec![]);
    }

    #[test]
    fn hostnames_are_sanitised_like_one_context() {
        assert_eq!(sanitize_hostname("\"one-apps-11114\""), "one-apps-11114");
        assert_eq!(sanitize_hostname("my_host name.example.com"), "my-host-name.example.com");
        assert_eq!(sanitize_hostname("--x--"), "x");
        assert_eq!(sanitize_hostname("é"), "");
    }
}
