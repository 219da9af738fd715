//! The configuration loader: `Config::from_text(text, path)`, which `jitgate check` and
//! `jitgate serve` run on the operator's file.
//!
//! Input: TOML text (non-UTF-8 input is skipped, as `Config::load` refuses it before parsing).
//! The path is the example configuration's, so relative paths resolve to real files. Besides
//! "never panics":
//! - a refusal lists at least one problem, each naming that file, a line inside the text
//!   (1 ..= lines + 1) and a non-empty reason;
//! - an accepted configuration validates again with no problem, records its source, has
//!   absolute directories, finds each of its users, targets and tasks by name, and holds only
//!   well-formed `http_allow` rules;
//! - loading is deterministic.
#![no_main]

use jitgate::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = jitgate_fuzz::example_config_path();
    let first = Config::from_text(text, &path);
    if jitgate_fuzz::debug() {
        eprintln!(
            "config: {:?}",
            first
                .as_ref()
                .map(|_| "accepted")
                .map_err(|e| e.to_string())
        );
    }
    let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
    match &first {
        Err(ConfigError::Invalid(problems)) => {
            assert!(!problems.is_empty(), "a refusal names at least one problem");
            for p in problems {
                assert_eq!(p.file, path);
                assert!(
                    (1..=lines + 1).contains(&p.line),
                    "problem line {} outside a {lines}-line text: {}",
                    p.line,
                    p.message
                );
                assert!(!p.message.trim().is_empty(), "a problem says what is wrong");
            }
        }
        Err(e @ ConfigError::Read { .. }) => panic!("from_text does not read files: {e}"),
        Ok(cfg) => {
            let again = cfg.validate(text);
            assert!(
                again.is_empty(),
                "an accepted config validates again: {again:?}"
            );
            assert_eq!(cfg.source, path);
            assert!(cfg.gateway.data_dir.is_absolute());
            assert!(cfg.gateway.certs_dir.is_absolute());
            assert!(cfg.gateway.recordings_dir.is_absolute());
            assert!(cfg.sqlite_path().is_some(), "store.url is sqlite://");
            for u in &cfg.users {
                assert!(cfg.user(&u.name).is_some());
            }
            for t in &cfg.targets {
                assert!(cfg.target(&t.name).is_some());
            }
            for t in &cfg.tasks {
                assert!(cfg.task(&t.name).is_some());
                assert!(t.max_ttl.as_secs() > 0);
                for rule in &t.http_allow {
                    assert_eq!(jitgate::config::check_http_rule(rule), Ok(()), "{rule:?}");
                }
            }
        }
    }
    // Deterministic: the same text gives the same answer.
    let second = Config::from_text(text, &path);
    match (&first, &second) {
        (Ok(_), Ok(_)) => {}
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("loading the same text twice gave different answers"),
    }
});
