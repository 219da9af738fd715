//! The header reader: both versions and families, the special commands, and every way a start
//! can be wrong, fed whole, byte by byte, split at random, and cut short.

use std::collections::VecDeque;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use tokio::io::AsyncWriteExt;

use super::*;
use crate::net::pieces::{Pieces, Then};

/// The header read from `bytes` fed whole and byte by byte, with what each left unread.
async fn read_both(bytes: &[u8]) -> Result<(Header, Vec<u8>), String> {
    let mut whole = Pieces::whole(bytes);
    let a = read_header(&mut whole).await.map_err(|e| e.to_string());
    let mut bytewise = Pieces::bytewise(bytes);
    let b = read_header(&mut bytewise).await.map_err(|e| e.to_string());
    assert_eq!(a, b, "whole and byte by byte disagree on {bytes:?}");
    if a.is_ok() {
        assert_eq!(whole.left(), bytewise.left(), "{bytes:?}");
    }
    a.map(|h| (h, whole.left()))
}

async fn refused(bytes: &[u8]) -> String {
    match read_both(bytes).await {
        Ok(h) => panic!("{bytes:?} was accepted: {h:?}"),
        Err(e) => e,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn relayed(version: Version, source: &str, destination: &str) -> Header {
    Header {
        version,
        addresses: Some(Addresses {
            source: addr(source),
            destination: addr(destination),
        }),
    }
}

/// A v2 header: command, family, the address block and TLV bytes after it.
fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(0x20 | command);
    h.push(family);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(body);
    h
}

fn v2_tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, tlvs: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&src);
    body.extend_from_slice(&dst);
    body.extend_from_slice(&sport.to_be_bytes());
    body.extend_from_slice(&dport.to_be_bytes());
    body.extend_from_slice(tlvs);
    v2(1, 0x11, &body)
}

const SSH: &[u8] = b"SSH-2.0-OpenSSH_9.2p1\r\n";

#[tokio::test]
async fn v1_tcp4_gives_the_client_and_leaves_the_ssh_line_unread() {
    let mut bytes = b"PROXY TCP4 192.0.2.7 198.51.100.1 51234 2222\r\n".to_vec();
    bytes.extend_from_slice(SSH);
    let (h, left) = read_both(&bytes).await.unwrap();
    assert_eq!(
        h,
        relayed(Version::V1, "192.0.2.7:51234", "198.51.100.1:2222")
    );
    assert_eq!(left, SSH);
}

#[tokio::test]
async fn v1_tcp6_gives_the_client() {
    let (h, left) = read_both(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n\x16\x03\x01")
        .await
        .unwrap();
    assert_eq!(
        h,
        relayed(Version::V1, "[2001:db8::7]:65535", "[2001:db8::1]:0")
    );
    assert_eq!(left, b"\x16\x03\x01");
}

#[tokio::test]
async fn v1_unknown_keeps_the_peer_address_and_ignores_the_rest_of_its_line() {
    for line in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
    ] {
        let mut bytes = line.to_vec();
        bytes.extend_from_slice(SSH);
        let (h, left) = read_both(&bytes).await.unwrap();
        assert_eq!(h.addresses, None);
        assert_eq!(h.version, Version::V1);
        assert_eq!(left, SSH, "{line:?}");
    }
}

#[tokio::test]
async fn v1_at_107_bytes_is_read_and_at_108_refused() {
    // The protocol's own worst case.
    let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert_eq!(longest.len(), V1_MAX);
    let (h, left) = read_both(&[&longest[..], SSH].concat()).await.unwrap();
    assert_eq!(h.addresses, None);
    assert_eq!(left, SSH);
    let tcp6 = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    let (h, _) = read_both(tcp6).await.unwrap();
    assert_eq!(h.addresses.unwrap().source.port(), 65535);
    let mut long = b"PROXY UNKNOWN ".to_vec();
    long.resize(V1_MAX, b'x');
    long.extend_from_slice(b"\r\n");
    assert!(refused(&long).await.contains("longer than 107"));
    // A line that never ends is refused at 107 bytes, without reading more.
    let mut endless = Pieces::whole(&[b"PROXY UNKNOWN ".as_slice(), &[b'y'; 500]].concat());
    let e = read_header(&mut endless).await.unwrap_err();
    assert!(matches!(e, HeaderError::V1TooLong), "{e}");
    assert_eq!(endless.left().len(), 514 - V1_MAX);
}

