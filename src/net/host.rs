//! `host:port` as configuration writes it (`box.example:22`, `[::1]:22`), parsed once.

use std::fmt;

/// A host and a port; the host without IPv6 brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// `host:port` with a non-empty host and a port from 1 to 65535; `None` otherwise.
    pub fn parse(s: &str) -> Option<Self> {
        let (host, port) = s.rsplit_once(':')?;
        let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
        let host = unbracket(host);
        (!host.is_empty()).then(|| Self {
            host: host.to_string(),
            port,
        })
    }

    /// The host, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether `name` (as a client writes it, brackets or not) is this host.
    pub fn is_host(&self, name: &str) -> bool {
        unbracket(name) == self.host
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// `name` without the brackets of an IPv6 literal.
pub fn unbracket(name: &str) -> &str {
    name.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bracketed_addresses_parse_and_print_back() {
        let a = HostPort::parse("box.example:22").unwrap();
        assert_eq!((a.host(), a.port()), ("box.example", 22));
        assert_eq!(a.to_string(), "box.example:22");
        let b = HostPort::parse("[::1]:2222").unwrap();
        assert_eq!((b.host(), b.port()), ("::1", 2222));
        assert_eq!(b.to_string(), "[::1]:2222");
        assert!(b.is_host("[::1]") && b.is_host("::1") && !b.is_host("127.0.0.1"));
    }

    #[test]
    fn a_missing_host_or_a_bad_port_is_refused() {
        for bad in [
            "box",
            ":22",
            "box:",
            "box:0",
            "box:65536",
            "box:ssh",
            "[]:22",
        ] {
            assert_eq!(HostPort::parse(bad), None, "{bad}");
        }
    }
}
