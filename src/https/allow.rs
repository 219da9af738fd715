//! A task's HTTP allow-list: `http_allow` rules (`"METHOD /path"`, `*` one segment, a trailing
//! `/*` the rest) matched against a request's path, and the paths refused outright because a
//! target could route them elsewhere than they read.

use http::Method;

use crate::config::TaskConfig;

/// Whether `path` matches a `/...` pattern where `*` is one segment and a trailing `/*` is any
/// rest.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix("/*") {
        if !path_matches_exact(prefix, path, true) {
            return false;
        }
        return true;
    }
    path_matches_exact(pattern, path, false)
}

fn path_matches_exact(pattern: &str, path: &str, prefix: bool) -> bool {
    let (pat, segs) = (pattern.split('/').count(), path.split('/').count());
    if segs < pat || (!prefix && segs != pat) {
        return false;
    }
    pattern
        .split('/')
        .zip(path.split('/'))
        .all(|(p, s)| p == "*" && !s.is_empty() || p == s)
}

/// `s` with `%XX` escapes decoded; an escape that is not two hex digits stays as it is.
pub(crate) fn percent_decode_lossy(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Whether `path` reaches a place other than it seems: a dot-segment or an empty segment as
/// written or once percent-decoded (`%2e%2e` is `..` to most web servers), an encoded slash or
/// backslash (which some targets decode into a new segment), a backslash, or NUL.
fn ambiguous_path(path: &str) -> bool {
    let misleads = |p: &str| {
        p.contains(['\\', '\0']) || p.contains("//") || p.split('/').any(|s| s == ".." || s == ".")
    };
    if !path.contains('%') {
        // Nothing to decode (most paths, checked on every request): it reads as written.
        return misleads(path);
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return true;
    }
    let decoded = percent_decode_lossy(path);
    let Ok(decoded) = std::str::from_utf8(&decoded) else {
        return true;
    };
    misleads(path) || misleads(decoded)
}

/// Whether the task's `http_allow` admits `method path`. Rules match the path as written; a
/// path that a target could route elsewhere than it reads (see [`ambiguous_path`]) is refused
/// rather than guessed at.
pub fn http_allowed(task: &TaskConfig, method: &Method, path: &str) -> bool {
    if ambiguous_path(path) {
        return false;
    }
    task.http_allow.iter().any(|rule| {
        let mut parts = rule.split_whitespace();
        match (parts.next(), parts.next()) {
            (Some(m), Some(p)) => (m == "*" || m == method.as_str()) && path_matches(p, path),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(rules: &[&str]) -> TaskConfig {
        let text = format!(
            "[gateway]\npublic_name = \"gw\"\n[[targets]]\nname = \"c\"\nkind = \"https\"\nurl = \"https://127.0.0.1:1\"\nserver_ca = \"/etc/hostname\"\n[[tasks]]\nname = \"t\"\ntargets = [\"c\"]\nhttp_allow = [{}]\nmax_ttl = \"1h\"\n",
            rules
                .iter()
                .map(|r| format!("{r:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        crate::config::Config::from_text(&text, std::path::Path::new("/x/j.toml"))
            .unwrap()
            .tasks
            .remove(0)
    }

    #[test]
    fn allow_list_matches_methods_and_segments() {
        let t = task(&["GET /*", "POST /users/*/unlock"]);
        assert!(http_allowed(&t, &Method::GET, "/"));
        assert!(http_allowed(&t, &Method::GET, "/a/b/c"));
        assert!(http_allowed(&t, &Method::POST, "/users/dave/unlock"));
        assert!(!http_allowed(&t, &Method::POST, "/users/dave/delete"));
        assert!(!http_allowed(&t, &Method::POST, "/users//unlock"));
        assert!(!http_allowed(&t, &Method::DELETE, "/users/dave/unlock"));
        assert!(!http_allowed(&t, &Method::GET, "/a/../b"));
        // Found by the `http_allow` fuzz target (fuzz/regressions/http_allow/): encoded
        // dot-segments and slashes are what the target routes, so they are matched decoded.
        let t = task(&["GET /reports/*"]);
        assert!(http_allowed(&t, &Method::GET, "/reports/q%31"));
        assert!(!http_allowed(&t, &Method::GET, "/reports/%2e%2e/admin"));
        assert!(!http_allowed(&t, &Method::GET, "/reports/%2E./admin"));
        assert!(!http_allowed(&t, &Method::GET, "/reports/a%2f..%2fadmin"));
        assert!(!http_allowed(&t, &Method::GET, "/reports/a%5c..%5cadmin"));
        // With nothing to decode, the path as written is screened the same way.
        assert!(!http_allowed(&t, &Method::GET, "/reports/./admin"));
        assert!(!http_allowed(&t, &Method::GET, "/reports/a\\b"));
        assert!(!http_allowed(&t, &Method::GET, "/reports/a\0"));
        assert!(!http_allowed(&t, &Method::GET, "/reports//admin"));
        let t = task(&["GET /admin/*"]);
        assert!(http_allowed(&t, &Method::GET, "/admin/x"));
        assert!(!http_allowed(&t, &Method::GET, "/adminx"));
        assert!(!http_allowed(&t, &Method::GET, "/other"));
    }
}
