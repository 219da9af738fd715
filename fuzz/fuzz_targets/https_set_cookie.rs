//! `https::forward::rewrite_set_cookie`: every `Set-Cookie` a target answers with is rewritten
//! so that the cookie sticks to the gateway's host rather than the target's domain.
//!
//! Input: the raw header value (skipped when it is not a valid header value). Besides "never
//! panics":
//! - the rewritten value carries no `Domain` attribute as a browser reads one (RFC 6265 §5.2:
//!   name trimmed, case-insensitive, with a non-empty value);
//! - nothing else changes: the cookie's own `name=value` and every other attribute are kept,
//!   in order (an empty `Domain=`, which browsers ignore, may stay).
#![no_main]

use http::HeaderValue;
use jitgate::https::forward::rewrite_set_cookie;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = HeaderValue::from_bytes(data) else {
        return;
    };
    let out = rewrite_set_cookie(&v);
    assert!(
        !jitgate_fuzz::set_cookie_has_domain(out.as_bytes()),
        "the rewritten Set-Cookie {:?} still sets a Domain (from {:?})",
        String::from_utf8_lossy(out.as_bytes()),
        String::from_utf8_lossy(data),
    );
    // Apart from Domain attributes, nothing goes: the cookie's own name=value (even if its name
    // is "domain") and every other attribute stay, in order. A Domain with an empty value is
    // ignored by browsers, so it may stay or go.
    let parts: Vec<&[u8]> = data.split(|&b| b == b';').collect();
    let mut want: Vec<&[u8]> = vec![parts[0]];
    want.extend(parts[1..].iter().filter(|p| domain_attr(p).is_none()));
    let mut got: Vec<&[u8]> = out.as_bytes().split(|&b| b == b';').collect();
    if got.len() > 1 {
        let first = got.remove(0);
        got.retain(|p| domain_attr(p) != Some(false));
        got.insert(0, first);
    }
    assert_eq!(
        String::from_utf8_lossy(&got.join(&b';')),
        String::from_utf8_lossy(&want.join(&b';')),
        "only Domain attributes may be dropped"
    );
});

/// `Domain=...` as a browser reads an attribute (the name before `=`, trimmed, any case):
/// `Some(true)` with a value, `Some(false)` with an empty one, `None` for any other attribute.
fn domain_attr(attr: &[u8]) -> Option<bool> {
    let i = attr.iter().position(|&b| b == b'=')?;
    attr[..i]
        .trim_ascii()
        .eq_ignore_ascii_case(b"domain")
        .then(|| !attr[i + 1..].trim_ascii().is_empty())
}
