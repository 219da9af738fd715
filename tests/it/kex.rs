//! Post-quantum key exchange with today's OpenSSH. Debian 12's OpenSSH 9.2 offers
//! `sntrup761x25519-sha512@openssh.com` but not `mlkem768x25519-sha256` (OpenSSH 9.9). While the
//! gateway offered only ML-KEM among the post-quantum exchanges, both legs fell back to
//! curve25519-sha256, although OpenSSH alone would have used sntrup761 end to end.

use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::output;
use crate::ssh::{Env, grant, ssh_cmd};
use crate::sshd::Sshd;

/// What OpenSSH prints (client, `-v`) and logs (sshd, `LogLevel DEBUG1`) for the exchange.
const SNTRUP_KEX: &str = "kex: algorithm: sntrup761x25519-sha512@openssh.com";

/// How long sshd may take to restart with a new configuration.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Make the running sshd log at `DEBUG1`, the first level at which it names the key exchange:
/// rewrite the `LogLevel` of the `sshd_config` it was started with and send it SIGHUP (sshd
/// restarts itself on the same port and pid with the file re-read). Returns once it listens again.
fn log_kex_on_target(sshd: &Sshd) {
    let root = sshd
        .files()
        .parent()
        .expect("sshd's temp dir")
        .to_path_buf();
    let cfg = root.join("sshd_config");
    let text = fs::read_to_string(&cfg).expect("read sshd_config");
    assert!(text.contains("LogLevel VERBOSE\n"), "sshd_config:\n{text}");
    fs::write(
        &cfg,
        text.replace("LogLevel VERBOSE\n", "LogLevel DEBUG1\n"),
    )
    .expect("write sshd_config");
    let pid = fs::read_to_string(root.join("sshd.pid")).expect("read sshd.pid");
    let listening = format!("Server listening on 127.0.0.1 port {}.", sshd.port);
    let before = sshd.log().matches(&listening).count();
    let out = Command::new("kill")
        .args(["-HUP", pid.trim()])
        .output()
        .expect("run kill");
    assert!(out.status.success(), "kill -HUP {pid}");
    let deadline = Instant::now() + RELOAD_TIMEOUT;
    while sshd.log().matches(&listening).count() <= before {
        assert!(
            Instant::now() < deadline,
            "sshd did not restart within {RELOAD_TIMEOUT:?}; its log:\n{}",
            sshd.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn post_quantum_kex_with_openssh_9_2_on_both_legs() {
    let env = Env::start();
    log_kex_on_target(&env.sshd);
    let g = grant(&env.gw, "alice", "ops", "INC-PQ", "15m");

    let (code, out, err) = output(ssh_cmd(&env.gw, &g.token, "alice", &["-v"], &["echo pq"]));
    assert_eq!(
        (code, out.as_str()),
        (0, "pq\n"),
        "ssh -v through the gateway:\n{err}"
    );

    // The technician's leg, as the OpenSSH client saw it.
    assert!(
        err.contains("remote software version jitgate"),
        "the client did not talk to the gateway:\n{err}"
    );
    assert!(
        err.contains(SNTRUP_KEX),
        "the client leg did not use sntrup761x25519:\n{}",
        kex_lines(&err)
    );

    // The target's leg, as the target's sshd logged it: the only connection since its restart.
    let log = env.sshd.log();
    assert!(
        log.contains("remote software version russh"),
        "the gateway never reached the target:\n{log}"
    );
    assert_eq!(
        kex_lines(&log),
        format!("debug1: {SNTRUP_KEX} [preauth]"),
        "the target leg did not use sntrup761x25519; sshd's log:\n{log}"
    );
    assert!(
        log.contains(&format!("grant={}", g.grant)),
        "the target did not log this grant's login:\n{log}"
    );
}

/// The `kex: algorithm:` lines of an OpenSSH debug log.
fn kex_lines(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("kex: algorithm:"))
        .collect::<Vec<_>>()
        .join("\n")
}
