//! `sntrup761x25519-sha512@openssh.com` and its IETF name `sntrup761x25519-sha512`: Streamlined
//! NTRU Prime 761 combined with X25519, as in OpenSSH's `kexsntrup761x25519.c` and
//! draft-ietf-sshm-ntruprime-ssh (OpenSSH's default key exchange from 9.0 to 9.8).
//!
//! - The client sends `C_INIT` = its sntrup761 public key (1158 bytes) || its X25519 public key
//!   (32 bytes), in the message numbered like `SSH_MSG_KEX_ECDH_INIT`.
//! - The server answers `S_REPLY` = an sntrup761 ciphertext to that key (1039 bytes) || its own
//!   X25519 public key (32 bytes).
//! - The shared secret K is SHA-512(sntrup761 shared secret || X25519 shared secret), encoded as
//!   a string; the exchange hash and the key derivation use SHA-512.

use curve25519_dalek::montgomery::MontgomeryPoint;
use log::debug;
use sha2::{Digest, Sha512};
use ssh_encoding::{Decode, Encode, Writer};

use super::{KexAlgorithm, KexAlgorithmImplementor, KexType, SharedSecret, compute_keys};
use crate::mac;
use crate::session::Exchange;
use crate::{CryptoVec, Error, cipher, msg};

const X25519_PUBLIC_KEY_SIZE: usize = 32;
/// `C_INIT`: the client's sntrup761 public key, then its X25519 public key.
const CLIENT_INIT_SIZE: usize = sntrup761::PUBLIC_KEY_SIZE + X25519_PUBLIC_KEY_SIZE;
/// `S_REPLY`: the sntrup761 ciphertext, then the server's X25519 public key.
const SERVER_REPLY_SIZE: usize = sntrup761::CIPHERTEXT_SIZE + X25519_PUBLIC_KEY_SIZE;

pub struct Sntrup761X25519KexType {}

impl KexType for Sntrup761X25519KexType {
    fn make(&self) -> KexAlgorithm {
        Sntrup761X25519Kex::default().into()
    }
}

#[doc(hidden)]
#[derive(Default)]
pub struct Sntrup761X25519Kex {
    /// The client's sntrup761 secret key, between `client_dh` and `compute_shared_secret`.
    sntrup_secret: Option<Box<sntrup761::DecapsulationKey>>,
    /// The client's X25519 secret, likewise.
    x25519_secret: Option<[u8; 32]>,
    /// SHA-512(sntrup761 shared secret || X25519 shared secret): K before its string encoding.
    shared_secret: Option<[u8; 64]>,
}

impl std::fmt::Debug for Sntrup761X25519Kex {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "Sntrup761X25519Kex {{ sntrup_secret: [hidden], x25519_secret: [hidden], shared_secret: [hidden] }}",
        )
    }
}

/// K before encoding; refuses an all-zero X25519 result (a low-order point from the peer), as
/// OpenSSH does.
fn combine(kem: &sntrup761::SharedSecret, ecdh: &MontgomeryPoint) -> Result<[u8; 64], Error> {
    if ecdh.0 == [0u8; 32] {
        debug!("peer sent a low-order curve25519 public key");
        return Err(Error::Kex);
    }
    let mut hasher = Sha512::new();
    hasher.update(kem.as_ref());
    hasher.update(ecdh.0);
    let mut k = [0u8; 64];
    k.copy_from_slice(&hasher.finalize());
    Ok(k)
}

fn x25519_public(bytes: &[u8]) -> MontgomeryPoint {
    let mut point = MontgomeryPoint([0; 32]);
    point.0.copy_from_slice(bytes);
    point
}

impl KexAlgorithmImplementor for Sntrup761X25519Kex {
    fn skip_exchange(&self) -> bool {
        false
    }

