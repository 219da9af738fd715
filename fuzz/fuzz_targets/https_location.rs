//! The HTTPS gateway's URL rewriting, on a real `https::forward::Upstream` for each of a few
//! target URLs: `rewrite_location` (a target's redirect to itself must stay on the gateway) and
//! `uri_for` (the client's request URI under the target's base path).
//!
//! Input: first byte picks the target; then lines: `Location` value, gateway `Host`, client
//! request URI. Besides "never panics":
//! - `rewrite_location` rewrites exactly the locations on the target's origin (followed by the
//!   end, `/` or `?`), and the result is on the gateway: `https://<Host>` then nothing, `/...` or
//!   `?...`, so it never names another host;
//! - `uri_for` accepts every request URI `http` parses and yields an origin-form URI under the
//!   target's base path (at a segment boundary) with the client's query; an origin-form request
//!   path is appended to the base path as it is.
#![no_main]

use std::sync::OnceLock;

use jitgate::https::forward::Upstream;
use libfuzzer_sys::fuzz_target;

/// (target URL, its origin, its base path)
const TARGETS: &[(&str, &str, &str)] = &[
    ("https://idp.example", "https://idp.example", ""),
    (
        "https://10.0.0.9:8443/console/",
        "https://10.0.0.9:8443",
        "/console",
    ),
    (
        "https://console.example/a/b",
        "https://console.example",
        "/a/b",
    ),
    (
        "https://idp.example:443/admin",
        "https://idp.example",
        "/admin",
    ),
];

fn upstreams() -> &'static Vec<Upstream> {
    static UP: OnceLock<Vec<Upstream>> = OnceLock::new();
    UP.get_or_init(|| {
        let certs = jitgate_fuzz::scratch_dir("https-location").join("certs");
        let report = jitgate::pki::init(&certs, "gw.example").expect("jitgate init");
        let keys = jitgate::pki::Keys::load(&certs).expect("load keys");
        let (cert, key) = keys
            .mint_client_cert("alice", "gr_aaaaaaaaaaaaaaaa", jitgate::types::now() + 3600)
            .expect("mint a client certificate");
        TARGETS
            .iter()
            .map(|(url, _, _)| {
                Upstream::new(url, &report.ca_bundle, &cert, &key).expect("upstream")
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let i = pick as usize % TARGETS.len();
    let (_, origin, base) = TARGETS[i];
    let up = &upstreams()[i];
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let mut lines = text.split('\n');
    let location = lines.next().unwrap_or("");
    let host = lines.next().unwrap_or("gw.example");
    let client = lines.next().unwrap_or("/");

    if host.parse::<http::uri::Authority>().is_ok() {
        let gateway = format!("https://{host}");
        let on_target = location
            .strip_prefix(origin)
            .is_some_and(|r| r.is_empty() || r.starts_with('/') || r.starts_with('?'));
        match up.rewrite_location(location, &gateway) {
            Some(new) => {
                assert!(on_target, "rewrote {location:?}, which is not on {origin}");
                let rest = new
                    .strip_prefix(&gateway)
                    .unwrap_or_else(|| panic!("{new:?} is not on the gateway {gateway}"));
                assert!(
                    rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
                    "Location {location:?} (target base {base:?}) became {new:?}, which leaves the gateway {gateway}"
                );
            }
            None => assert!(!on_target, "left {location:?} on the target {origin}"),
        }
    }

    // `OPTIONS *` (asterisk-form) becomes `<base>*`; harmless, and left out here.
    if let Ok(uri) = client.parse::<http::Uri>()
        && uri != "*"
    {
        let out = up
            .uri_for(&uri)
            .unwrap_or_else(|e| panic!("uri_for refused {client:?}: {e}"));
        assert!(
            out.scheme().is_none() && out.authority().is_none(),
            "{out} is not origin-form"
        );
        // Under the base path, at a segment boundary, with the client's query.
        let under = out.path().strip_prefix(base);
        assert!(
            under.is_some_and(|r| r.is_empty() || r.starts_with('/') || base.is_empty()),
            "{client:?} went to {out}, outside the target's base path {base:?}"
        );
        assert_eq!(out.query(), uri.query(), "the query of {client:?}");
        // An origin-form request path (what clients send) is appended as it is.
        if let Some(pq) = uri.path_and_query().filter(|p| p.as_str().starts_with('/')) {
            let sent = out.path_and_query().map_or("/", |p| p.as_str());
            assert_eq!(sent, format!("{base}{pq}"));
        }
    }
});
