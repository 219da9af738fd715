//! The OpenAPI document against the live API: schemathesis generates requests from the
//! document (valid ones and broken ones) and checks that every answer is one the document
//! promises, with the body it describes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::flows::{approve, open_ticket, pending};
use crate::harness::{Gateway, Opts, api_key, error_message};

/// Test cases per operation and phase: enough to find what the document gets wrong, few enough
/// that the run takes about a minute on two cores.
const MAX_EXAMPLES: &str = "20";

/// How long the whole schemathesis run may take before the test gives up on it.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The operations that need an API key: all but health, this document and the webhooks.
const KEYED_OPERATIONS: &str = r"^/(metrics|api/v1/(?!health$|openapi\.json$|tickets/webhook/).+)$";

/// schemathesis' configuration. Every built-in check runs: that is the default when the command
/// line names none (`--checks all` would also override the exceptions below, which are the
/// only ones, each for the reason given).
fn config() -> String {
    format!(
        r#"
# The API answers failed authentications from one address with 429 once there were 20 in a
# minute (src/api/auth.rs), as the document says. These two checks probe every keyed operation
# without a key and with a wrong one, more than 20 requests in all, and accept only 401 or 403
# for them. `documented_routes_exist_and_metrics_count_requests` checks that each documented
# operation refuses a request without a key; the webhooks keep both checks.
[[operations]]
include-path-regex = '{KEYED_OPERATIONS}'
checks.ignored_auth.enabled = false
checks.missing_required_header.enabled = false

# A ttl is valid up to 366 days in all (break-glass: up to break_glass.max_ttl), a bound on a
# sum of components that no JSON Schema pattern can state: the document says so in words, and
# the server answers a longer one with 400, which schemathesis takes for a valid input refused.
[[operations]]
include-path-regex = '^/api/v1/(requests|break-glass)$'
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429"]
"#
    )
}

/// A `[[users]]` entry whose API key is [`api_key`]`(name)`.
fn user_toml(name: &str, roles: &str) -> String {
    let hash = jitgate::crypto::sha256_hex(api_key(name).as_bytes());
    format!("\n[[users]]\nname = \"{name}\"\nroles = {roles}\napi_key_sha256 = \"{hash}\"\n")
}

/// Run `cmd` in `dir` until it exits or [`RUN_TIMEOUT`] passes; returns its exit code and its
/// output (stdout and stderr, which go to one file so that they stay in order).
fn run_in(mut cmd: Command, dir: &Path) -> (i32, String) {
    let log = dir.join("schemathesis.log");
    let file = std::fs::File::create(&log).expect("schemathesis log");
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log handle"))
        .stderr(file);
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run schemathesis ({e}); install it with `pip install schemathesis==4.32.5`")
    });
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for schemathesis") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis did not finish within {RUN_TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    (status.code().unwrap_or(-1), out)
}

