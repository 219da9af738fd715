//! [`accept`]: who must send a header, what the client's address then is, and how long a
//! balancer that says nothing is waited for.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

fn blocks(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|s| s.parse().unwrap()).collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The balancers of these tests.
const BALANCERS: &str = "10.9.0.0/16";

/// [`accept`] of a connection from `peer` that sent `bytes`; its other end, still open.
async fn accept_sent(
    bytes: &[u8],
    peer: &str,
) -> (Result<Inbound<DuplexStream>, Refused>, DuplexStream) {
    let (r, mut w) = tokio::io::duplex(256);
    w.write_all(bytes).await.unwrap();
    (accept(&blocks(&[BALANCERS]), r, addr(peer)).await, w)
}

#[tokio::test]
async fn a_balancer_s_header_names_the_client() {
    let (inbound, _w) = accept_sent(
        b"PROXY TCP4 192.0.2.7 10.0.0.1 50000 2222\r\nSSH-2.0-x\r\n",
        "10.9.0.4:3000",
    )
    .await;
    let inbound = inbound.unwrap();
    assert_eq!(inbound.origin.client, addr("192.0.2.7:50000"));
    assert_eq!(inbound.origin.balancer, Some(addr("10.9.0.4:3000")));
    let mut s = inbound.stream;
    let mut line = [0u8; 11];
    s.read_exact(&mut line).await.unwrap();
    assert_eq!(&line, b"SSH-2.0-x\r\n");
}

#[tokio::test]
async fn an_ipv4_mapped_client_is_named_by_its_ipv4_address() {
    // The balancer's own address comes IPv4-mapped from a dual-stack listener.
    let (inbound, _w) = accept_sent(
        b"PROXY TCP6 ::ffff:192.0.2.7 ::ffff:10.0.0.1 50000 2222\r\n",
        "[::ffff:10.9.0.4]:3000",
    )
    .await;
    assert_eq!(inbound.unwrap().origin.client, addr("192.0.2.7:50000"));
}

#[tokio::test]
async fn a_local_header_leaves_the_balancer_s_address() {
    let mut local = V2_SIGNATURE.to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let (inbound, _w) = accept_sent(&local, "10.9.0.4:3000").await;
    assert_eq!(inbound.unwrap().origin.client, addr("10.9.0.4:3000"));
}

#[tokio::test]
async fn a_direct_client_is_not_read_from() {
    // Nothing is sent: a direct client is handed on at once, without waiting for a byte.
    let (inbound, mut w) =
        tokio::time::timeout(Duration::from_secs(1), accept_sent(b"", "192.0.2.7:4000"))
            .await
            .expect("no wait for a direct client");
    let inbound = inbound.unwrap();
    assert_eq!(inbound.origin.client, addr("192.0.2.7:4000"));
    assert_eq!(inbound.origin.balancer, None);
    assert_eq!(inbound.origin.refused_header(), None);
    // Its own header is refused as the handshake reads it.
    let origin = inbound.origin.clone();
    let mut s = inbound.stream;
    w.write_all(b"PROXY TCP4 203.0.113.1 10.0.0.1 1 2\r\n")
        .await
        .unwrap();
    assert!(s.read(&mut [0u8; 16]).await.is_err());
    let why = origin.refused_header().expect("the tripwire tripped");
    assert!(why.contains("PROXY v1 header from 192.0.2.7"), "{why}");
    assert!(why.contains("not in gateway.proxy_protocol_from"), "{why}");
}

#[tokio::test]
async fn a_client_s_own_header_behind_the_balancer_is_refused_too() {
    let (inbound, _w) = accept_sent(
        b"PROXY TCP4 192.0.2.7 10.0.0.1 50000 2222\r\nPROXY TCP4 6.6.6.6 10.0.0.1 1 2\r\n",
        "10.9.0.4:3000",
    )
    .await;
    let inbound = inbound.unwrap();
    let origin = inbound.origin.clone();
    let mut s = inbound.stream;
    assert!(s.read(&mut [0u8; 64]).await.is_err());
    let why = origin.refused_header().unwrap();
    assert!(why.contains("second PROXY v1 header"), "{why}");
    assert!(why.contains("10.9.0.4"), "{why}");
}

#[tokio::test]
async fn a_balancer_without_a_header_is_refused_and_audited() {
    let (e, _w) = accept_sent(b"SSH-2.0-OpenSSH_9.2\r\n", "10.9.0.4:3000").await;
    let e = e.unwrap_err();
    assert!(e.audited());
    let text = e.to_string();
    assert!(
        text.contains("does not begin with a PROXY header"),
        "{text}"
    );
    assert!(
        text.contains("10.9.0.4, which is in gateway.proxy_protocol_from"),
        "{text}"
    );
}

#[tokio::test]
async fn a_health_check_that_closes_at_once_is_refused_unaudited() {
    let (r, w) = tokio::io::duplex(256);
    drop(w);
    let e = accept(&blocks(&[BALANCERS]), r, addr("10.9.0.4:3000"))
        .await
        .unwrap_err();
    assert!(!e.audited(), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_balancer_that_says_nothing_is_let_go_after_the_header_timeout() {
    let started = tokio::time::Instant::now();
    let (e, _w) = accept_sent(b"", "10.9.0.4:3000").await;
    let e = e.unwrap_err();
    assert_eq!(started.elapsed(), HEADER_TIMEOUT);
    assert!(e.audited());
    assert!(e.to_string().contains("no PROXY header within 5s"), "{e}");
}

#[test]
fn the_balancers_list_reads_from_toml_and_names_a_bad_entry_by_its_place() {
    #[derive(serde::Deserialize)]
    struct T {
        #[serde(deserialize_with = "deserialize_balancers")]
        from: Vec<Cidr>,
    }
    let t: T = toml::from_str("from = [\"10.0.0.0/8\", \"::1\"]").unwrap();
    assert_eq!(t.from, blocks(&["10.0.0.0/8", "::1/128"]));
    let e = toml::from_str::<T>("from = [\"10.0.0.0/8\", \"10.0.0.0/40\"]")
        .err()
        .unwrap();
    assert!(
        e.message()
            .starts_with("gateway.proxy_protocol_from[1]: \"10.0.0.0/40\" is not an address block"),
        "{e}"
    );
}
