//! The egress guard (as smokescreen does): after DNS resolution, destinations in private,
//! loopback, link-local (cloud metadata), CGNAT, unique-local and other special-purpose ranges
//! are refused unless `proxy.egress.allow` names them. The connection then goes to the checked
//! address itself, so a DNS answer that changes between check and connect (rebinding) cannot
//! slip through.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::routing::normalize_host;

/// An address range, `10.0.0.0/8` or `fc00::/7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Option<Cidr> {
        let (ip, bits) = text.split_once('/')?;
        let net: IpAddr = ip.parse().ok()?;
        let bits: u8 = bits.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        (bits <= max).then_some(Cidr { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[full] & mask == b[full] & mask
    }
}

/// Why an IPv4 address is not a public destination, if it is not.
fn v4_category(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => "\"this network\" (0.0.0.0/8)",
        (10, ..) => "private (RFC 1918)",
        (100, 64..=127, _) => "carrier-grade NAT (100.64.0.0/10)",
        (127, ..) => "loopback",
        (169, 254, _) => "link-local (cloud metadata lives at 169.254.169.254)",
        (172, 16..=31, _) => "private (RFC 1918)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (192, 168, _) => "private (RFC 1918)",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (224..=239, ..) => "multicast",
        (240..=255, ..) => "reserved or broadcast",
        _ => return None,
    })
}

/// Why an IPv6 address is not a public destination, if it is not. Forms that embed an IPv4
/// address (mapped, compatible, NAT64, 6to4) are judged by that address.
fn v6_category(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    let o = ip.octets();
    let embedded = |i: usize| Ipv4Addr::new(o[i], o[i + 1], o[i + 2], o[i + 3]);
    // ::ffff:a.b.c.d, IPv4-mapped.
    if s[..6] == [0, 0, 0, 0, 0, 0xffff] {
        return v4_category(embedded(12));
    }
    // ::ffff:0:a.b.c.d, IPv4-translated (SIIT).
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return v4_category(embedded(12));
    }
    // ::a.b.c.d, IPv4-compatible: deprecated, never a legitimate destination.
    if s[..6] == [0; 6] {
        return Some("IPv4-compatible (deprecated)");
    }
    // 64:ff9b::/96, the NAT64 well-known prefix.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_category(embedded(12));
    }
    // 2002::/16, 6to4: the IPv4 address is in bits 16..48.
    if s[0] == 0x2002 {
        return v4_category(embedded(2));
    }
    Some(match s[0] {
        0x0064 if s[1] == 0xff9b && s[2] == 1 => "local-use NAT64 (64:ff9b:1::/48)",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        0x2001 if s[1] == 0 => "Teredo (2001::/32)",
        0x2001 if s[1] == 0x0db8 => "documentation",
        x if x & 0xfe00 == 0xfc00 => "unique-local (fc00::/7)",
        x if x & 0xffc0 == 0xfe80 => "link-local (fe80::/10)",
        x if x & 0xffc0 == 0xfec0 => "site-local (deprecated, fec0::/10)",
        x if x & 0xff00 == 0xff00 => "multicast",
        _ => return None,
    })
}

/// Why `ip` is refused by `deny_private`, if it is.
pub fn private_category(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_category(v4),
        IpAddr::V6(v6) => v6_category(v6),
    }
}

/// One `proxy.egress.allow` entry: a CIDR, an IP address or a host name, optionally with a
/// port or port range (`127.0.0.1:9000`, `10.0.0.0/8:8000-8999`, `[::1]:9000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    target: AllowTarget,
    /// Inclusive; `None`: every port.
    ports: Option<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum AllowTarget {
    Net(Cidr),
    Host(String),
}