#[test]
fn schemathesis_finds_no_failures_against_the_live_api() {
    let extra = format!(
        "\n[break_glass]\ntasks = [\"reset-credential\"]\n{}",
        user_toml("brenda", "[\"technician\", \"break-glass\"]")
    );
    // The fuzzing sends thousands of bad tokens to the admission check; past the default ten
    // a minute each would be answered after a second (that throttle has its own tests).
    let mut gw = Gateway::start(
        Opts::default()
            .webhook_secret("openapi-test-webhook-secret")
            .gateway("admission_failures_per_minute = 1000000")
            .extra(&extra),
    );

    // Something for the listing operations to return and their links to lead to: a pending
    // request, a grant, a break-glass use awaiting review.
    open_ticket(&gw, "INC-1", "alice");
    pending(&gw, "alice", "reset-credential", "dc-01", "INC-1");
    let id = pending(&gw, "alice", "reset-credential", "dc-01", "INC-1");
    let (code, v, err) = approve(&gw, "bob", &id);
    assert_eq!(code, 0, "approve {id}: {v} {err}");
    let (code, v, err) = gw.cli_json(
        "brenda",
        &[
            "break-glass",
            "--target",
            "dc-01",
            "--reason",
            "dc-01 is down",
        ],
    );
    assert_eq!(code, 0, "break-glass: {v} {err}");

    // Its working files (.hypothesis, .schemathesis) stay in the gateway's temp directory.
    let dir = gw.path("schemathesis");
    std::fs::create_dir_all(dir.join("home")).expect("schemathesis dir");
    let config_file = dir.join("schemathesis.toml");
    std::fs::write(&config_file, config()).expect("schemathesis.toml");

    let version = Command::new("schemathesis")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    assert!(
        version.contains("version 4."),
        "this test needs schemathesis 4 (`pip install schemathesis==4.32.5`); found: {version:?}"
    );

    let mut cmd = Command::new("schemathesis");
    cmd.arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", gw.url()))
        .arg("--tls-verify")
        .arg(gw.ca())
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", api_key("admin")))
        .args(["--max-examples", MAX_EXAMPLES])
        // One connection at a time: the API caps unauthenticated connections per address.
        .args(["--workers", "1"])
        .args(["--request-timeout", "10"])
        // Server-sent event streams stay open by design (up to an hour): their documented
        // shape is checked by the console tests that read them.
        .args(["--exclude-path-regex", "/(events|live)$"])
        .arg("--no-color")
        .env("HOME", dir.join("home"))
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .env_remove("SCHEMATHESIS_HOOKS");
    let started = Instant::now();
    let (code, out) = run_in(cmd, &dir);
    assert_eq!(
        code,
        0,
        "schemathesis found failures (exit {code}, after {:?}):\n{out}",
        started.elapsed()
    );
    assert!(
        out.contains("Tested: "),
        "schemathesis tested no operation:\n{out}"
    );

    // Nothing it sent broke the gateway: no panic, and the audit chain still verifies.
    assert!(
        !gw.logs().contains("panicked"),
        "the gateway panicked:\n{}",
        gw.logs()
    );
    assert!(
        gw.stop(),
        "jitgate serve did not stop within 10 s of SIGTERM"
    );
    let (code, out, err) = gw.run(&["audit", "verify"], &[]);
    assert_eq!(code, 0, "audit verify after the run: {out} {err}");
}

/// Inputs the document refuses that the server took: `{}` and `""` unassigned a ticket (the
/// assignee is required, `null` unassigns), an unknown assignee was a 400 for a well-formed
/// name, a path segment that is not UTF-8 got a text/plain answer, and a kill reason could
/// carry control characters to the user's terminal and the audit log.
#[test]
fn assign_needs_an_assignee_paths_decode_to_json_errors_and_kill_reasons_are_plain_text() {
    let gw = Gateway::start(Opts::default());
    open_ticket(&gw, "INC-2", "alice");
    let assignee = || {
        let (s, v) = gw.raw(
            "GET",
            "/api/v1/tickets/INC-2",
            Some(&api_key("admin")),
            &[],
            None,
        );
        assert_eq!(s, 200, "{v}");
        v["assignee"].clone()
    };
    let assign = |body: &[u8]| gw.raw_json("POST", "/api/v1/tickets/INC-2/assign", "admin", body);

    let (s, v) = assign(b"{}");
    assert!(error_message(s, &v).contains("assignee"), "{s} {v}");
    let (s, v) = assign(br#"{"assignee": ""}"#);
    assert_eq!(s, 400, "{v}");
    assert_eq!(
        assignee(),
        "alice",
        "a refused assignment changed the ticket"
    );
    let (s, v) = assign(br#"{"assignee": "mallory"}"#);
    assert_eq!(s, 404, "{v}");
    assert!(error_message(s, &v).contains("mallory"), "{v}");
    let (s, v) = assign(br#"{"assignee": null}"#);
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["assignee"], serde_json::Value::Null, "{v}");
    assert_eq!(assignee(), serde_json::Value::Null);

    for (method, path) in [
        ("GET", "/api/v1/tickets/%FF"),
        ("POST", "/api/v1/requests/%C3%28/approve"),
    ] {
        let (s, v) = gw.raw(method, path, Some(&api_key("bob")), &[], None);
        assert_eq!(s, 400, "{method} {path}: {v}");
        error_message(s, &v);
    }

    let (s, v) = gw.raw_json(
        "POST",
        "/api/v1/sessions/ses_aaaaaaaaaaaaaaaa/kill",
        "admin",
        br#"{"reason": "done\u001b[2J\u001b[31mgranted"}"#,
    );
    assert_eq!(s, 400, "{v}");
    assert!(error_message(s, &v).contains("control characters"), "{v}");
}
