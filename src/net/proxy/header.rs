//! Reading one PROXY header (v1 text or v2 binary, as HAProxy's `proxy-protocol.txt` defines
//! them) off the start of a connection, byte-exact: not one byte past the header is read, since
//! the client's SSH version line or TLS ClientHello follows it on the same socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The v1 header's first bytes.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The v2 header's first twelve bytes.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, its CRLF included (the protocol's own limit).
pub const V1_MAX: usize = 107;
/// Most bytes a v2 header may declare after its fixed 16 (addresses and TLVs). The addresses
/// take at most 216 (a UNIX socket's); the rest is room for TLVs such as AWS's or Azure's.
/// A longer header is refused, not skipped: it is the balancer's, and a bug or an attack.
pub const V2_MAX_PAYLOAD: usize = 1024;

/// The shortest header of either version: `PROXY UNKNOWN\r\n`. Reading this many bytes first
/// never reads past a header.
const SHORTEST: usize = 15;
/// The fixed part of a v2 header: signature, version and command, family, length.
const V2_FIXED: usize = 16;

/// Which version of the protocol a header used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    /// `v1` or `v2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// What a balancer relays about a client's connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client's address: the technician.
    pub source: SocketAddr,
    /// The address the client connected to (the balancer's front).
    pub destination: SocketAddr,
}

/// One PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub version: Version,
    /// `None` for a connection the balancer made itself (v2 `LOCAL`, e.g. a health check) or
    /// could not describe (v1 `UNKNOWN`, v2 `UNSPEC` or a UNIX socket): the connection's own
    /// peer address stands, as the protocol says.
    pub addresses: Option<Addresses>,
}

/// Why a connection's start is not an acceptable PROXY header.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// Closed before its first byte: a balancer's plain TCP health check, say.
    #[error("the connection closed before sending anything")]
    Silent,
    #[error("the connection closed {0} bytes into its PROXY header")]
    Truncated(usize),
    #[error("the connection does not begin with a PROXY header ({0})")]
    Missing(&'static str),
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    #[error("PROXY v1 header longer than {V1_MAX} bytes")]
    V1TooLong,
    #[error("malformed PROXY v2 header: {0}")]
    V2(String),
    #[error(
        "PROXY v2 header declares {0} bytes after its fixed 16; at most {V2_MAX_PAYLOAD} are accepted"
    )]
    V2TooLong(usize),
    /// The header did not come in time (see [`super::accept`]).
    #[error("no PROXY header within {}s", .0.as_secs())]
    Timeout(std::time::Duration),
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
}

/// Read one PROXY header from the start of `r`, and nothing after it. Fails as soon as the
/// bytes so far cannot begin a header (a direct SSH or TLS client is told at its first bytes,
/// not after a timeout). No timeout here: the caller bounds the wait.
pub async fn read_header<R: AsyncRead + Unpin>(r: &mut R) -> Result<Header, HeaderError> {
    let mut buf = [0u8; V2_FIXED + V2_MAX_PAYLOAD];
    let mut n = 0;
    while n < SHORTEST {
        n += fill(r, &mut buf[n..SHORTEST], n).await?;
        if !could_begin_header(&buf[..n]) {
            return Err(HeaderError::Missing(looks_like(&buf[..n])));
        }
    }
    if buf.starts_with(V1_PREFIX) {
        read_v1(r, &mut buf[..V1_MAX], n).await
    } else {
        read_v2(r, &mut buf, n).await
    }
}

/// Read at least one byte into `buf`; `at` bytes of the header came before. EOF is an error.
async fn fill<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    at: usize,
) -> Result<usize, HeaderError> {
    match r.read(buf).await? {
        0 if at == 0 => Err(HeaderError::Silent),
        0 => Err(HeaderError::Truncated(at)),
        k => Ok(k),
    }
}