#[tokio::test]
async fn malformed_v1_lines_are_refused_naming_the_fault() {
    for (line, fault) in [
        (
            &b"PROXY TCP4 192.0.2.7  198.51.100.1 1 2\r\n"[..],
            "four fields",
        ),
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2 \r\n", "four fields"),
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 1\r\n", "four fields"),
        (b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n", "IPv4"),
        (b"PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n", "IPv6"),
        (b"PROXY TCP4 192.0.2.007 198.51.100.1 1 2\r\n", "IPv4"),
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 65536 2\r\n", "port"),
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 01 2\r\n", "port"),
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 -1 2\r\n", "port"),
        (b"PROXY TCP4 192.0.2.7 198.51.100.1 +1 2\r\n", "port"),
        (
            b"PROXY tcp4 192.0.2.7 198.51.100.1 1 2\r\n",
            "TCP4, TCP6 or UNKNOWN",
        ),
        (
            b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n",
            "TCP4, TCP6 or UNKNOWN",
        ),
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\n",
            "line feed without",
        ),
        (
            b"PROXY TCP4 192.0.2.7\r198.51.100.1 1 2\r\n",
            "carriage return inside",
        ),
        (b"PROXY UNKNOWN\r\r\n", "carriage return inside"),
        (b"PROXY UNKNOWN \xc3\xa9\r\n", "printable ASCII"),
        (b"PROXY UNKNOWN \0\r\n", "printable ASCII"),
    ] {
        let e = refused(line).await;
        assert!(e.contains(fault), "{line:?}: {e}");
        assert!(e.contains("v1"), "{line:?}: {e}");
    }
}

#[tokio::test]
async fn v2_tcp4_and_tcp6_give_the_client_and_leave_the_tls_hello_unread() {
    let mut bytes = v2_tcp4([192, 0, 2, 7], [198, 51, 100, 1], 51234, 8443, &[]);
    bytes.extend_from_slice(b"\x16\x03\x01\x02\x00");
    let (h, left) = read_both(&bytes).await.unwrap();
    assert_eq!(
        h,
        relayed(Version::V2, "192.0.2.7:51234", "198.51.100.1:8443")
    );
    assert_eq!(left, b"\x16\x03\x01\x02\x00");

    let src: std::net::Ipv6Addr = "2001:db8::7".parse().unwrap();
    let dst: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
    let mut body = [src.octets(), dst.octets()].concat();
    body.extend_from_slice(&443u16.to_be_bytes());
    body.extend_from_slice(&2222u16.to_be_bytes());
    let mut bytes = v2(1, 0x21, &body);
    bytes.extend_from_slice(SSH);
    let (h, left) = read_both(&bytes).await.unwrap();
    assert_eq!(
        h,
        relayed(Version::V2, "[2001:db8::7]:443", "[2001:db8::1]:2222")
    );
    assert_eq!(left, SSH);
}

#[tokio::test]
async fn v2_tlvs_are_skipped_whole() {
    // PP2_TYPE_UNIQUE_ID and PP2_TYPE_NOOP padding, as HAProxy may send them.
    let tlvs = [
        &[0x05, 0x00, 0x04][..],
        b"abcd",
        &[0x04, 0x00, 0x03, 0, 0, 0],
    ]
    .concat();
    let mut bytes = v2_tcp4([10, 0, 0, 9], [10, 0, 0, 1], 1, 2, &tlvs);
    bytes.extend_from_slice(SSH);
    let (h, left) = read_both(&bytes).await.unwrap();
    assert_eq!(h.addresses.unwrap().source, addr("10.0.0.9:1"));
    assert_eq!(left, SSH);
}

#[test]
fn crc32c_is_castagnolis() {
    // RFC 3720's check value, and iSCSI's 32 zero bytes.
    assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
}