    fn server_dh(&mut self, exchange: &mut Exchange, payload: &[u8]) -> Result<(), Error> {
        debug!("server_dh (hybrid sntrup761)");

        let mut rest = match payload.split_first() {
            Some((&msg::KEX_HYBRID_INIT, rest)) => rest,
            _ => return Err(Error::Inconsistent),
        };
        let c_init = Vec::<u8>::decode(&mut rest).map_err(|_| Error::Inconsistent)?;
        if c_init.len() != CLIENT_INIT_SIZE {
            return Err(Error::Kex);
        }
        let (c_pk2, c_pk1) = c_init.split_at(sntrup761::PUBLIC_KEY_SIZE);

        let c_pk2 = sntrup761::EncapsulationKey::try_from(c_pk2).map_err(|_| Error::Kex)?;
        let (s_ct2, k_pq) = c_pk2.encapsulate(rand::rng());

        let s_secret = rand::random::<[u8; 32]>();
        let s_pk1 = MontgomeryPoint::mul_base_clamped(s_secret);
        let k_cl = x25519_public(c_pk1).mul_clamped(s_secret);

        self.shared_secret = Some(combine(&k_pq, &k_cl)?);

        exchange.server_ephemeral.clear();
        exchange.server_ephemeral.extend_from_slice(s_ct2.as_ref());
        exchange.server_ephemeral.extend_from_slice(&s_pk1.0);
        Ok(())
    }

    fn client_dh(
        &mut self,
        client_ephemeral: &mut Vec<u8>,
        writer: &mut impl Writer,
    ) -> Result<(), Error> {
        let (sntrup_pk, sntrup_sk) = sntrup761::generate_key(rand::rng());

        let x25519_secret = rand::random::<[u8; 32]>();
        let x25519_pk = MontgomeryPoint::mul_base_clamped(x25519_secret);

        client_ephemeral.clear();
        client_ephemeral.extend_from_slice(sntrup_pk.as_ref());
        client_ephemeral.extend_from_slice(&x25519_pk.0);

        msg::KEX_HYBRID_INIT.encode(writer)?;
        client_ephemeral.as_slice().encode(writer)?;

        self.sntrup_secret = Some(Box::new(sntrup_sk));
        self.x25519_secret = Some(x25519_secret);
        Ok(())
    }

    fn compute_shared_secret(&mut self, remote_pubkey_: &[u8]) -> Result<(), Error> {
        if remote_pubkey_.len() != SERVER_REPLY_SIZE {
            return Err(Error::Kex);
        }
        let (s_ct2, s_pk1) = remote_pubkey_.split_at(sntrup761::CIPHERTEXT_SIZE);

        let s_ct2 = sntrup761::Ciphertext::try_from(s_ct2).map_err(|_| Error::Kex)?;
        let sntrup_secret = self.sntrup_secret.take().ok_or(Error::KexInit)?;
        let k_pq = sntrup_secret.decapsulate(&s_ct2);

        let x25519_secret = self.x25519_secret.take().ok_or(Error::KexInit)?;
        let k_cl = x25519_public(s_pk1).mul_clamped(x25519_secret);

        self.shared_secret = Some(combine(&k_pq, &k_cl)?);
        Ok(())
    }

    fn shared_secret_bytes(&self) -> Option<&[u8]> {
        // K itself (before its string encoding), as OpenSSH defines it for this exchange.
        self.shared_secret.as_ref().map(|k| k.as_slice())
    }

    fn compute_exchange_hash(
        &self,
        key: &[u8],
        exchange: &Exchange,
        buffer: &mut CryptoVec,
    ) -> Result<Vec<u8>, Error> {
        let k = self.shared_secret.as_ref().ok_or(Error::KexInit)?;

        buffer.clear();
        exchange.client_id.encode(buffer)?;
        exchange.server_id.encode(buffer)?;
        exchange.client_kex_init.encode(buffer)?;
        exchange.server_kex_init.encode(buffer)?;

        buffer.extend(key);

        exchange.client_ephemeral.encode(buffer)?;
        exchange.server_ephemeral.encode(buffer)?;
        k.as_slice().encode(buffer)?;

        let mut hasher = Sha512::new();
        hasher.update(&buffer);
        Ok(hasher.finalize().to_vec())
    }

