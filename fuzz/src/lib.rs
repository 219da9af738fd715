//! Helpers the fuzz targets share: the example configuration, input splitting, and the small
//! reference models the targets check jitgate's answers against.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jitgate::config::Config;

/// The repository's example configuration, as shipped.
pub const EXAMPLE_CONFIG: &str = include_str!("../../config/jitgate.toml");

/// Where the example configuration lives, so that its relative paths (policy file, target CA)
/// resolve to files that exist.
pub fn example_config_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/jitgate.toml")
}

/// The example configuration, parsed once.
pub fn example_config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| {
        Config::from_text(EXAMPLE_CONFIG, &example_config_path())
            .unwrap_or_else(|e| panic!("the example configuration does not load: {e}"))
    })
}

/// A scratch directory for this fuzzing process: under `$JITGATE_FUZZ_SCRATCH` (scripts/fuzz.sh
/// makes one and removes it), else in memory when `/dev/shm` exists (the audit log and the cast
/// writer fsync).
pub fn scratch_dir(name: &str) -> PathBuf {
    let base = match std::env::var_os("JITGATE_FUZZ_SCRATCH") {
        Some(dir) => PathBuf::from(dir),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    let dir = base.join(format!("jitgate-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// Split `data` at the first `\n`: (first line, rest). No newline: (all, empty).
pub fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Whether `JITGATE_FUZZ_DEBUG` is set: targets then print what jitgate answered for each input
/// (run one input with `cargo fuzz run TARGET FILE` to see why it is accepted or refused).
pub fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("JITGATE_FUZZ_DEBUG").is_some())
}

/// A single-threaded Tokio runtime with timers and blocking tasks, built once per process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a Tokio runtime")
    })
}

/// Hex HMAC-SHA256, as webhook senders compute it.
pub fn hmac_hex(secret: &str, signed: &[u8]) -> String {
    hex::encode(jitgate::crypto::hmac_sha256(secret.as_bytes(), signed))
}

/// `%2e` / `%2E` decoded to `.`: an equivalent URI path per RFC 3986 §6.2.2.2 (`.` is
/// unreserved), which a target may well normalise before routing.
pub fn decode_dots(path: &str) -> String {
    path.replace("%2e", ".").replace("%2E", ".")
}

/// Whether a `Set-Cookie` value still carries a `Domain` attribute as a browser reads it
/// (RFC 6265 §5.2: split on `;`, the first part is the cookie's own name=value; an attribute's
/// name is trimmed of whitespace and compared case-insensitively; an empty value is ignored).
pub fn set_cookie_has_domain(value: &[u8]) -> bool {
    value
        .split(|&b| b == b';')
        .skip(1)
        .any(|attr| match attr.iter().position(|&b| b == b'=') {
            Some(i) => {
                attr[..i].trim_ascii().eq_ignore_ascii_case(b"domain")
                    && !attr[i + 1..].trim_ascii().is_empty()
            }
            None => false,
        })
}

pub mod webhook {
    //! The shared body of the three webhook targets: each delivery is signed correctly, so what is
    //! fuzzed is the provider's payload parser behind the signature check.

    use http::{HeaderMap, HeaderValue};
    use jitgate::ticket::webhook::{Provider, WebhookError, verify_and_parse};
    use jitgate::types::{Secret, TicketRef};
    use serde_json::Value;

    /// Any secret of 16 characters or more.
    pub const SECRET: &str = "fuzz-webhook-secret-0123456789";
    /// The gateway's clock for generic and ServiceNow deliveries.
    pub const NOW: i64 = 1_780_000_000;

    /// Sign `body` as `provider` does, verify and parse it, and check the answer against the
    /// body's JSON.
    pub fn check(provider: Provider, body: &[u8]) {
        let cfg = crate::example_config();
        let secret = Secret::new(SECRET);
        let mut headers = HeaderMap::new();
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let (signed, now) = match provider {
            Provider::Generic | Provider::ServiceNow => {
                let ts = NOW.to_string();
                let mut signed = format!("{ts}.").into_bytes();
                signed.extend_from_slice(body);
                headers.insert("x-jitgate-timestamp", HeaderValue::from_str(&ts).unwrap());
                (signed, NOW)
            }
            Provider::Jira => {
                // The body carries its own time: let the gateway's clock agree with it.
                let ts_ms = json
                    .as_ref()
                    .and_then(|v| v.get("timestamp"))
                    .and_then(Value::as_i64);
                (body.to_vec(), ts_ms.map_or(NOW, |ms| ms / 1000))
            }
        };
        let sig = format!("sha256={}", crate::hmac_hex(SECRET, &signed));
        let sig_header = match provider {
            Provider::Jira => "x-hub-signature",
            _ => "x-jitgate-signature",
        };
        headers.insert(sig_header, HeaderValue::from_str(&sig).unwrap());

        let result = verify_and_parse(provider, cfg, &secret, &headers, body, now);
        if crate::debug() {
            eprintln!("{}: {result:?}", provider.as_str());
        }
        if let Err(e) = &result {
            assert!(
                matches!(
                    e,
                    WebhookError::BadPayload(..) | WebhookError::BadTimestamp(_)
                ),
                "a correctly signed, fresh delivery was refused for something other than its body: {e}"
            );
            if let WebhookError::BadTimestamp(_) = e {
                assert_eq!(
                    provider,
                    Provider::Jira,
                    "generic/servicenow timestamps are valid here"
                );
                assert!(
                    json.as_ref()
                        .and_then(|v| v.get("timestamp"))
                        .and_then(Value::as_i64)
                        .is_none(),
                    "refused a Jira body whose timestamp is an integer"
                );
            }
        }
        match provider {
            Provider::Generic => check_generic(json.as_ref(), &result),
            Provider::ServiceNow => check_servicenow(json.as_ref(), &result),
            Provider::Jira => check_jira(json.as_ref(), &result),
        }
        if let Ok(d) = &result {
            assert!(
                d.key.starts_with(&format!("{}:", provider.as_str())),
                "{}",
                d.key
            );
            if let Some(u) = &d.update {
                assert_eq!(u.source, provider.as_str());
                assert!(u.title.as_ref().is_none_or(|t| t.chars().count() <= 200));
                if let Some(a) = &u.assignee {
                    assert!(
                        cfg.user(a).is_some(),
                        "assignee {a} is not a configured user"
                    );
                }
                assert!(u.id.as_str().parse::<TicketRef>().is_ok());
            }
        }

        // The same delivery with one body byte changed is refused for its signature.
        if !body.is_empty() {
            let mut tampered = body.to_vec();
            let last = tampered.len() - 1;
            tampered[last] ^= 0x01;
            let r = verify_and_parse(provider, cfg, &secret, &headers, &tampered, now);
            assert_eq!(
                r.err(),
                Some(WebhookError::BadSignature),
                "a tampered body was not refused"
            );
        }
    }

