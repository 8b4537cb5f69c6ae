//! Which addresses outbound HTTP may reach: the SSRF guard's rules, without the resolving.
//!
//! Webhook and HTTP destinations resolve the host, then ask [`NetworkPolicy::check`] about
//! every resolved address, and connect only to addresses it allowed (pinning them), so a DNS
//! answer cannot swap in an internal address between the check and the connect.
//!
//! [`classify`] decides what is special. Besides the obvious ranges it looks through the
//! IPv6 forms that carry an IPv4 address (`::ffff:127.0.0.1`, the deprecated `::127.0.0.1`,
//! NAT64 `64:ff9b::/96` and 6to4 `2002::/16`), since each can end up reaching that IPv4
//! address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The allow rules: everything public is allowed; private, loopback, link-local, CGNAT and
/// metadata addresses need `allow_private_networks` or a matching `allowed_hosts` entry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkPolicy {
    /// `allow_private_networks: true`: no address is refused.
    pub allow_private_networks: bool,
    /// `allowed_hosts`: host names (exact, case-insensitive) and CIDRs (`127.0.0.1/32`).
    pub allowed_hosts: Vec<HostRule>,
}

/// One `allowed_hosts` entry.
#[derive(Debug, Clone, PartialEq)]
pub enum HostRule {
    /// A host name, compared case-insensitively with the URL's host.
    Host(String),
    /// An address range; a bare address is a /32 or /128.
    Net(IpNet),
}

const RULE_EXAMPLES: &str = "must be a host name, an IP address or a CIDR such as \"hooks.internal\", \"10.0.0.5\" or \
     \"10.0.0.0/8\"";

impl HostRule {
    /// Parses `example.com`, `10.0.0.0/8`, `127.0.0.1`, `::1` or `[::1]`. Host names are
    /// stored lowercase without a trailing dot; a CIDR with host bits set (`10.1.2.3/8`) is
    /// kept as its network (`10.0.0.0/8`).
    pub fn parse(s: &str) -> Result<HostRule, String> {
        let t = s.trim();
        let bad = |why: &str| Err(format!("{RULE_EXAMPLES}, got \"{s}\" ({why})"));
        if t.is_empty() {
            return bad("empty");
        }
        if t.contains("://") {
            return bad("a URL; give only its host");
        }
        if t.contains('/') {
            return match t.parse::<IpNet>() {
                Ok(net) => Ok(HostRule::Net(net.trunc())),
                Err(_) => bad("not a valid CIDR"),
            };
        }
        let unbracketed = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(t);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(HostRule::Net(IpNet::from(ip)));
        }
        if t.contains('*') {
            return bad("wildcards are not supported; list each host");
        }
        if t.contains(':') {
            return bad("ports are not part of a host rule");
        }
        let name = t.strip_suffix('.').unwrap_or(t);
        let labels: Vec<&str> = name.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.len() > 253 || !labels.iter().all(label_ok) {
            return bad("not a valid host name");
        }
        // URL parsers read a host ending in a numeric label as an IPv4 address (`1.2.3.256`
        // fails, `0x7f.1` is 127.0.0.1), so such a rule could never match a host name.
        if labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit())) {
            return bad("not a valid IP address");
        }
        Ok(HostRule::Host(name.to_ascii_lowercase()))
    }

    /// Whether this rule allows connecting to `addr` for the URL host `host`.
    fn matches(&self, host: &str, addr: IpAddr) -> bool {
        match self {
            HostRule::Host(name) => normalize_host(host).eq_ignore_ascii_case(name),
            HostRule::Net(net) => {
                // `127.0.0.1/32` also covers `::ffff:127.0.0.1`: both reach the same socket.
                net.contains(&addr)
                    || matches!(addr, IpAddr::V6(v6)
                        if v6.to_ipv4_mapped().is_some_and(|v4| net.contains(&IpAddr::V4(v4))))
            }
        }
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostRule::Host(name) => f.write_str(name),
            HostRule::Net(net) => write!(f, "{net}"),
        }
    }
}

/// A URL host as a comparable name: without IPv6 brackets or a trailing dot.
fn normalize_host(host: &str) -> &str {
    let h = host.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(host);
    h.strip_suffix('.').unwrap_or(h)
}

impl NetworkPolicy {
    /// Whether connecting to `addr` (resolved from `host`) is allowed; the error names the
    /// address, why it is special, and the setting that would allow it.
    pub fn check(&self, host: &str, addr: IpAddr) -> Result<(), String> {
        if self.allow_private_networks {
            return Ok(());
        }
        let Some(kind) = classify(addr) else {
            return Ok(());
        };
        if self.allowed_hosts.iter().any(|rule| rule.matches(host, addr)) {
            return Ok(());
        }
        let net = IpNet::from(addr);
        let name = normalize_host(host);
        let literal = name.parse::<IpAddr>().is_ok_and(|ip| ip == addr);
        Err(if literal || name.is_empty() {
            format!(
                "refusing to connect to {addr}: {kind}; set allow_private_networks: true or add \
                 \"{net}\" to allowed_hosts"
            )
        } else {
            format!(
                "refusing to connect to {addr} (resolved from '{host}'): {kind}; set \
                 allow_private_networks: true or add \"{net}\" (or \"{name}\") to allowed_hosts"
            )
        })
    }
}