#[tokio::test]
async fn a_v2_crc32c_that_matches_is_accepted_and_one_that_does_not_is_refused() {
    // A header carrying PP2_TYPE_CRC32C, computed as a balancer does: zeroed, summed, filled.
    let mut bytes = v2_tcp4(
        [10, 0, 0, 9],
        [10, 0, 0, 1],
        1,
        2,
        &[PP2_TYPE_CRC32C, 0x00, 0x04, 0, 0, 0, 0],
    );
    let at = bytes.len() - 4;
    let sum = crc32c(&bytes);
    bytes[at..].copy_from_slice(&sum.to_be_bytes());
    let mut with_hello = bytes.clone();
    with_hello.extend_from_slice(SSH);
    let (h, left) = read_both(&with_hello).await.unwrap();
    assert_eq!(h.addresses.unwrap().source, addr("10.0.0.9:1"));
    assert_eq!(left, SSH);
    // One address byte changed on the way: the checksum catches it.
    let mut altered = bytes.clone();
    altered[V2_FIXED + 3] ^= 0x01;
    altered.extend_from_slice(SSH);
    let e = refused(&altered).await;
    assert!(e.contains("CRC32C does not match"), "{e}");
    // So does a wrong checksum.
    let mut wrong = bytes;
    wrong[at] ^= 0x80;
    let e = refused(&wrong).await;
    assert!(e.contains("CRC32C does not match"), "{e}");
}

#[tokio::test]
async fn v2_local_unspec_and_unix_keep_the_peer_address() {
    // LOCAL (a health check): whatever family and addresses it carries are consumed, ignored.
    let local = v2(0, 0x11, &[1; 12]);
    let unspec = v2(1, 0x00, &[]);
    let unix = v2(1, 0x31, &[b'/'; 216]);
    for bytes in [local, unspec, unix] {
        let mut all = bytes.clone();
        all.extend_from_slice(SSH);
        let (h, left) = read_both(&all).await.unwrap();
        assert_eq!(h.version, Version::V2);
        assert_eq!(h.addresses, None, "{bytes:?}");
        assert_eq!(left, SSH);
    }
}

#[tokio::test]
async fn malformed_v2_headers_are_refused_naming_the_fault() {
    let mut wrong_version = v2_tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, &[]);
    wrong_version[12] = 0x11;
    let mut bad_signature = v2_tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, &[]);
    bad_signature[11] = b'X';
    for (bytes, fault) in [
        (wrong_version, "version 1"),
        (v2(2, 0x11, &[0; 12]), "unknown command"),
        (v2(1, 0x12, &[0; 12]), "datagram"),
        (v2(1, 0x41, &[0; 12]), "unknown family 0x41"),
        (v2(1, 0x11, &[0; 11]), "cannot hold"),
        (v2(1, 0x21, &[0; 35]), "cannot hold"),
    ] {
        let e = refused(&bytes).await;
        assert!(e.contains(fault), "{bytes:?}: {e}");
    }
    // The signature's last byte differs: not a v2 header at all, and not v1 either.
    assert!(refused(&bad_signature).await.contains("does not begin"));
}

#[tokio::test]
async fn an_oversized_v2_header_is_refused_before_its_body_arrives() {
    let (mut r, mut w) = tokio::io::duplex(64);
    let mut fixed = V2_SIGNATURE.to_vec();
    fixed.extend_from_slice(&[0x21, 0x11]);
    fixed.extend_from_slice(&1025u16.to_be_bytes());
    w.write_all(&fixed).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(1), read_header(&mut r))
        .await
        .expect("refused without waiting for 1025 bytes")
        .unwrap_err();
    assert!(matches!(e, HeaderError::V2TooLong(1025)), "{e}");
    // The largest accepted: 1024 bytes of TLVs and addresses.
    let mut largest = v2_tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, &[0; V2_MAX_PAYLOAD - 12]);
    largest.extend_from_slice(SSH);
    let (_, left) = read_both(&largest).await.unwrap();
    assert_eq!(left, SSH);
}

