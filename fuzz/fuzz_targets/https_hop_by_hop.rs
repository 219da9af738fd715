//! `https::forward::strip_hop_by_hop`, run on every request to a target and every answer back.
//!
//! Input: first byte odd = keep `Upgrade` (a websocket request); then `name: value` lines,
//! appended in order (lines that are not a valid header are skipped). Besides "never panics":
//! - no hop-by-hop header (RFC 9110 §7.6.1) is left, except `Connection`/`Upgrade` when kept;
//! - every header named in a (text) `Connection` value is gone, except `Upgrade` when kept;
//! - every other header keeps all of its values, in order.
#![no_main]

use std::collections::HashSet;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use jitgate::https::forward::strip_hop_by_hop;
use libfuzzer_sys::fuzz_target;

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let keep_upgrade = flags & 1 == 1;
    let mut h = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        h.append(n, v);
    }
    let before = h.clone();
    // Names listed in Connection: those in text values must go; those in any value may go.
    let mut named_text = HashSet::new();
    let mut named_any = HashSet::new();
    for v in before.get_all(http::header::CONNECTION) {
        for token in v.as_bytes().split(|&b| b == b',') {
            if let Ok(n) = HeaderName::from_bytes(token.trim_ascii()) {
                if v.to_str().is_ok() {
                    named_text.insert(n.clone());
                }
                named_any.insert(n);
            }
        }
    }
    strip_hop_by_hop(&mut h, keep_upgrade);

    let kept_when_upgrading = |n: &str| keep_upgrade && (n == "upgrade" || n == "connection");
    for n in HOP_BY_HOP {
        assert!(
            kept_when_upgrading(n) || !h.contains_key(*n),
            "hop-by-hop header {n} was forwarded"
        );
    }
    for n in &named_text {
        assert!(
            (keep_upgrade && n == http::header::UPGRADE) || !h.contains_key(n),
            "{n}, named in Connection, was forwarded"
        );
    }
    for n in before.keys() {
        if HOP_BY_HOP.contains(&n.as_str()) || named_any.contains(n) {
            continue;
        }
        let was: Vec<_> = before.get_all(n).iter().collect();
        let now: Vec<_> = h.get_all(n).iter().collect();
        assert_eq!(was, now, "end-to-end header {n} was changed");
    }
});
