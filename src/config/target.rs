//! A target as its gateway reaches it ([`TargetSpec`]): what `[[targets]]` says, checked once
//! when a token is admitted, so the gateways match on a protocol instead of unwrapping options.

use std::path::PathBuf;

use super::{TargetConfig, TargetKind};

/// A target as its gateway reaches it, by protocol: what `[[targets]]` says, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    Ssh {
        address: crate::net::HostPort,
        trust: HostTrust,
    },
    Https {
        /// Base URL (`https://host[:port][/path]`).
        url: String,
        /// PEM file with the CA that signs the target's server certificate.
        server_ca: PathBuf,
    },
}

/// How an SSH target proves itself (never trust on first use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTrust {
    /// Its host key (OpenSSH public key line).
    Pinned(String),
    /// The CA (OpenSSH public key line) that signs its host certificate.
    Ca(String),
}

impl TargetConfig {
    /// The target as its gateway reaches it; `Err` says what is missing or wrong (`jitgate
    /// check` reports the same with its line).
    pub fn spec(&self) -> Result<TargetSpec, String> {
        let name = &self.name;
        match self.kind {
            TargetKind::Ssh => {
                let address = self
                    .address
                    .as_deref()
                    .ok_or_else(|| format!("ssh target {name} has no address"))?;
                let address = crate::net::HostPort::parse(address).ok_or_else(|| {
                    format!("target {name}: address {address:?} is not host:port")
                })?;
                let trust = match (&self.host_key, &self.host_ca) {
                    (Some(k), None) => HostTrust::Pinned(k.clone()),
                    (None, Some(ca)) => HostTrust::Ca(ca.clone()),
                    _ => {
                        return Err(format!(
                            "ssh target {name} needs one of host_key or host_ca"
                        ));
                    }
                };
                Ok(TargetSpec::Ssh { address, trust })
            }
            TargetKind::Https => match (&self.url, &self.server_ca) {
                (Some(url), Some(ca)) => Ok(TargetSpec::Https {
                    url: url.clone(),
                    server_ca: ca.clone(),
                }),
                _ => Err(format!("https target {name} needs url and server_ca")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TargetName;

    fn target(kind: TargetKind) -> TargetConfig {
        TargetConfig {
            name: "box".parse::<TargetName>().unwrap(),
            kind,
            address: None,
            host_key: None,
            host_ca: None,
            url: None,
            server_ca: None,
            tags: Vec::new(),
        }
    }

    #[test]
    fn an_ssh_target_has_an_address_and_exactly_one_way_to_trust_it() {
        let mut t = target(TargetKind::Ssh);
        t.address = Some("[::1]:2222".into());
        t.host_ca = Some("ssh-ed25519 AAAA ca".into());
        match t.spec().unwrap() {
            TargetSpec::Ssh { address, trust } => {
                assert_eq!((address.host(), address.port()), ("::1", 2222));
                assert_eq!(trust, HostTrust::Ca("ssh-ed25519 AAAA ca".into()));
            }
            other => panic!("{other:?}"),
        }
        t.host_key = Some("ssh-ed25519 AAAA key".into());
        assert!(t.spec().unwrap_err().contains("one of host_key or host_ca"));
        t.host_ca = None;
        t.address = Some("box".into());
        assert!(t.spec().unwrap_err().contains("is not host:port"));
        t.address = None;
        assert!(t.spec().unwrap_err().contains("has no address"));
    }

    #[test]
    fn an_https_target_has_a_url_and_the_ca_of_its_certificate() {
        let mut t = target(TargetKind::Https);
        t.url = Some("https://console.example:8443/admin".into());
        assert!(t.spec().unwrap_err().contains("needs url and server_ca"));
        t.server_ca = Some("/etc/jitgate/console-ca.pem".into());
        assert_eq!(
            t.spec().unwrap(),
            TargetSpec::Https {
                url: "https://console.example:8443/admin".into(),
                server_ca: "/etc/jitgate/console-ca.pem".into(),
            }
        );
    }
}
