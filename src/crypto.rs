//! Small cryptographic helpers on aws-lc-rs: SHA-256, HMAC, constant-time compare, Ed25519.

use std::fmt;

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair};

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha256(data))
}

/// Compare two byte strings in time independent of where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    let tag = aws_lc_rs::hmac::sign(&k, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Verify an HMAC-SHA256 tag in constant time.
pub fn hmac_sha256_verify(key: &[u8], data: &[u8], tag: &[u8]) -> bool {
    let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
    aws_lc_rs::hmac::verify(&k, data, tag).is_ok()
}

/// Errors loading or using signing keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM-encoded PKCS#8 Ed25519 private key")]
    BadPrivateKey,
    #[error("not a PEM-encoded Ed25519 public key")]
    BadPublicKey,
}

const PRIV_LABEL: &str = "PRIVATE KEY";
const PUB_LABEL: &str = "JITGATE AUDIT PUBLIC KEY";

/// An Ed25519 signing key (the audit key). Debug never prints key material.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
}

impl Clone for SigningKey {
    fn clone(&self) -> Self {
        Self {
            pair: Ed25519KeyPair::from_pkcs8_maybe_unchecked(&self.pkcs8)
                .expect("a key that parsed once parses again"),
            pkcs8: self.pkcs8.clone(),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public={})", self.public().to_hex())
    }
}

impl SigningKey {
    /// Generate a new key; returns it with its PKCS#8 PEM encoding for storage.
    pub fn generate() -> (Self, String) {
        let doc = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new())
            .expect("the system random generator works");
        let pem = pem_encode(PRIV_LABEL, doc.as_ref());
        let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("a fresh key parses");
        (
            Self {
                pair,
                pkcs8: doc.as_ref().to_vec(),
            },
            pem,
        )
    }

    /// Load a key from its PKCS#8 PEM encoding.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = pem_decode(PRIV_LABEL, pem).ok_or(KeyError::BadPrivateKey)?;
        let pair = Ed25519KeyPair::from_pkcs8(&der)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der))
            .map_err(|_| KeyError::BadPrivateKey)?;
        Ok(Self { pair, pkcs8: der })
    }

    /// Sign `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        let sig = self.pair.sign(msg);
        let mut out = [0u8; 64];
        out.copy_from_slice(sig.as_ref());
        out
    }

    /// The matching public key.
    pub fn public(&self) -> VerifyingKey {
        let mut raw = [0u8; 32];
        raw.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey(raw)
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VerifyingKey([u8; 32]);

impl VerifyingKey {
    /// Check `sig` over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.0)
            .verify(msg, sig)
            .is_ok()
    }

    /// Hex of the raw 32-byte key.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// PEM text for distribution to reviewers.
    pub fn to_pem(&self) -> String {
        pem_encode(PUB_LABEL, &self.0)
    }

    /// Parse the PEM written by [`VerifyingKey::to_pem`] or a bare hex key.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let raw = pem_decode(PUB_LABEL, text)
            .or_else(|| hex::decode(text.trim()).ok())
            .ok_or(KeyError::BadPublicKey)?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| KeyError::BadPublicKey)?;
        Ok(Self(raw))
    }
}

/// Encode DER bytes as PEM with `label`.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ascii"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Decode the first PEM block labelled `label`.
pub fn pem_decode(label: &str, text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_round_trips_through_pem() {
        let (k, pem) = SigningKey::generate();
        let k2 = SigningKey::from_pem(&pem).unwrap();
        let sig = k2.sign(b"hello");
        assert!(k.public().verify(b"hello", &sig));
        assert!(!k.public().verify(b"hellO", &sig));
        let pubk = VerifyingKey::from_pem(&k.public().to_pem()).unwrap();
        assert_eq!(pubk, k.public());
        assert!(!format!("{k:?}").contains("PRIVATE"));
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let tag = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag
        ));
    }
}
