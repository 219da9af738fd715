//! Tests of configuration parsing and validation.

use super::*;

const BASE: &str = r#"
[gateway]
public_name = "gw.test"

[[users]]
name = "alice"
roles = ["technician"]

[[targets]]
name = "dc-01"
kind = "ssh"
address = "127.0.0.1:22"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
tags = ["dc"]

[[tasks]]
name = "reset"
targets = ["tag:dc"]
principal = "reset"
allow = ["shell"]
max_ttl = "30m"
"#;

fn load(text: &str) -> Result<Config, Vec<String>> {
    Config::from_text(text, Path::new("/etc/jitgate.toml")).map_err(|e| match e {
        ConfigError::Invalid(p) => p.iter().map(|p| p.to_string()).collect(),
        other => vec![other.to_string()],
    })
}

#[test]
fn example_shape_loads() {
    let cfg = load(BASE).unwrap();
    assert_eq!(cfg.gateway.data_dir, PathBuf::from("/etc/data"));
    assert_eq!(cfg.store.url, "sqlite:///etc/data/jitgate.db");
    assert!(cfg.tasks[0].covers(&cfg.targets[0]));
}

#[test]
fn unknown_field_is_reported_with_its_line() {
    let text = BASE.replace("max_ttl = \"30m\"", "max_ttl = \"30m\"\nmax_tll = \"1h\"");
    let errs = load(&text).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("/etc/jitgate.toml:22: "), "{errs:?}");
    assert!(errs[0].contains("max_tll"), "{errs:?}");
}

#[test]
fn missing_target_names_the_task_line() {
    let text = BASE.replace("targets = [\"tag:dc\"]", "targets = [\"dc-99\"]");
    let errs = load(&text).unwrap_err();
    assert_eq!(
        errs,
        vec!["/etc/jitgate.toml:18: task reset: no target is named \"dc-99\"".to_string()]
    );
}

#[test]
fn bad_ttl_and_high_impact_floor_are_errors() {
    let errs = load(&BASE.replace("\"30m\"", "\"30 minutes\"")).unwrap_err();
    assert!(errs[0].contains("is not a duration"), "{errs:?}");
    let errs = load(&BASE.replace("max_ttl = \"30m\"", "max_ttl = \"30m\"\nimpact = \"high\""))
        .unwrap_err();
    assert!(errs[0].contains("needs approvals = 2"), "{errs:?}");
}

#[test]
fn ssh_target_without_pinned_key_is_refused() {
    let text = BASE.replace(
        "host_key = \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\"\n",
        "",
    );
    let errs = load(&text).unwrap_err();
    assert!(
        errs[0].contains("never trusts a host key on first use"),
        "{errs:?}"
    );
    assert!(errs[0].starts_with("/etc/jitgate.toml:9:"), "{errs:?}");
}