impl Allow {
    pub fn parse(text: &str) -> Result<Allow, String> {
        let (target, ports) = split_ports(text)?;
        let ports = ports.map(parse_ports).transpose()?;
        let target = if let Ok(ip) = target.parse::<IpAddr>() {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            AllowTarget::Net(Cidr { net: ip, bits })
        } else if let Some(c) = Cidr::parse(target) {
            AllowTarget::Net(c)
        } else if target.contains('/') {
            return Err(format!("`{target}` is not a CIDR (such as 10.0.0.0/8)"));
        } else {
            let h = normalize_host(target).map_err(|_| format!("`{target}` is not a host name"))?;
            AllowTarget::Host(h)
        };
        Ok(Allow { target, ports })
    }

    fn port_ok(&self, port: u16) -> bool {
        self.ports.is_none_or(|(lo, hi)| (lo..=hi).contains(&port))
    }
}

/// `target[:ports]`; an IPv6 address or CIDR takes a port only in brackets.
fn split_ports(text: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{text}`: `[` without `]`"))?;
        return match after {
            "" => Ok((inner, None)),
            a => a
                .strip_prefix(':')
                .map(|p| (inner, Some(p)))
                .ok_or_else(|| format!("`{text}`: expected `:PORT` after `]`")),
        };
    }
    match text.matches(':').count() {
        1 => Ok(text
            .split_once(':')
            .map(|(t, p)| (t, Some(p)))
            .unwrap_or((text, None))),
        _ => Ok((text, None)),
    }
}

/// `9000` or `9000-9099`.
fn parse_ports(p: &str) -> Result<(u16, u16), String> {
    let port = |x: &str| {
        x.parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("`{x}` is not a port (1 to 65535)"))
    };
    let (lo, hi) = match p.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => (port(p)?, port(p)?),
    };
    if lo > hi {
        return Err(format!("`{p}`: the range runs backwards"));
    }
    Ok((lo, hi))
}

/// The compiled `proxy.egress` section.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub deny_private: bool,
    allow: Vec<Allow>,
}

/// A refused destination.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves to {ip}, {why}: refused by proxy.egress.deny_private (add it, with its port, to proxy.egress.allow if intended)")]
pub struct Denied {
    pub host: String,
    pub ip: IpAddr,
    pub why: &'static str,
}

impl Policy {
    /// `allow` entries as `Allow::parse` reads them (validated at config load; others are
    /// ignored).
    pub fn new(deny_private: bool, allow: &[String]) -> Policy {
        Policy {
            deny_private,
            allow: allow.iter().filter_map(|a| Allow::parse(a).ok()).collect(),
        }
    }

    /// The addresses of `host` that may be connected to on `port`, in their order; refused
    /// when none.
    pub fn filter(
        &self,
        host: &str,
        port: u16,
        addrs: Arc<[IpAddr]>,
    ) -> Result<Arc<[IpAddr]>, Denied> {
        let host_allowed = self
            .allow
            .iter()
            .any(|a| a.port_ok(port) && matches!(&a.target, AllowTarget::Host(h) if h == host));
        // Nearly every request: nothing refused, and the resolved list is passed on as it is.
        if !self.deny_private
            || host_allowed
            || addrs.iter().all(|&ip| self.refusal(ip, port).is_none())
        {
            return Ok(addrs);
        }
        let mut first_denied = None;
        let ok: Vec<IpAddr> = addrs
            .iter()
            .copied()
            .filter(|&ip| match self.refusal(ip, port) {
                None => true,
                Some(why) => {
                    first_denied.get_or_insert((ip, why));
                    false
                }
            })
            .collect();
        match first_denied {
            None => Ok(addrs),
            Some(_) if !ok.is_empty() => Ok(Arc::from(ok)),
            Some((ip, why)) => Err(Denied {
                host: host.to_string(),
                ip,
                why,
            }),
        }
    }

    fn refusal(&self, ip: IpAddr, port: u16) -> Option<&'static str> {
        let why = private_category(ip)?;
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = self.allow.iter().any(|a| match &a.target {
            AllowTarget::Net(n) => {
                a.port_ok(port) && (n.contains(ip) || mapped.is_some_and(|m| n.contains(m)))
            }
            AllowTarget::Host(_) => false,
        });
        (!allowed).then_some(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_ranges_are_private() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "192.0.0.8",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "::ffff:0:127.0.0.1",
            "::ffff:0:a9fe:a9fe",
            "::127.0.0.1",
            "::0.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "64:ff9b:1::1",
            "100::1",
        ] {
            assert!(private_category(ip(a)).is_some(), "{a}");
        }
    }

    #[test]
    fn public_addresses_are_not() {
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "169.253.0.1",
            "192.169.0.1",
            "11.0.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(private_category(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn policy_filters_and_allows() {
        let p = Policy::new(
            true,
            &["127.0.0.0/8".into(), "::1/128".into(), "db.internal".into()],
        );
        let both: Arc<[IpAddr]> = Arc::from([ip("::1"), ip("127.0.0.1")]);
        assert_eq!(p.filter("localhost", 80, both.clone()).unwrap(), both);
        // Mapped forms of an allowed IPv4 range are allowed too.
        assert!(p
            .filter("x", 80, Arc::from([ip("::ffff:127.0.0.1")]))
            .is_ok());
        let e = p
            .filter("metadata", 80, Arc::from([ip("169.254.169.254")]))
            .unwrap_err();
        assert!(e.to_string().contains("link-local"), "{e}");
        assert!(p
            .filter("db.internal", 5432, Arc::from([ip("10.0.0.5")]))
            .is_ok());
        // A name resolving to a public and a private address keeps only the public one.
        let mixed: Arc<[IpAddr]> = Arc::from([ip("10.0.0.1"), ip("1.2.3.4")]);
        assert_eq!(&*p.filter("mixed", 80, mixed).unwrap(), &[ip("1.2.3.4")]);
        let off = Policy::new(false, &[]);
        assert!(off.filter("x", 80, Arc::from([ip("127.0.0.1")])).is_ok());
    }

    #[test]
    fn allow_entries_with_ports() {
        let p = Policy::new(
            true,
            &[
                "127.0.0.1:9000".into(),
                "10.0.0.0/8:8000-8099".into(),
                "[::1]:9000".into(),
                "db.internal:5432".into(),
            ],
        );
        let lo: Arc<[IpAddr]> = Arc::from([ip("127.0.0.1")]);
        assert!(p.filter("127.0.0.1", 9000, lo.clone()).is_ok());
        assert!(p.filter("127.0.0.1", 9090, lo).is_err(), "another port");
        assert!(
            p.filter("x", 9000, Arc::from([ip("127.0.0.2")])).is_err(),
            "another IP"
        );
        assert!(p.filter("x", 8050, Arc::from([ip("10.1.2.3")])).is_ok());
        assert!(p.filter("x", 8100, Arc::from([ip("10.1.2.3")])).is_err());
        assert!(p.filter("x", 9000, Arc::from([ip("::1")])).is_ok());
        assert!(p
            .filter("db.internal", 5432, Arc::from([ip("10.9.9.9")]))
            .is_ok());
        assert!(p
            .filter("db.internal", 22, Arc::from([ip("10.9.9.9")]))
            .is_err());
        for bad in [
            "10.0.0.0/33",
            "1.2.3.4:0",
            "1.2.3.4:70000",
            "1.2.3.4:9-1",
            "[::1",
            "[::1]x",
            "a b",
        ] {
            assert!(Allow::parse(bad).is_err(), "{bad}");
        }
        for good in [
            "fc00::/7",
            "[fc00::/7]:443",
            "::1",
            "host.example",
            "host.example:1-2",
        ] {
            assert!(Allow::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c = Cidr::parse("172.16.0.0/12").unwrap();
        assert!(c.contains(ip("172.31.1.1")));
        assert!(!c.contains(ip("172.32.0.0")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
        assert!(Cidr::parse("fc00::/7").unwrap().contains(ip("fdff::1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(!Cidr::parse("0.0.0.0/0").unwrap().contains(ip("::1")));
    }
}
