//! `GrantToken::parse`, as the SSH prompt, the HTTPS bearer header and the login form call it.
//!
//! Input: any bytes (taken as text where they are UTF-8). Besides "never panics":
//! - a token that parses is the trimmed input, `jgt_` + 49 ASCII characters, and parses again to
//!   the same token; its hash is 64 hex digits; neither `Debug` nor `{:?}` shows it;
//! - a token built from the input's bytes the way `GrantToken::generate` builds one parses, and
//!   replacing any one character of its checksum with another base64url character breaks it.
#![no_main]

use base64::Engine as _;
use jitgate::types::{GrantToken, TokenFormatError};
use libfuzzer_sys::fuzz_target;

const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        check_presented(s);
    }
    check_built(data);
});

fn check_presented(s: &str) {
    match GrantToken::parse(s) {
        Ok(t) => {
            let text = t.expose();
            assert_eq!(text, s.trim(), "a parsed token is the trimmed input");
            assert!(text.starts_with("jgt_"));
            assert_eq!(text.len(), 53, "jgt_ + 43 body + 6 checksum");
            assert!(text.is_ascii());
            let again = GrantToken::parse(text).expect("a parsed token parses again");
            assert!(again == t, "parsing round-trips to the same token");
            let h = t.hash();
            assert_eq!(h.len(), 64);
            assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
            let dbg = format!("{t:?}");
            assert!(!dbg.contains(&text[4..]), "Debug must not print the token");
        }
        Err(e) => {
            let t = s.trim();
            match e {
                TokenFormatError::Prefix => assert!(!t.starts_with("jgt_")),
                TokenFormatError::Length => {
                    assert!(t.starts_with("jgt_"));
                    assert!(t.len() != 53 || !t.is_ascii());
                }
                TokenFormatError::Checksum => assert!(t.starts_with("jgt_") && t.len() == 53),
            }
            assert!(!e.to_string().is_empty());
        }
    }
}

/// Build a well-formed token from 32 input bytes (as `generate` does) and damage its checksum.
fn check_built(data: &[u8]) {
    if data.len() < 34 {
        return;
    }
    let mut raw = [0u8; 32];
    raw.copy_from_slice(&data[..32]);
    let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    let digest = jitgate::crypto::sha256(body.as_bytes());
    let mut sum = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..6]);
    sum.truncate(6);
    let token = format!("jgt_{body}{sum}");
    let parsed = GrantToken::parse(&token)
        .unwrap_or_else(|e| panic!("a token built like generate() does not parse: {e}"));
    assert_eq!(parsed.expose(), token);
    // Surrounding whitespace (a paste with a newline) is accepted and dropped.
    let padded = format!(" \t{token}\r\n");
    assert_eq!(
        GrantToken::parse(&padded).map(|t| t.expose().to_string()),
        Ok(token.clone())
    );

    let pos = 4 + 43 + (data[32] as usize % 6);
    let replacement = B64URL[data[33] as usize % 64];
    if token.as_bytes()[pos] != replacement {
        let mut damaged = token.into_bytes();
        damaged[pos] = replacement;
        let damaged = String::from_utf8(damaged).expect("ASCII");
        assert_eq!(
            GrantToken::parse(&damaged).err(),
            Some(TokenFormatError::Checksum),
            "a token with a changed checksum character must be refused"
        );
    }
}
