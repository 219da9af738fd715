//! `jitgate check` reports `file:line: reason` and exits 1 for a broken configuration or policy;
//! `jitgate init` creates keys once and never overwrites them.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::harness::{Gateway, Opts, Policy};

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in the text"))
        + 1
}

/// Replace `from` with `to` in the config; returns the new text.
fn edit_config(gw: &Gateway, from: &str, to: &str) -> String {
    let text = fs::read_to_string(&gw.config).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    let text = text.replacen(from, to, 1);
    fs::write(&gw.config, &text).unwrap();
    text
}

/// `check` must exit 1 and print `expect_prefix` followed (on the same line) by `reason`.
fn assert_check_fails(gw: &Gateway, expect_prefix: &str, reason: &str) {
    let (code, out, err) = gw.run(&["check"], &[]);
    assert_eq!(code, 1, "check accepted a broken setup: {out} {err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with(expect_prefix) && l.contains(reason)),
        "expected a line `{expect_prefix} ...{reason}...`, got:\n{err}"
    );
    let (code, out, _) = gw.run(&["--json", "check"], &[]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("not JSON: {out}"));
    assert_eq!(v["ok"], false, "{v}");
    assert!(
        v["problems"].as_array().is_some_and(|p| p.iter().any(|x| x
            .as_str()
            .is_some_and(|s| s.starts_with(expect_prefix) && s.contains(reason)))),
        "{v}"
    );
}

#[test]
fn check_accepts_the_test_configuration() {
    let gw = Gateway::prepare(Opts::default());
    let (code, out, err) = gw.run(&["check"], &[]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("ok (9 users, 3 targets, 3 tasks"), "{out}");
}

#[test]
fn check_names_file_and_line_of_a_task_with_a_missing_target() {
    let gw = Gateway::prepare(Opts::default());
    let text = edit_config(
        &gw,
        "targets = [\"tag:domain-controller\"]",
        "targets = [\"dc-99\"]",
    );
    let line = line_of(&text, "targets = [\"dc-99\"]");
    let prefix = format!("{}:{line}:", gw.config.display());
    assert_check_fails(&gw, &prefix, "no target is named \"dc-99\"");
    // serve refuses the same configuration and says so.
    let (code, _, err) = gw.run(&["serve"], &[]);
    assert_eq!(code, 1, "serve started with a broken configuration");
    assert!(err.contains("dc-99"), "{err}");
}

#[test]
fn check_names_file_and_line_of_config_mistakes() {
    let gw = Gateway::prepare(Opts::default());
    let text = edit_config(&gw, "max_ttl = \"15m\"", "max_ttl = \"15 minutes\"");
    let line = line_of(&text, "15 minutes");
    assert_check_fails(&gw, &format!("{}:{line}:", gw.config.display()), "duration");

    let gw = Gateway::prepare(Opts::default());
    let text = edit_config(
        &gw,
        "expiry_warning = \"60s\"",
        "expiry_warning = \"60s\"\ncolour = \"blue\"",
    );
    let line = line_of(&text, "colour");
    assert_check_fails(&gw, &format!("{}:{line}:", gw.config.display()), "colour");

    let gw = Gateway::prepare(Opts::default());
    let text = edit_config(
        &gw,
        "approvals = 2\nimpact = \"high\"",
        "approvals = 1\nimpact = \"high\"",
    );
    let line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == "approvals = 1")
        .map(|(i, _)| i + 1)
        .nth(1)
        .expect("the edited approvals line");
    assert_check_fails(&gw, &format!("{}:{line}:", gw.config.display()), "high");
}

#[test]
fn check_names_file_and_line_of_a_broken_policy() {
    let gw = Gateway::prepare(Opts::default().policy(Policy::PermitAll));
    let policy = gw.path("policy.cedar");
    fs::write(
        &policy,
        "// line 1\npermit (principal, action, resource);\nforbid (principal action, resource);\n",
    )
    .unwrap();
    assert_check_fails(&gw, &format!("{}:3:", policy.display()), "does not parse");

    fs::write(
        &policy,
        "// line 1\n\npermit (principal, action, resource)\nwhen { principal.shoe_size > 42 };\n",
    )
    .unwrap();
    let (code, _, err) = gw.run(&["check"], &[]);
    assert_eq!(
        code, 1,
        "a policy using an attribute outside the schema passed"
    );
    let prefix = format!("{}:", policy.display());
    let line = err
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no {prefix}LINE: in {err}"));
    let n: usize = line[prefix.len()..]
        .split(':')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        (3..=4).contains(&n),
        "schema error reported on line {n}: {line}"
    );
    assert!(line.contains("schema"), "{line}");

    // A policy file that does not exist is named by the config line that points at it.
    fs::remove_file(&policy).unwrap();
    let text = fs::read_to_string(&gw.config).unwrap();
    let line = line_of(&text, "files = [\"policy.cedar\"]");
    assert_check_fails(
        &gw,
        &format!("{}:{line}:", gw.config.display()),
        "does not exist",
    );
}