    type Result = std::result::Result<jitgate::ticket::webhook::Delivery, WebhookError>;

    fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
        v.get(k).and_then(Value::as_str)
    }

    fn title_matches(got: &Option<String>, want: Option<&str>) {
        let want: Option<String> = want.map(|t| t.chars().take(200).collect());
        assert_eq!(got, &want, "the title is the body's, cut to 200 characters");
    }

    fn check_generic(json: Option<&Value>, result: &Result) {
        let Ok(d) = result else { return };
        let v = json.expect("an accepted generic body is JSON");
        let u = d
            .update
            .as_ref()
            .expect("a generic delivery carries an update");
        assert_eq!(Some(u.id.as_str()), str_field(v, "ticket"));
        let state = str_field(v, "state").expect("state is a string");
        assert!(matches!(state, "open" | "closed" | "resolved"), "{state}");
        assert_eq!(u.open, state == "open");
        title_matches(&u.title, str_field(v, "title"));
        assert!(v.as_object().is_some_and(|o| {
            o.keys()
                .all(|k| matches!(k.as_str(), "ticket" | "state" | "assignee" | "title"))
        }));
    }

    fn check_servicenow(json: Option<&Value>, result: &Result) {
        let number = json.and_then(|v| str_field(v, "number"));
        let state = json.and_then(|v| match v.get("state") {
            Some(Value::String(s)) => Some(s.trim().to_ascii_lowercase()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
        let valid_ref = number.is_some_and(|n| n.parse::<TicketRef>().is_ok());
        let expect_ok = valid_ref && state.is_some();
        assert_eq!(
            result.is_ok(),
            expect_ok,
            "ServiceNow body accepted/refused wrongly: {result:?}"
        );
        let Ok(d) = result else { return };
        let v = json.unwrap();
        let u = d
            .update
            .as_ref()
            .expect("a ServiceNow delivery carries an update");
        assert_eq!(Some(u.id.as_str()), number);
        let closed = matches!(
            state.as_deref().unwrap(),
            "6" | "7" | "8" | "resolved" | "closed" | "canceled" | "cancelled"
        );
        assert_eq!(u.open, !closed);
        title_matches(&u.title, str_field(v, "short_description"));
    }

    fn check_jira(json: Option<&Value>, result: &Result) {
        let Some(v) = json else {
            assert!(result.is_err(), "a Jira body that is not JSON was accepted");
            return;
        };
        let Some(_) = v.get("timestamp").and_then(Value::as_i64) else {
            assert!(
                result.is_err(),
                "a Jira body without an integer timestamp was accepted"
            );
            return;
        };
        let event = str_field(v, "webhookEvent").unwrap_or("");
        let relevant = matches!(
            event,
            "jira:issue_updated" | "jira:issue_created" | "jira:issue_deleted"
        );
        let key = v.get("issue").and_then(|i| str_field(i, "key"));
        let expect_ok = !relevant || key.is_some_and(|k| k.parse::<TicketRef>().is_ok());
        assert_eq!(
            result.is_ok(),
            expect_ok,
            "Jira body accepted/refused wrongly: {result:?}"
        );
        let Ok(d) = result else { return };
        if !relevant {
            assert!(d.update.is_none(), "event {event:?} must be ignored");
            return;
        }
        let u = d.update.as_ref().expect("an issue event carries an update");
        assert_eq!(Some(u.id.as_str()), key);
        let fields = v.pointer("/issue/fields").unwrap_or(&Value::Null);
        let category = fields
            .pointer("/status/statusCategory/key")
            .and_then(Value::as_str)
            .unwrap_or("new");
        assert_eq!(u.open, category != "done" && event != "jira:issue_deleted");
        title_matches(&u.title, str_field(fields, "summary"));
    }
}
