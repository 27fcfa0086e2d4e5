//! What kind of network address a plugin's outbound grant points at. A grant
//! is compared and judged by its canonical host, so the many spellings of
//! one address (`[::ffff:169.254.169.254]`, `0xa9fea9fe`, `2852039166`,
//! `metadata.google.internal.`) cannot slip past a rule written for another.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The canonical form of a URL host: lower case, no trailing dot, IPv4 in
/// dotted decimal (the URL parser already reads decimal, octal and hex
/// forms), an IPv4-mapped IPv6 address as its IPv4 address, other IPv6
/// addresses in brackets.
pub fn canonical_host(host: &str) -> String {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{v6}]"),
        },
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => host.trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// Where an address leads, for the outbound rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The public internet.
    Public,
    /// This machine or the operator's network (loopback, private ranges,
    /// carrier-grade NAT, unique-local IPv6, `localhost`): only when the
    /// operator names the exact host.
    Internal(&'static str),
    /// Never: link-local (cloud metadata services live at 169.254.169.254),
    /// metadata names, unspecified and broadcast addresses.
    Forbidden(&'static str),
}

/// The reach of one IP address.
pub fn reach_of_ip(ip: IpAddr) -> Reach {
    match ip {
        IpAddr::V4(v4) => reach_of_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => reach_of_v4(v4),
            None => reach_of_v6(v6),
        },
    }
}

fn reach_of_v4(v4: Ipv4Addr) -> Reach {
    let o = v4.octets();
    if v4.is_link_local() {
        Reach::Forbidden("a link-local address (cloud metadata lives there)")
    } else if v4.is_unspecified() || v4.is_broadcast() || o[0] == 0 {
        Reach::Forbidden("an unspecified or broadcast address")
    } else if v4.is_loopback() {
        Reach::Internal("a loopback address")
    } else if v4.is_private() {
        Reach::Internal("a private address")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Reach::Internal("a carrier-grade NAT address")
    } else {
        Reach::Public
    }
}

fn reach_of_v6(v6: Ipv6Addr) -> Reach {
    let first = v6.segments()[0];
    if (first & 0xffc0) == 0xfe80 {
        Reach::Forbidden("a link-local address (cloud metadata lives there)")
    } else if v6.is_unspecified() {
        Reach::Forbidden("an unspecified or broadcast address")
    } else if v6.is_loopback() {
        Reach::Internal("a loopback address")
    } else if (first & 0xfe00) == 0xfc00 {
        Reach::Internal("a unique-local address")
    } else {
        Reach::Public
    }
}

/// The reach of a canonical host ([`canonical_host`]) as written: an
/// address literal by its range, a name by what it says it is (a public
/// name can still resolve to an internal address: that is checked when
/// connecting).
pub fn reach_of_host(canonical: &str) -> Reach {
    let bare = canonical.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return reach_of_ip(ip);
    }
    if canonical == "metadata.google.internal" || canonical == "metadata" {
        return Reach::Forbidden("a cloud metadata name");
    }
    if canonical == "localhost" || canonical.ends_with(".localhost") {
        return Reach::Internal("a loopback name");
    }
    Reach::Public
}

/// Whether `canonical` is an address literal (not a name to resolve).
pub fn is_ip_literal(canonical: &str) -> bool {
    canonical
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_address_are_one_host() {
        assert_eq!(
            canonical_host("[::ffff:169.254.169.254]"),
            "169.254.169.254"
        );
        assert_eq!(canonical_host("[::ffff:a9fe:a9fe]"), "169.254.169.254");
        assert_eq!(
            canonical_host("Metadata.Google.Internal."),
            "metadata.google.internal"
        );
        assert_eq!(canonical_host("[0:0:0:0:0:0:0:1]"), "[::1]");
        assert_eq!(canonical_host("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn ranges_are_classified() {
        use Reach::*;
        assert!(matches!(reach_of_host("169.254.169.254"), Forbidden(_)));
        assert!(matches!(
            reach_of_host("metadata.google.internal"),
            Forbidden(_)
        ));
        assert!(matches!(reach_of_host("[fe80::1]"), Forbidden(_)));
        assert!(matches!(reach_of_host("0.0.0.0"), Forbidden(_)));
        assert!(matches!(reach_of_host("127.0.0.1"), Internal(_)));
        assert!(matches!(reach_of_host("[::1]"), Internal(_)));
        assert!(matches!(reach_of_host("10.1.2.3"), Internal(_)));
        assert!(matches!(reach_of_host("172.16.0.1"), Internal(_)));
        assert!(matches!(reach_of_host("192.168.1.1"), Internal(_)));
        assert!(matches!(reach_of_host("100.64.0.1"), Internal(_)));
        assert!(matches!(reach_of_host("[fd00::1]"), Internal(_)));
        assert!(matches!(reach_of_host("localhost"), Internal(_)));
        assert_eq!(reach_of_host("api.openai.com"), Public);
        assert_eq!(reach_of_host("8.8.8.8"), Public);
        assert!(matches!(
            reach_of_ip("::ffff:10.0.0.1".parse().unwrap()),
            Internal(_)
        ));
    }
}