#[test]
fn init_creates_keys_once_and_never_overwrites() {
    let gw = Gateway::prepare(Opts::default());
    let (code, v, err) = {
        let (c, o, e) = gw.run(&["--json", "init"], &[]);
        (
            c,
            serde_json::from_str::<Value>(&o).unwrap_or(Value::Null),
            e,
        )
    };
    assert_eq!(code, 0, "{err}");
    assert!(
        v["created"].as_array().is_some_and(|c| !c.is_empty()),
        "{v}"
    );
    let ca = fs::read(gw.ca()).expect("certs/ca.pem");
    for key in [
        "audit_ed25519.pem",
        "server.key",
        "tls_ca.key",
        "ssh_user_ca",
    ] {
        let mode = fs::metadata(gw.path(&format!("certs/{key}")))
            .unwrap_or_else(|e| panic!("certs/{key}: {e}"))
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "certs/{key} is readable by others: {mode:o}"
        );
    }
    let (code, v, err) = {
        let (c, o, e) = gw.run(&["--json", "init"], &[]);
        (
            c,
            serde_json::from_str::<Value>(&o).unwrap_or(Value::Null),
            e,
        )
    };
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        v["created"],
        serde_json::json!([]),
        "second init created files: {v}"
    );
    assert_eq!(
        fs::read(gw.ca()).unwrap(),
        ca,
        "init overwrote certs/ca.pem"
    );

    // serve without keys refuses with a message pointing at init.
    let gw = Gateway::prepare(Opts::default());
    let (code, _, err) = gw.run(&["serve"], &[]);
    assert_eq!(code, 1, "serve started without keys");
    assert!(err.contains("init"), "{err}");
}

/// An `[oidc]` section for a provider nobody contacts (`check` reads files, not the network).
const OIDC: &str = r#"
[oidc]
issuer = "https://idp.example.test"
client_id = "jitgate"
client_secret = "a-long-client-secret-for-check"

[[oidc.role_mappings]]
group = "helpdesk"
roles = ["technician"]
"#;

#[test]
fn check_validates_oidc_and_explains_how_a_person_gets_roles() {
    let gw = Gateway::prepare(Opts::default().extra(OIDC));
    let (code, out, err) = gw.run(&["check"], &[]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.contains("sign-in: people through https://idp.example.test")
            && out.contains("plus the roles of a [[users]] entry of the same name"),
        "{out}"
    );

    let prefix = |gw: &Gateway, text: &str, needle: &str| {
        format!("{}:{}:", gw.config.display(), line_of(text, needle))
    };
    // An unknown key, a role that does not exist, a CA file that is not there.
    let gw = Gateway::prepare(Opts::default().extra(OIDC));
    let text = edit_config(&gw, "client_id = \"jitgate\"", "clientid = \"jitgate\"");
    assert_check_fails(&gw, &prefix(&gw, &text, "clientid"), "clientid");

    let gw = Gateway::prepare(
        Opts::default().extra(&OIDC.replace("[\"technician\"]", "[\"technican\"]")),
    );
    let text = std::fs::read_to_string(&gw.config).unwrap();
    assert_check_fails(&gw, &prefix(&gw, &text, "technican"), "technican");

    let gw = Gateway::prepare(Opts::default().extra(OIDC));
    let text = edit_config(
        &gw,
        "client_id = \"jitgate\"",
        "client_id = \"jitgate\"\nca = \"no-such-ca.pem\"",
    );
    assert_check_fails(&gw, &prefix(&gw, &text, "no-such-ca.pem"), "no-such-ca.pem");
}

#[test]
fn check_refuses_a_configuration_nobody_can_sign_in_to() {
    let gw = Gateway::prepare(Opts::default());
    let text = std::fs::read_to_string(&gw.config).unwrap();
    let keyless: String = text
        .lines()
        .filter(|l| !l.starts_with("api_key_sha256"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&gw.config, keyless).unwrap();
    let (code, _, err) = gw.run(&["check"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("nobody can sign in"), "{err}");
}