    fn compute_keys(
        &self,
        session_id: &[u8],
        exchange_hash: &[u8],
        cipher: cipher::Name,
        remote_to_local_mac: mac::Name,
        local_to_remote_mac: mac::Name,
        is_server: bool,
    ) -> Result<super::cipher::CipherPair, Error> {
        let k = self.shared_secret.as_ref().ok_or(Error::KexInit)?;
        let shared_secret = SharedSecret::from_string(k)?;
        compute_keys::<Sha512>(
            Some(&shared_secret),
            session_id,
            exchange_hash,
            cipher,
            remote_to_local_mac,
            local_to_remote_mac,
            is_server,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange() -> (Sntrup761X25519Kex, Sntrup761X25519Kex, Exchange) {
        let mut client = Sntrup761X25519Kex::default();
        let mut server = Sntrup761X25519Kex::default();
        let mut exchange = Exchange {
            client_id: b"SSH-2.0-Test_Client".to_vec(),
            server_id: b"SSH-2.0-Test_Server".to_vec(),
            client_kex_init: bytes::Bytes::from_static(b"client_kex_init"),
            server_kex_init: bytes::Bytes::from_static(b"server_kex_init"),
            ..Exchange::default()
        };
        let mut init = Vec::new();
        client
            .client_dh(&mut exchange.client_ephemeral, &mut init)
            .unwrap();
        assert_eq!(init[0], msg::KEX_HYBRID_INIT);
        assert_eq!(exchange.client_ephemeral.len(), CLIENT_INIT_SIZE);
        server.server_dh(&mut exchange, &init).unwrap();
        assert_eq!(exchange.server_ephemeral.len(), SERVER_REPLY_SIZE);
        client
            .compute_shared_secret(&exchange.server_ephemeral)
            .unwrap();
        (client, server, exchange)
    }

    #[test]
    fn client_and_server_agree_on_k_and_the_sha512_exchange_hash() {
        let (client, server, exchange) = exchange();
        assert_eq!(client.shared_secret, server.shared_secret);
        assert_eq!(client.shared_secret_bytes().unwrap().len(), 64);

        let mut buffer = CryptoVec::new();
        let client_hash = client
            .compute_exchange_hash(b"host key", &exchange, &mut buffer)
            .unwrap();
        let server_hash = server
            .compute_exchange_hash(b"host key", &exchange, &mut buffer)
            .unwrap();
        assert_eq!(client_hash, server_hash);
        assert_eq!(client_hash.len(), 64, "SHA-512 exchange hash");
    }

    #[test]
    fn wrong_lengths_and_message_numbers_are_refused() {
        let mut server = Sntrup761X25519Kex::default();
        let mut exchange = Exchange::default();
        let mut short = Vec::new();
        msg::KEX_HYBRID_INIT.encode(&mut short).unwrap();
        vec![0u8; 100].encode(&mut short).unwrap();
        assert!(server.server_dh(&mut exchange, &short).is_err());
        assert!(server.server_dh(&mut exchange, &[]).is_err());
        assert!(
            server
                .server_dh(&mut exchange, &[msg::KEX_HYBRID_INIT])
                .is_err()
        );
        let mut wrong_type = vec![msg::KEXINIT];
        vec![0u8; CLIENT_INIT_SIZE].encode(&mut wrong_type).unwrap();
        assert!(server.server_dh(&mut exchange, &wrong_type).is_err());

        let mut client = Sntrup761X25519Kex::default();
        let mut init = Vec::new();
        client.client_dh(&mut Vec::new(), &mut init).unwrap();
        assert!(client.compute_shared_secret(&[0u8; 100]).is_err());
    }

    #[test]
    fn low_order_x25519_key_from_the_server_is_refused() {
        let mut client = Sntrup761X25519Kex::default();
        let mut server = Sntrup761X25519Kex::default();
        let mut exchange = Exchange::default();
        let mut init = Vec::new();
        client
            .client_dh(&mut exchange.client_ephemeral, &mut init)
            .unwrap();
        server.server_dh(&mut exchange, &init).unwrap();
        // Keep the ciphertext, replace the server's X25519 key with the identity point.
        exchange
            .server_ephemeral
            .truncate(sntrup761::CIPHERTEXT_SIZE);
        exchange.server_ephemeral.extend_from_slice(&[0u8; 32]);
        assert!(matches!(
            client.compute_shared_secret(&exchange.server_ephemeral),
            Err(Error::Kex)
        ));
    }
}
