//! Typed identifiers, names, durations and secrets shared by every module.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::crypto;

/// Characters used in generated ids: lowercase base32 without padding (RFC 4648 alphabet, lowercased).
const ID_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A random id body of `len` base32 characters (5 bits each).
pub fn random_id(len: usize) -> String {
    use rand::RngExt;
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ID_ALPHABET[rng.random_range(0..32usize)] as char)
        .collect()
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $prefix:literal) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_id(16)))
            }

            /// Wrap an id read back from storage or a client, checking its shape.
            pub fn parse(s: &str) -> Option<Self> {
                let body = s.strip_prefix($prefix)?;
                (body.len() == 16 && body.bytes().all(|b| ID_ALPHABET.contains(&b)))
                    .then(|| Self(s.to_string()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// Identifies an access request.
    RequestId,
    "req_"
);
id_type!(
    /// Identifies a grant issued for an approved request.
    GrantId,
    "gr_"
);
id_type!(
    /// Identifies one gateway session (SSH connection or HTTPS login).
    SessionId,
    "ses_"
);

macro_rules! name_type {
    ($(#[$m:meta])* $name:ident, $what:literal) => {
        name_type!($(#[$m])* $name, $what, validate_name);
    };
    ($(#[$m:meta])* $name:ident, $what:literal, $validate:path) => {
        $(#[$m])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $validate(&s, $what)?;
                Ok(Self(s))
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::try_from(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    };
}

/// Names are short, printable and free of characters that would confuse logs,
/// certificate key ids or file paths.
fn validate_name(s: &str, what: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if s.len() > 64 {
        return Err(format!("{what} is longer than 64 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
    {
        return Err(format!(
            "{what} {s:?} may only contain letters, digits, '-', '_', '.' and '@'"
        ));
    }
    Ok(())
}

name_type!(
    /// A jitgate user (technician, approver, reviewer, admin).
    UserName,
    "user name"
);
name_type!(
    /// A configured target (SSH host or HTTPS console).
    TargetName,
    "target name"
);
name_type!(
    /// A configured task.
    TaskName,
    "task name"
);
name_type!(
    /// A ticket reference: `INC-7` (the local provider, or a bare id that a ticket system's
    /// `pattern` claims), or `<system>:<id>` such as `rt:42`, `jira:OPS-121`.
    TicketRef,
    "ticket id",
    validate_ticket_ref
);

/// A name, or a ticket system's name and its own id for the ticket, each a name.
fn validate_ticket_ref(s: &str, what: &str) -> Result<(), String> {
    match s.split_once(':') {
        None => validate_name(s, what),
        Some((system, id)) => validate_name(system, "ticket system name")
            .and_then(|()| validate_name(id, what))
            .map_err(|e| format!("{e} (write a ticket system's ticket as SYSTEM:ID, e.g. rt:42)")),
    }
}

impl TicketRef {
    /// The ticket system a `<system>:<id>` reference names.
    pub fn system(&self) -> Option<&str> {
        self.0.split_once(':').map(|(s, _)| s)
    }

    /// The ticket's id in its system (all of it for a bare reference).
    pub fn local_id(&self) -> &str {
        self.0.split_once(':').map_or(&self.0, |(_, id)| id)
    }

    /// `<system>:<id>`.
    pub fn in_system(system: &str, id: &str) -> Result<Self, String> {
        format!("{system}:{id}").parse()
    }
}

/// A positive duration written the human way: `90s`, `15m`, `1h30m`, `2d`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl(Duration);

impl Ttl {
    /// Wrap a whole number of seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }

    /// The duration.
    pub fn duration(self) -> Duration {
        self.0
    }

    /// Whole seconds.
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl FromStr for Ttl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a duration; write it like 90s, 15m, 1h30m or 2d");
        let s = s.trim();
        if s.is_empty() || s.len() > 32 {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut num: Option<u64> = None;
        for c in s.chars() {
            if let Some(d) = c.to_digit(10) {
                num = Some(
                    num.unwrap_or(0)
                        .checked_mul(10)
                        .and_then(|n| n.checked_add(d as u64))
                        .ok_or_else(bad)?,
                );
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                _ => return Err(bad()),
            };
            let n = num.take().ok_or_else(bad)?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
        }
        if num.is_some() || total == 0 {
            return Err(bad());
        }
        if total > 366 * 86400 {
            return Err(format!("{s:?} is longer than a year"));
        }
        Ok(Self(Duration::from_secs(total)))
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.0.as_secs();
        if s == 0 {
            return f.write_str("0s");
        }
        for (unit, len) in [("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
            if s >= len {
                write!(f, "{}{unit}", s / len)?;
                s %= len;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Ttl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A text secret (grant token, API key, webhook secret) that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap secret text.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret text; call only where it is about to be used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A grant token: `jgt_` + 43 base64url characters (256 random bits) + 6 characters of checksum.
#[derive(Clone, PartialEq, Eq)]
pub struct GrantToken(Secret);

/// Why a string is not a well-formed grant token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenFormatError {
    #[error("a grant token starts with jgt_")]
    Prefix,
    #[error("a grant token is jgt_ followed by 49 characters; check that it was pasted whole")]
    Length,
    #[error("the grant token's checksum does not match; check that it was pasted whole")]
    Checksum,
}

const TOKEN_BODY: usize = 43;
const TOKEN_SUM: usize = 6;

fn token_checksum(body: &str) -> String {
    use base64::Engine;
    let d = crypto::sha256(body.as_bytes());
    let mut s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&d[..6]);
    s.truncate(TOKEN_SUM);
    s
}

impl GrantToken {
    /// A fresh token with 256 bits from the OS random generator.
    pub fn generate() -> Self {
        use base64::Engine;
        use rand::Rng;
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let sum = token_checksum(&body);
        Self(Secret::new(format!("jgt_{body}{sum}")))
    }

    /// Check the shape and checksum of a presented token (before any lookup).
    pub fn parse(s: &str) -> Result<Self, TokenFormatError> {
        let s = s.trim();
        let rest = s.strip_prefix("jgt_").ok_or(TokenFormatError::Prefix)?;
        if rest.len() != TOKEN_BODY + TOKEN_SUM || !rest.is_ascii() {
            return Err(TokenFormatError::Length);
        }
        let (body, sum) = rest.split_at(TOKEN_BODY);
        if !crypto::ct_eq(token_checksum(body).as_bytes(), sum.as_bytes()) {
            return Err(TokenFormatError::Checksum);
        }
        Ok(Self(Secret::new(s)))
    }

    /// Hex SHA-256 of the token: the only form that is stored.
    pub fn hash(&self) -> String {
        hex::encode(crypto::sha256(self.0.expose().as_bytes()))
    }

    /// The token text, for handing to the requester once.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for GrantToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GrantToken(***)")
    }
}

/// Unix time in seconds (UTC).
pub type UnixTime = i64;

/// Seconds since the Unix epoch, now.
pub fn now() -> UnixTime {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// RFC 3339 text for a Unix time.
pub fn rfc3339(t: UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

/// RFC 3339 text with milliseconds, UTC (`2026-11-29T01:46:46.123Z`).
pub fn rfc3339_millis(t: time::OffsetDateTime) -> String {
    use std::fmt::Write as _;
    let t = t.to_offset(time::UtcOffset::UTC);
    let mut s = String::with_capacity(24);
    write_date_time(&mut s, t);
    let _ = write!(s, ".{:03}Z", t.millisecond());
    s
}

/// `YYYY-MM-DDTHH:MM:SS` of `t` (taken as UTC).
fn write_date_time(s: &mut String, t: time::OffsetDateTime) {
    use std::fmt::Write as _;
    let _ = write!(
        s,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month() as u8,
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
}

/// The first `n` characters of `s` (all of it when shorter), borrowed.
pub fn first_chars(s: &str, n: usize) -> &str {
    // `n` bytes hold at most `n` characters: most strings are whole at a glance.
    if s.len() <= n {
        return s;
    }
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// Now, as [`rfc3339_millis`] writes it. Runs per HTTP exchange: the date and time of day are
/// computed once per second per thread, only the milliseconds each time.
pub fn rfc3339_millis_now() -> String {
    use std::cell::RefCell;
    thread_local! {
        /// The last second formatted on this thread: `(unix second, "YYYY-MM-DDTHH:MM:SS")`.
        static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
    }
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let (secs, millis) = (since.as_secs() as i64, since.subsec_millis());
    let mut s = String::with_capacity(24);
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs {
            let t = time::OffsetDateTime::from_unix_timestamp(secs)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            text.clear();
            write_date_time(text, t);
            *second = secs;
        }
        s.push_str(text);
    });
    s.push('.');
    for d in [millis / 100, millis / 10 % 10, millis % 10] {
        s.push(char::from(b'0' + d as u8));
    }
    s.push('Z');
    s
}

/// The address a limit applies to: IPv4 addresses as they are, IPv6 addresses by their /64
/// (one host commonly holds a whole /64, so per-address limits would not hold it).
pub fn source_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(_) => ip,
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                std::net::IpAddr::from([s[0], s[1], s[2], s[3], 0, 0, 0, 0])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_chars_counts_characters_not_bytes() {
        assert_eq!(first_chars("/users", 2048), "/users");
        assert_eq!(first_chars("/users", 3), "/us");
        assert_eq!(first_chars("h\u{e9}llo", 2), "h\u{e9}");
        // Six bytes, three characters: whole under a limit of four.
        assert_eq!(first_chars("\u{e9}\u{e9}\u{e9}", 4), "\u{e9}\u{e9}\u{e9}");
        assert_eq!(first_chars("", 0), "");
    }

    #[test]
    fn the_cached_clock_formats_as_rfc3339_millis() {
        use time::format_description::well_known::Rfc3339;
        let before = time::OffsetDateTime::now_utc() - time::Duration::milliseconds(1);
        // Twice: the second call reuses this thread's cached date and time of day.
        let (first, second) = (rfc3339_millis_now(), rfc3339_millis_now());
        let after = time::OffsetDateTime::now_utc();
        for got in [&first, &second] {
            assert_eq!(got.len(), 24, "{got}");
            let t = time::OffsetDateTime::parse(got, &Rfc3339).expect("RFC 3339");
            assert!(
                before <= t && t <= after,
                "{got} is not between {before} and {after}"
            );
        }
        assert!(first <= second, "{first} then {second}");
    }

    #[test]
    fn ttl_parses_human_durations() {
        assert_eq!("90s".parse::<Ttl>().unwrap().as_secs(), 90);
        assert_eq!("15m".parse::<Ttl>().unwrap().as_secs(), 900);
        assert_eq!("1h30m".parse::<Ttl>().unwrap().as_secs(), 5400);
        assert_eq!("1h30m".parse::<Ttl>().unwrap().to_string(), "1h30m");
        for bad in [
            "",
            "15",
            "m",
            "0s",
            "15x",
            "-5m",
            "99999999999999999999d",
            "400d",
        ] {
            assert!(bad.parse::<Ttl>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn grant_tokens_round_trip_and_reject_damage() {
        let t = GrantToken::generate();
        assert!(t.expose().starts_with("jgt_"));
        assert_eq!(t.expose().len(), 4 + 43 + 6);
        assert_eq!(GrantToken::parse(t.expose()).unwrap().hash(), t.hash());
        let mut damaged = t.expose().to_string().into_bytes();
        damaged[10] = if damaged[10] == b'A' { b'B' } else { b'A' };
        let damaged = String::from_utf8(damaged).unwrap();
        assert_eq!(
            GrantToken::parse(&damaged).unwrap_err(),
            TokenFormatError::Checksum
        );
        assert_eq!(
            GrantToken::parse("jgk_abc").unwrap_err(),
            TokenFormatError::Prefix
        );
        assert_eq!(
            GrantToken::parse("jgt_short").unwrap_err(),
            TokenFormatError::Length
        );
        assert_eq!(format!("{t:?}"), "GrantToken(***)");
    }

    #[test]
    fn ids_have_prefix_and_parse_back() {
        let id = RequestId::generate();
        assert!(id.as_str().starts_with("req_"));
        assert_eq!(RequestId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(RequestId::parse("req_../../etc"), None);
        assert_eq!(GrantId::parse(id.as_str()), None);
    }

    #[test]
    fn names_reject_control_and_path_characters() {
        assert!("alice".parse::<UserName>().is_ok());
        assert!("INC-7".parse::<TicketRef>().is_ok());
        let rt: TicketRef = "rt:42".parse().unwrap();
        assert_eq!((rt.system(), rt.local_id()), (Some("rt"), "42"));
        assert_eq!("OPS-1".parse::<TicketRef>().unwrap().system(), None);
        for bad in ["rt:", ":42", "rt:4:2", "rt:a b", "r t:42"] {
            assert!(bad.parse::<TicketRef>().is_err(), "{bad}");
        }
        assert!("a b".parse::<UserName>().is_err());
        assert!("../x".parse::<TargetName>().is_err());
        assert!("x\n".parse::<TaskName>().is_err());
    }
}