/// What makes `addr` special (`"loopback address"`, `"private address"`...), or `None` for
/// an ordinary public address.
pub fn classify(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        // Linux connects 0.0.0.0 to the local host; the rest of 0/8 is not routable either.
        [0, ..] => "unspecified address",
        [127, ..] => "loopback address",
        [169, 254, 169, 254] => "cloud metadata address",
        [169, 254, ..] => "link-local address",
        [10, ..] => "private address",
        [172, b, ..] if (16..=31).contains(&b) => "private address",
        [192, 168, ..] => "private address",
        [100, b, ..] if (64..=127).contains(&b) => "shared (CGNAT) address",
        [255, 255, 255, 255] => "broadcast address",
        [224..=239, ..] => "multicast address",
        [240..=255, ..] => "reserved address",
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip.is_loopback() {
        return Some("loopback address");
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    Some(match s[0] {
        // AWS's IPv6 instance metadata endpoint, inside the unique-local range.
        0xfd00 if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) => {
            "cloud metadata address"
        }
        x if x & 0xfe00 == 0xfc00 => "private (unique local) address",
        x if x & 0xffc0 == 0xfe80 => "link-local address",
        x if x & 0xffc0 == 0xfec0 => "site-local address",
        x if x & 0xff00 == 0xff00 => "multicast address",
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address stands for: IPv4-mapped `::ffff:a.b.c.d`, the deprecated
/// IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d` and 6to4 `2002:aabb:ccdd::/48`.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(low()),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low()),
        [0x2002, hi, lo, ..] => {
            Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn classifies_special_addresses() {
        let table: &[(&str, Option<&str>)] = &[
            ("127.0.0.1", Some("loopback address")),
            ("127.255.0.9", Some("loopback address")),
            ("::1", Some("loopback address")),
            ("10.1.2.3", Some("private address")),
            ("172.16.0.1", Some("private address")),
            ("172.31.255.255", Some("private address")),
            ("172.15.0.1", None),
            ("172.32.0.1", None),
            ("192.168.1.1", Some("private address")),
            ("192.169.1.1", None),
            ("fc00::1", Some("private (unique local) address")),
            ("fd12:3456::1", Some("private (unique local) address")),
            ("169.254.1.1", Some("link-local address")),
            ("fe80::1", Some("link-local address")),
            ("febf::1", Some("link-local address")),
            ("fec0::1", Some("site-local address")),
            ("100.64.0.1", Some("shared (CGNAT) address")),
            ("100.127.255.254", Some("shared (CGNAT) address")),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("0.0.0.0", Some("unspecified address")),
            ("0.1.2.3", Some("unspecified address")),
            ("::", Some("unspecified address")),
            ("169.254.169.254", Some("cloud metadata address")),
            ("fd00:ec2::254", Some("cloud metadata address")),
            ("224.0.0.1", Some("multicast address")),
            ("239.255.255.250", Some("multicast address")),
            ("ff02::1", Some("multicast address")),
            ("255.255.255.255", Some("broadcast address")),
            ("240.0.0.1", Some("reserved address")),
            // IPv4 inside IPv6.
            ("::ffff:127.0.0.1", Some("loopback address")),
            ("::ffff:10.0.0.1", Some("private address")),
            ("::ffff:169.254.169.254", Some("cloud metadata address")),
            ("::ffff:100.64.0.1", Some("shared (CGNAT) address")),
            ("::ffff:0.0.0.0", Some("unspecified address")),
            ("::ffff:192.168.0.1", Some("private address")),
            ("::ffff:224.0.0.1", Some("multicast address")),
            ("::127.0.0.1", Some("loopback address")),
            ("64:ff9b::10.0.0.1", Some("private address")),
            ("2002:7f00:1::", Some("loopback address")),
            ("2002:a9fe:a9fe::1", Some("cloud metadata address")),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::8.8.8.8", None),
            // Public.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
            ("2606:4700:4700::1111", None),
            ("2001:4860:4860::8888", None),
            ("fd00:ec2::253", Some("private (unique local) address")),
        ];
        for (addr, kind) in table {
            assert_eq!(classify(ip(addr)), *kind, "{addr}");
        }
    }

    #[test]
    fn refusals_name_the_address_kind_and_setting() {
        let policy = NetworkPolicy::default();
        let table = [
            (
                "localhost",
                "127.0.0.1",
                "refusing to connect to 127.0.0.1 (resolved from 'localhost'): loopback address; \
                 set allow_private_networks: true or add \"127.0.0.1/32\" (or \"localhost\") to \
                 allowed_hosts",
            ),
            (
                "10.0.0.5",
                "10.0.0.5",
                "refusing to connect to 10.0.0.5: private address; set allow_private_networks: \
                 true or add \"10.0.0.5/32\" to allowed_hosts",
            ),
            (
                "[::1]",
                "::1",
                "refusing to connect to ::1: loopback address; set allow_private_networks: true \
                 or add \"::1/128\" to allowed_hosts",
            ),
            (
                "Metadata.Internal.",
                "169.254.169.254",
                "refusing to connect to 169.254.169.254 (resolved from 'Metadata.Internal.'): \
                 cloud metadata address; set allow_private_networks: true or add \
                 \"169.254.169.254/32\" (or \"Metadata.Internal\") to allowed_hosts",
            ),
            (
                "evil.example",
                "::ffff:127.0.0.1",
                "refusing to connect to ::ffff:127.0.0.1 (resolved from 'evil.example'): \
                 loopback address; set allow_private_networks: true or add \
                 \"::ffff:127.0.0.1/128\" (or \"evil.example\") to allowed_hosts",
            ),
        ];
        for (host, addr, message) in table {
            assert_eq!(policy.check(host, ip(addr)), Err(message.to_string()), "{host} {addr}");
        }
        assert_eq!(policy.check("example.com", ip("93.184.216.34")), Ok(()));
        assert_eq!(policy.check("2606:4700::1", ip("2606:4700::1")), Ok(()));
    }

    #[test]
    fn allow_private_networks_allows_everything() {
        let policy = NetworkPolicy { allow_private_networks: true, allowed_hosts: vec![] };
        for addr in ["127.0.0.1", "::1", "169.254.169.254", "10.0.0.1", "fd00:ec2::254"] {
            assert_eq!(policy.check("h", ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn allowed_hosts_match_by_name_or_range() {
        let rules = ["hooks.internal", "10.0.0.0/8", "127.0.0.1", "::1"];
        let policy = NetworkPolicy {
            allow_private_networks: false,
            allowed_hosts: rules.iter().map(|r| HostRule::parse(r).unwrap()).collect(),
        };
        let table = [
            ("hooks.internal", "192.168.1.5", true),
            ("HOOKS.Internal", "192.168.1.5", true),
            ("hooks.internal.", "192.168.1.5", true),
            ("other.internal", "192.168.1.5", false),
            ("sub.hooks.internal", "192.168.1.5", false),
            ("anything", "10.200.3.4", true),
            ("anything", "11.0.0.1", true), // public anyway
            ("localhost", "127.0.0.1", true),
            ("localhost", "127.0.0.2", false),
            ("localhost", "::ffff:127.0.0.1", true),
            ("[::1]", "::1", true),
            ("x", "169.254.169.254", false),
        ];
        for (host, addr, allowed) in table {
            assert_eq!(policy.check(host, ip(addr)).is_ok(), allowed, "{host} {addr}");
        }
    }

    #[test]
    fn host_rules_parse() {
        let table = [
            ("example.com", HostRule::Host("example.com".into())),
            (" Hooks.Internal. ", HostRule::Host("hooks.internal".into())),
            ("my_host-1", HostRule::Host("my_host-1".into())),
            ("10.0.0.0/8", HostRule::Net("10.0.0.0/8".parse().unwrap())),
            ("10.1.2.3/8", HostRule::Net("10.0.0.0/8".parse().unwrap())),
            ("127.0.0.1", HostRule::Net("127.0.0.1/32".parse().unwrap())),
            ("::1", HostRule::Net("::1/128".parse().unwrap())),
            ("[fd00::1]", HostRule::Net("fd00::1/128".parse().unwrap())),
            ("fd00::/8", HostRule::Net("fd00::/8".parse().unwrap())),
        ];
        for (input, expected) in table {
            assert_eq!(HostRule::parse(input), Ok(expected), "{input}");
        }
        assert_eq!(HostRule::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(HostRule::parse("Example.COM").unwrap().to_string(), "example.com");
    }

    #[test]
    fn garbage_host_rules_are_refused_with_the_reason() {
        let table = [
            ("", "empty"),
            ("10.0.0.0/33", "not a valid CIDR"),
            ("10.0.0/8", "not a valid CIDR"),
            ("example.com/8", "not a valid CIDR"),
            ("https://example.com", "a URL; give only its host"),
            ("*.example.com", "wildcards are not supported; list each host"),
            ("example.com:8080", "ports are not part of a host rule"),
            ("exa mple.com", "not a valid host name"),
            ("-bad.com", "not a valid host name"),
            ("a..b", "not a valid host name"),
            ("999.1.1.1", "not a valid IP address"),
        ];
        for (input, why) in table {
            assert_eq!(
                HostRule::parse(input),
                Err(format!(
                    "must be a host name, an IP address or a CIDR such as \"hooks.internal\", \
                     \"10.0.0.5\" or \"10.0.0.0/8\", got \"{input}\" ({why})"
                )),
                "{input}"
            );
        }
    }
}
