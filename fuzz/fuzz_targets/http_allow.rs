//! The HTTPS gateway's allow-list: `https::http_allowed(task, method, path)` with the task's
//! `http_allow` rules, and the pattern matcher `https::path_matches` under it.
//!
//! Input: lines; the last is `METHOD /path` (the raw request path, as the gateway passes it),
//! the others are the task's rules (`METHOD /pattern`). Besides "never panics":
//! - `path_matches` agrees with a reference matcher written from its documentation (`*` is one
//!   non-empty segment, a trailing `/*` any rest, including none);
//! - an allowed request has no dot-segment or empty segment, and one of the rules admits it;
//! - an allowed path stays allowed once `%2e` is decoded to `.` (the same URI per RFC 3986
//!   §6.2.2.2, and what a target may route on): percent-encoded dot-segments must not get past
//!   the "refuse dot-segments outright" check.
#![no_main]

use http::Method;
use jitgate::config::TaskConfig;
use jitgate::https::{http_allowed, path_matches};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    let Some(request) = lines.pop() else { return };
    let Some((method, path)) = request.split_once(' ') else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let rules: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    let task: TaskConfig = serde_json::from_value(serde_json::json!({
        "name": "fuzz-task",
        "targets": ["console"],
        "max_ttl": "15m",
        "http_allow": rules,
    }))
    .expect("task config");

    for rule in &rules {
        let mut parts = rule.split_whitespace();
        if let (Some(_), Some(pattern)) = (parts.next(), parts.next()) {
            assert_eq!(
                path_matches(pattern, path),
                reference_match(pattern, path),
                "path_matches({pattern:?}, {path:?})"
            );
        }
    }

    let allowed = http_allowed(&task, &method, path);
    if allowed {
        for seg in path.split('/').skip(1) {
            assert!(
                seg != "." && seg != "..",
                "allowed a dot-segment in {path:?}"
            );
        }
        assert!(!path.contains("//"), "allowed an empty segment in {path:?}");
        assert!(rules.iter().any(|r| {
            let mut p = r.split_whitespace();
            matches!((p.next(), p.next()), (Some(m), Some(pat))
                if (m == "*" || m == method.as_str()) && reference_match(pat, path))
        }));
        if !rules.iter().any(|r| r.contains('%')) {
            let decoded = jitgate_fuzz::decode_dots(path);
            assert!(
                http_allowed(&task, &method, &decoded),
                "{method} {path:?} is allowed, but it is the same URI as {decoded:?}, which is refused"
            );
        }
    }
});

/// Segment-by-segment matching, written from the documentation rather than the code.
fn reference_match(pattern: &str, path: &str) -> bool {
    let (pattern, any_rest) = match pattern.strip_suffix("/*") {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let pat: Vec<&str> = pattern.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    if segs.len() < pat.len() || (!any_rest && segs.len() != pat.len()) {
        return false;
    }
    pat.iter()
        .zip(&segs)
        .all(|(p, s)| if *p == "*" { !s.is_empty() } else { p == s })
}