#[tokio::test]
async fn a_v2_header_split_across_reads_with_pauses_is_read_whole() {
    let (mut r, mut w) = tokio::io::duplex(64);
    let bytes = v2_tcp4(
        [203, 0, 113, 5],
        [10, 0, 0, 1],
        40000,
        2222,
        &[0x04, 0, 1, 0],
    );
    let writer = tokio::spawn(async move {
        for part in [
            &bytes[..3],
            &bytes[3..13],
            &bytes[13..15],
            &bytes[15..20],
            &bytes[20..],
        ] {
            w.write_all(part).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        w.write_all(SSH).await.unwrap();
        w
    });
    let h = read_header(&mut r).await.unwrap();
    assert_eq!(h.addresses.unwrap().source, addr("203.0.113.5:40000"));
    let _w = writer.await.unwrap();
    let mut next = vec![0u8; SSH.len()];
    tokio::io::AsyncReadExt::read_exact(&mut r, &mut next)
        .await
        .unwrap();
    assert_eq!(next, SSH, "the next bytes are the client's, untouched");
}

#[tokio::test]
async fn truncated_headers_and_silent_connections_are_told_apart() {
    assert!(matches!(
        read_header(&mut Pieces::whole(b"")).await,
        Err(HeaderError::Silent)
    ));
    let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 1 2\r\n";
    let v2 = v2_tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, &[9; 20]);
    for whole in [&v1[..], &v2[..]] {
        for cut in 1..whole.len() {
            let mut r = Pieces::bytewise(&whole[..cut]);
            match read_header(&mut r).await {
                Err(HeaderError::Truncated(n)) => assert_eq!(n, cut, "{whole:?}"),
                other => panic!("{:?} cut at {cut}: {other:?}", &whole[..cut]),
            }
        }
    }
}

#[tokio::test]
async fn a_direct_client_is_refused_at_its_first_bytes_without_a_wait() {
    for (start, like) in [
        (&b"S"[..], "SSH client"),
        (b"SSH-2.0-OpenSSH_9.2p1\r\n", "SSH client"),
        (b"\x16\x03\x01", "TLS handshake"),
        (b"GET / HTTP/1.1\r\n", "other bytes"),
        (b"PROXY\r\n", "other bytes"),
        (b"\r\n\r\n\0\r\nQUIX", "other bytes"),
    ] {
        let (mut r, mut w) = tokio::io::duplex(64);
        w.write_all(start).await.unwrap();
        // The writer stays open: a refusal must not wait for more bytes.
        let e = tokio::time::timeout(Duration::from_secs(1), read_header(&mut r))
            .await
            .unwrap_or_else(|_| panic!("{start:?}: waited for more"))
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, HeaderError::Missing(_)), "{start:?}: {text}");
        assert!(text.contains(like), "{start:?}: {text}");
        drop(w);
    }
}

#[tokio::test]
async fn random_valid_headers_split_at_random_are_read_exactly() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..500 {
        let src: [u8; 4] = rng.random();
        let dst: [u8; 4] = rng.random();
        let (sport, dport): (u16, u16) = (rng.random(), rng.random());
        let (bytes, want) = if rng.random_bool(0.5) {
            let tlvs: Vec<u8> = (0..rng.random_range(0..40)).map(|_| rng.random()).collect();
            (
                v2_tcp4(src, dst, sport, dport, &tlvs),
                (IpAddr::from(src), sport, Version::V2),
            )
        } else {
            let line = format!(
                "PROXY TCP4 {} {} {sport} {dport}\r\n",
                IpAddr::from(src),
                IpAddr::from(dst)
            );
            (line.into_bytes(), (IpAddr::from(src), sport, Version::V1))
        };
        let tail: Vec<u8> = (0..rng.random_range(0..30)).map(|_| rng.random()).collect();
        let all = [bytes, tail.clone()].concat();
        let mut pieces = VecDeque::new();
        let mut at = 0;
        while at < all.len() {
            let k = rng.random_range(1..=(all.len() - at).min(20));
            pieces.push_back(all[at..at + k].to_vec());
            at += k;
        }
        let mut r = Pieces::new(pieces, Then::End);
        let h = read_header(&mut r).await.unwrap();
        let a = h.addresses.unwrap();
        assert_eq!((a.source.ip(), a.source.port(), h.version), want);
        assert_eq!(r.left(), tail, "the bytes after the header are all left");
    }
}

#[tokio::test]
async fn random_garbage_is_refused_or_read_within_the_bounds() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for i in 0..2000 {
        // Half start with a signature, so that the parsers past it get garbage too.
        let mut bytes: Vec<u8> = match i % 3 {
            0 => V1_PREFIX.to_vec(),
            1 => V2_SIGNATURE.to_vec(),
            _ => Vec::new(),
        };
        bytes.extend((0..rng.random_range(0..1200)).map(|_| rng.random::<u8>()));
        let mut r = Pieces::whole(&bytes);
        if read_header(&mut r).await.is_ok() {
            let used = bytes.len() - r.left().len();
            assert!(used <= V2_FIXED + V2_MAX_PAYLOAD, "{used} bytes read");
        }
    }
}
