//! `https::record::redact_query`: the query string written to a session's `http.jsonl`, with the
//! values of secret-looking parameters (`token`, `password`, `key`, ...) replaced by `***`.
//!
//! Input: a query string (text). Besides "never panics": the output has one pair per input
//! pair; a pair whose name contains a secret word, as written or once percent-decoded (the
//! target decodes it: `%74oken=` is `token=`), is `name=***` (the name may be lower-cased or
//! cut short); any other pair is kept (up to 512 characters).
#![no_main]

use jitgate::https::record::redact_query;
use libfuzzer_sys::fuzz_target;

const SECRET_WORDS: &[&str] = &[
    "token",
    "password",
    "passwd",
    "secret",
    "key",
    "auth",
    "session",
    "code",
    "sig",
    "credential",
];

fuzz_target!(|data: &[u8]| {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let out = redact_query(q);
    let (ins, outs): (Vec<&str>, Vec<&str>) = (q.split('&').collect(), out.split('&').collect());
    assert_eq!(
        ins.len(),
        outs.len(),
        "pairs were added or lost: {q:?} -> {out:?}"
    );
    for (i, o) in ins.iter().zip(&outs) {
        match i.split_once('=') {
            Some((k, _)) if is_secret(k) || is_secret(&percent_decode(k)) => {
                // `name=***`, the name possibly lower-cased or cut short, never the value.
                let name = o
                    .strip_suffix("=***")
                    .filter(|n| k.to_ascii_lowercase().starts_with(&n.to_ascii_lowercase()));
                assert!(
                    name.is_some(),
                    "the value of {k:?} (a secret parameter) was recorded: {o:?}"
                );
            }
            _ => assert_eq!(*o, i.chars().take(512).collect::<String>()),
        }
    }
});

fn is_secret(name: &str) -> bool {
    let k = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| k.contains(w))
}

/// `%XX` decoded (invalid escapes kept as they are), `+` as space, lossy UTF-8.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