/// Whether `start` can begin a v1 or a v2 header (it agrees with a signature as far as both go).
pub(super) fn could_begin_header(start: &[u8]) -> bool {
    let agrees = |sig: &[u8]| {
        let m = start.len().min(sig.len());
        start[..m] == sig[..m]
    };
    agrees(V1_PREFIX) || agrees(V2_SIGNATURE)
}

/// What a connection that should have begun with a PROXY header looks like instead (for the
/// log and the audit record; the bytes themselves are not repeated).
fn looks_like(start: &[u8]) -> &'static str {
    if start.starts_with(b"SSH-") || b"SSH-".starts_with(start) {
        "it begins like an SSH client's version line: a client that bypassed the balancer?"
    } else if start.first() == Some(&0x16) {
        "it begins like a TLS handshake: a client that bypassed the balancer?"
    } else {
        "it begins with other bytes"
    }
}

/// The rest of a v1 header, of which `buf[..n]` is read. A v1 header ends at its CRLF, so
/// each read asks for no more bytes than must still come: one after a CR, else two.
async fn read_v1<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    mut n: usize,
) -> Result<Header, HeaderError> {
    let mut checked = 0;
    loop {
        for i in checked..n {
            let after_cr = i > 0 && buf[i - 1] == b'\r';
            match (after_cr, buf[i]) {
                (true, b'\n') => return parse_v1(&buf[..i - 1]),
                (true, _) => return Err(HeaderError::V1("a carriage return inside the line")),
                (false, b'\n') => {
                    return Err(HeaderError::V1("a line feed without a carriage return"));
                }
                (false, b'\r' | b' '..=b'~') => {}
                (false, _) => return Err(HeaderError::V1("a byte that is not printable ASCII")),
            }
        }
        checked = n;
        if n == buf.len() {
            return Err(HeaderError::V1TooLong);
        }
        let want = if buf[n - 1] == b'\r' { 1 } else { 2 };
        let end = (n + want).min(buf.len());
        n += fill(r, &mut buf[n..end], n).await?;
    }
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT` or `PROXY UNKNOWN[ anything]`, without its CRLF.
fn parse_v1(line: &[u8]) -> Result<Header, HeaderError> {
    let line = std::str::from_utf8(line).map_err(|_| HeaderError::V1("not ASCII"))?;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY", checked by the caller
    let unknown = Header {
        version: Version::V1,
        addresses: None,
    };
    let v4 = match fields.next() {
        Some("TCP4") => true,
        Some("TCP6") => false,
        // The rest of the line is to be ignored.
        Some("UNKNOWN") => return Ok(unknown),
        _ => return Err(HeaderError::V1("the protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let rest: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = rest[..] else {
        return Err(HeaderError::V1(
            "a TCP line has exactly four fields after the protocol, one space apart",
        ));
    };
    let ip = |s: &str| -> Result<IpAddr, HeaderError> {
        if v4 {
            s.parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| HeaderError::V1("an address is not an IPv4 address"))
        } else {
            s.parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| HeaderError::V1("an address is not an IPv6 address"))
        }
    };
    let port = |s: &str| -> Result<u16, HeaderError> {
        let digits = !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
        let no_leading_zero = s == "0" || !s.starts_with('0');
        match s.parse::<u16>() {
            Ok(p) if digits && no_leading_zero => Ok(p),
            _ => Err(HeaderError::V1("a port is not a number from 0 to 65535")),
        }
    };
    Ok(Header {
        version: Version::V1,
        addresses: Some(Addresses {
            source: SocketAddr::new(ip(src)?, port(sport)?),
            destination: SocketAddr::new(ip(dst)?, port(dport)?),
        }),
    })
}

/// The rest of a v2 header, of which `buf[..n]` (`n` < 16) is read.
async fn read_v2<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8; V2_FIXED + V2_MAX_PAYLOAD],
    mut n: usize,
) -> Result<Header, HeaderError> {
    while n < V2_FIXED {
        n += fill(r, &mut buf[n..V2_FIXED], n).await?;
    }
    if !buf.starts_with(V2_SIGNATURE) {
        return Err(HeaderError::V2("the 12-byte signature is wrong".into()));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_PAYLOAD {
        return Err(HeaderError::V2TooLong(len));
    }
    let (version, command, family) = (buf[12] >> 4, buf[12] & 0x0f, buf[13]);
    if version != 2 {
        return Err(HeaderError::V2(format!("version {version}, not 2")));
    }
    // Check what can be checked before waiting for the rest.
    let need = match (command, family) {
        // LOCAL: the balancer's own connection; the family and addresses are to be ignored.
        (0x0, _) => 0,
        (0x1, 0x00) => 0,
        (0x1, 0x11) => 12,
        (0x1, 0x21) => 36,
        (0x1, 0x31) => 216,
        (0x1, 0x12 | 0x22 | 0x32) => {
            return Err(HeaderError::V2(
                "a datagram (UDP) connection on a TCP listener".into(),
            ));
        }
        (0x1, f) => return Err(HeaderError::V2(format!("unknown family 0x{f:02x}"))),
        (c, _) => return Err(HeaderError::V2(format!("unknown command 0x{c:x}"))),
    };
    if len < need {
        return Err(HeaderError::V2(format!(
            "{len} bytes cannot hold the addresses of family 0x{family:02x} ({need} needed)"
        )));
    }
    let end = V2_FIXED + len;
    while n < end {
        n += fill(r, &mut buf[n..end], n).await?;
    }
    // What follows the addresses (TLVs) is skipped, but for a checksum the balancer sent.
    check_crc32c(&buf[..end], V2_FIXED + need)?;
    let a = &buf[V2_FIXED..end];
    let port = |at: usize| u16::from_be_bytes([a[at], a[at + 1]]);
    let addresses = match (command, family) {
        (0x1, 0x11) => {
            let ip = |at: usize| IpAddr::from([a[at], a[at + 1], a[at + 2], a[at + 3]]);
            Some(Addresses {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            })
        }
        (0x1, 0x21) => {
            let ip = |at: usize| {
                let mut b = [0u8; 16];
                b.copy_from_slice(&a[at..at + 16]);
                IpAddr::from(b)
            };
            Some(Addresses {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
        _ => None,
    };
    Ok(Header {
        version: Version::V2,
        addresses,
    })
}

/// PP2_TYPE_CRC32C: a checksum of the whole header, sent by balancers set to (HAProxy's
/// `proxy-v2-options crc32c`).
const PP2_TYPE_CRC32C: u8 = 0x03;

/// When the TLVs of `header` (from `at` on) hold a CRC32C, it must match: the checksum of the
/// whole header with its own four bytes zeroed. TLVs are walked while they fit; what does not
/// fit is skipped unread, as before (some balancers pad with bytes that are not TLVs).
fn check_crc32c(header: &[u8], mut at: usize) -> Result<(), HeaderError> {
    while at + 3 <= header.len() {
        let (kind, len) = (
            header[at],
            usize::from(u16::from_be_bytes([header[at + 1], header[at + 2]])),
        );
        let value = at + 3;
        if value + len > header.len() {
            break;
        }
        if kind == PP2_TYPE_CRC32C && len == 4 {
            let sent = u32::from_be_bytes([
                header[value],
                header[value + 1],
                header[value + 2],
                header[value + 3],
            ]);
            let mut zeroed = header.to_vec();
            zeroed[value..value + 4].fill(0);
            if crc32c(&zeroed) != sent {
                return Err(HeaderError::V2(
                    "its CRC32C does not match the header: it was damaged or altered on the way"
                        .into(),
                ));
            }
        }
        at = value + len;
    }
    Ok(())
}

/// CRC-32C (Castagnoli, RFC 4960 appendix B), bit by bit: a header is at most 1040 bytes.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests;
