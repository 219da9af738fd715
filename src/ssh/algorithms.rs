//! The SSH algorithms jitgate offers, in one place: the technician's leg (the gateway as server),
//! the target's leg (the gateway as client) and the demo's target use these lists.

use std::borrow::Cow;

use russh::{Preferred, cipher, compression, kex, mac};

/// Key exchanges on both legs (technician to gateway, gateway to target), most preferred first:
/// the post-quantum hybrids (ML-KEM for OpenSSH 9.9 and later; Streamlined NTRU Prime for 8.9 to
/// 9.8, such as Debian 12's 9.2, which would otherwise fall back to curve25519), then russh's
/// default classical ones, then the pseudo-algorithms of russh's default list that announce
/// extension negotiation and strict key exchange (the Terrapin fix).
pub const KEX_ORDER: &[kex::Name] = &[
    kex::MLKEM768X25519_SHA256,
    kex::SNTRUP761X25519_SHA512_OPENSSH,
    kex::CURVE25519,
    kex::CURVE25519_PRE_RFC_8731,
    kex::DH_GEX_SHA256,
    kex::DH_G18_SHA512,
    kex::DH_G17_SHA512,
    kex::DH_G16_SHA512,
    kex::DH_G15_SHA512,
    kex::DH_G14_SHA256,
    kex::EXTENSION_SUPPORT_AS_CLIENT,
    kex::EXTENSION_SUPPORT_AS_SERVER,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
    kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
];

/// Ciphers where jitgate is the client or a target of its own (AES-GCM first: far cheaper than
/// ChaCha20 on CPUs with AES instructions; ChaCha20 for peers without AES-GCM).
pub const CIPHERS: &[cipher::Name] = &[
    cipher::AES_128_GCM,
    cipher::AES_256_GCM,
    cipher::CHACHA20_POLY1305,
];

/// What the gateway offers technicians. OpenSSH clients take the first cipher of their own list
/// that the server offers, so only AES-GCM is offered. No compression: plain `zlib` would start
/// before authentication (OpenSSH stopped offering it in 7.4), and a gateway has no use for it.
/// No 2048-bit DH group, and MACs only in encrypt-then-MAC mode (the AEAD ciphers use none).
pub fn gateway_server() -> Preferred {
    Preferred {
        kex: Cow::Owned(
            KEX_ORDER
                .iter()
                .copied()
                .filter(|k| *k != kex::DH_G14_SHA256)
                .collect(),
        ),
        cipher: Cow::Borrowed(&[cipher::AES_128_GCM, cipher::AES_256_GCM]),
        mac: Cow::Borrowed(&[mac::HMAC_SHA512_ETM, mac::HMAC_SHA256_ETM]),
        compression: Cow::Borrowed(&[compression::NONE]),
        ..Default::default()
    }
}

/// What the gateway offers targets.
pub fn gateway_client() -> Preferred {
    Preferred {
        kex: Cow::Borrowed(KEX_ORDER),
        cipher: Cow::Borrowed(CIPHERS),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::KEX_ORDER;

    #[test]
    fn kex_order_puts_post_quantum_first_and_keeps_all_of_russhs_defaults() {
        let names: Vec<&str> = KEX_ORDER.iter().map(|k| k.as_ref()).collect();
        assert_eq!(
            names[..3],
            [
                "mlkem768x25519-sha256",
                "sntrup761x25519-sha512@openssh.com",
                "curve25519-sha256"
            ]
        );
        // A russh upgrade that adds a default (or a strict-kex marker) shows up here.
        for k in russh::Preferred::DEFAULT.kex.iter() {
            assert!(KEX_ORDER.contains(k), "{} is missing", k.as_ref());
        }
    }
}
