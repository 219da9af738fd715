//! Address blocks as configuration writes them (`10.0.0.0/8`, `2001:db8::/32`, or one address),
//! parsed and checked once, when the configuration is loaded.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// One IPv4 or IPv6 address block: a network address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

/// Why a text is not an address block; the message names the text and how to write it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{text:?} is not an address block: {why}; write e.g. 10.0.0.0/8, 2001:db8::/32 or 192.0.2.7"
)]
pub struct CidrError {
    text: String,
    why: String,
}

impl Cidr {
    /// Whether `ip` is in the block. An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, as a
    /// dual-stack listener reports IPv4 peers) counts as the IPv4 address it maps.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }

    /// Whether `ip` is in any of `blocks`.
    pub fn any_contains(blocks: &[Cidr], ip: IpAddr) -> bool {
        blocks.iter().any(|b| b.contains(ip))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDRESS/BITS`, or one `ADDRESS` (a block of one). The address must be the network's
    /// first: `10.0.0.1/8` is refused rather than guessed to mean `10.0.0.0/8`.
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let err = |why: &str| CidrError {
            text: s.chars().take(64).collect(),
            why: why.to_string(),
        };
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| err("the address is not an IPv4 or IPv6 address"))?;
        let max: u8 = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => {
                if b.is_empty() || b.len() > 3 || !b.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(err("the prefix length after / must be a number"));
                }
                match b.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => {
                        return Err(err(if net.is_ipv4() {
                            "an IPv4 prefix length is at most 32"
                        } else {
                            "an IPv6 prefix length is at most 128"
                        }));
                    }
                }
            }
        };
        if net.to_canonical() != net {
            return Err(err("an IPv4-mapped IPv6 block; write the IPv4 block"));
        }
        let block = Self { net, bits };
        if !block.contains(net) {
            return Err(err(
                "the address has bits set past the prefix length; give the network's first address",
            ));
        }
        Ok(block)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn block(s: &str) -> Cidr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn blocks_hold_their_addresses_and_no_others() {
        let b = block("10.1.0.0/16");
        assert!(b.contains(ip("10.1.0.0")));
        assert!(b.contains(ip("10.1.255.255")));
        assert!(!b.contains(ip("10.2.0.1")));
        assert!(
            !b.contains(ip("::1")),
            "an IPv4 block holds no IPv6 address"
        );
        let one = block("192.0.2.7");
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.8")));
        let all = block("0.0.0.0/0");
        assert!(all.contains(ip("203.0.113.9")));
        let v6 = block("2001:db8::/32");
        assert!(v6.contains(ip("2001:db8:ffff::1")));
        assert!(!v6.contains(ip("2001:db9::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        assert!(block("::/0").contains(ip("::1")));
        assert!(block("::1").contains(ip("::1")));
    }

    #[test]
    fn ipv4_mapped_peers_count_as_their_ipv4_address() {
        assert!(block("127.0.0.0/8").contains(ip("::ffff:127.0.0.9")));
        assert!(!block("127.0.0.0/8").contains(ip("::ffff:10.0.0.9")));
    }

    #[test]
    fn bad_blocks_are_refused_naming_the_text() {
        for (text, why) in [
            ("10.0.0.0/33", "at most 32"),
            ("2001:db8::/129", "at most 128"),
            ("10.0.0.0/", "must be a number"),
            ("10.0.0.0/+8", "must be a number"),
            ("10.0.0.0/0008", "must be a number"),
            ("10.0.0.0/8/8", "must be a number"),
            ("10.0.0/8", "not an IPv4 or IPv6 address"),
            ("balancer.example", "not an IPv4 or IPv6 address"),
            ("", "not an IPv4 or IPv6 address"),
            (" 10.0.0.0/8", "not an IPv4 or IPv6 address"),
            ("10.0.0.1/8", "bits set past the prefix"),
            ("2001:db8::1/32", "bits set past the prefix"),
            ("::ffff:10.0.0.0/104", "IPv4-mapped"),
        ] {
            let e = text.parse::<Cidr>().unwrap_err().to_string();
            assert!(e.contains(&format!("{text:?}")), "{text}: {e}");
            assert!(e.contains(why), "{text}: {e}");
        }
    }
}
