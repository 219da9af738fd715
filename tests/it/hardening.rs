//! Defects a hostile run and third-party tools found, each kept found by a test named after what
//! broke: a second `serve` on one data directory, published keys on a reachable listener,
//! lock-outs by a flood of bad credentials, idle connections left open, audit floods, a CLI
//! panic on a closed pipe, metrics that Prometheus' own checker refused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::flows::granted;
use crate::harness::{BIN, Gateway, Opts, api_key, output};

/// Lines of the audit log file.
fn audit_lines(gw: &Gateway) -> usize {
    std::fs::read_to_string(gw.audit_log())
        .unwrap_or_default()
        .lines()
        .count()
}

#[tokio::test]
async fn second_serve_on_one_data_dir_is_refused_before_it_touches_anything() {
    let gw = Gateway::start(Opts::default());
    let before = audit_lines(&gw);
    let (code, out, err) = gw.run(&["serve"], &[]);
    assert_eq!(code, 1, "a second serve started:\n{out}\n{err}");
    assert!(
        err.contains("in use by another jitgate process")
            && err.contains(&format!("process id {}", gw.pid())),
        "the refusal does not name the running process {}: {err}",
        gw.pid()
    );
    assert_eq!(
        audit_lines(&gw),
        before,
        "the second process wrote to the audit log"
    );
    // The first gateway still writes, and its chain still verifies.
    crate::flows::open_ticket(&gw, "INC-2", "alice");
    let (code, out, err) = gw.run(&["audit", "verify"], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn example_api_keys_are_refused_on_a_listener_other_hosts_can_reach() {
    // The README's example key for admin, on an SSH listener on every interface.
    let example = jitgate::crypto::sha256_hex(b"jgk_example_admin_do_not_use_in_production");
    let users = format!(
        "[[users]]\nname = \"example-admin\"\nroles = [\"admin\"]\napi_key_sha256 = \"{example}\"\n"
    );
    let open = Gateway::prepare(Opts::default().extra(&users));
    let text = std::fs::read_to_string(&open.config)
        .unwrap()
        .replace("ssh_listen = \"127.0.0.1:0\"", "ssh_listen = \"0.0.0.0:0\"");
    std::fs::write(&open.config, text).unwrap();
    open.init();
    let (code, out, err) = open.run(&["serve"], &[]);
    assert_eq!(code, 1, "serve started with example keys:\n{out}\n{err}");
    assert!(
        err.contains("example-admin")
            && err.contains("gateway.ssh_listen = \"0.0.0.0:0\"")
            && err.contains("jitgate api-key new"),
        "{err}"
    );
    let (code, _, err) = open.run(&["check"], &[]);
    assert_eq!(code, 1, "check passed a config serve refuses: {err}");
    assert!(err.contains("example-admin"), "{err}");
    // On loopback only, the example keys are allowed (the README's quick start).
    let mut local = Gateway::prepare(Opts::default().extra(&users));
    local.init();
    local.serve();
    let me = local
        .client(Some("jgk_example_admin_do_not_use_in_production".into()))
        .get("/api/v1/whoami")
        .await
        .unwrap();
    assert_eq!(me.status, 200, "{:?}", me.body);
}

#[tokio::test]
async fn the_example_configuration_serves_on_loopback_as_the_readme_says() {
    let cfg = crate::fixture::repo().join("config/jitgate.toml");
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(&cfg).arg("check");
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0, "config/jitgate.toml fails check:\n{out}\n{err}");
}

/// Run `n` copies of `f` at once on threads; returns their results.
fn at_once<T: Send + 'static>(n: usize, f: impl Fn() -> T + Send + Sync + 'static) -> Vec<T> {
    let f = std::sync::Arc::new(f);
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let f = f.clone();
            std::thread::spawn(move || f())
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[tokio::test]
async fn a_flood_of_bad_tokens_and_keys_from_one_address_never_locks_out_valid_ones() {
    let mut gw = Gateway::start(Opts::default());
    let g = granted(&gw, "alice", "INC-3");
    let gw_url = gw.url().to_string();
    let ca = gw.ca();
    // 45 bad grant tokens from 127.0.0.1 (the limit is 10 a minute), all at once.
    let bad_token = format!("jgt_{}", "A".repeat(49));
    let statuses = at_once(45, {
        let (url, ca) = (gw_url.clone(), ca.clone());
        let body = json!({"token": bad_token, "user": "alice", "protocol": "ssh"}).to_string();
        move || {
            curl_status(
                &url,
                &ca,
                "/api/v1/admission",
                &api_key("admin"),
                Some(&body),
            )
        }
    });
    assert!(statuses.iter().all(|s| *s == 403), "{statuses:?}");
    let valid = gw.admit(&g.token, "alice", "ssh").await;
    assert_eq!(
        valid.status, 200,
        "a valid token from a flooded address was refused: {:?}",
        valid.body
    );
    // 30 bad API keys from the same address (the limit is 20), then a valid key.
    let statuses = at_once(30, {
        let (url, ca) = (gw_url.clone(), ca.clone());
        move || {
            curl_status(
                &url,
                &ca,
                "/api/v1/whoami",
                "jgk_not_a_real_key_00000000",
                None,
            )
        }
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        20,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        10,
        "{statuses:?}"
    );
    let started = Instant::now();
    let me = gw.api("alice").get("/api/v1/whoami").await.unwrap();
    assert_eq!(
        me.status, 200,
        "a valid key from a flooded address: {:?}",
        me.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(1) * 5,
        "a valid key was throttled like a bad one"
    );
    // Audited in bounded numbers: the first 10 of each kind from this address, then one
    // summary per kind when the window closes (here: at shutdown).
    let denied = gw.audit("admission.denied").await;
    assert_eq!(denied.len(), 10, "{denied:?}");
    let auth = gw.audit("api.auth_denied").await;
    assert_eq!(auth.len(), 10, "{auth:?}");
    assert_eq!(auth[0]["path"], "/api/v1/whoami", "{}", auth[0]);
    assert!(gw.stop(), "serve did not stop on SIGTERM");
    gw.serve();
    let summaries = gw.audit("refusals.suppressed").await;
    let of = |kind: &str| -> Value {
        summaries
            .iter()
            .find(|s| s["kind"] == kind)
            .cloned()
            .unwrap_or_else(|| panic!("no summary for {kind}: {summaries:?}"))
    };
    assert_eq!(of("admission.denied")["count"], 35);
    assert_eq!(of("api.auth_denied")["count"], 20);
    assert_eq!(of("api.auth_denied")["top"][0]["source"], "127.0.0.1");
    let (code, out, err) = gw.run(&["audit", "verify"], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn unsigned_webhooks_are_audited_in_bounded_numbers() {
    let mut gw = Gateway::start(Opts::default().webhook_secret("it-webhook-secret-0123456789"));
    let url = gw.url().to_string();
    let ca = gw.ca();
    // In rounds of 40: more than 64 handshakes at once from one address are more than one
    // source may hold unauthenticated.
    let one = move || {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--http1.1",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--cacert",
            ])
            .arg(&ca)
            .args([
                "-H",
                "X-Jitgate-Timestamp: 1",
                "-H",
                "X-Jitgate-Signature: sha256=00",
            ])
            .args(["-d", r#"{"ticket":"INC-9","state":"closed"}"#])
            .arg(format!("{url}/api/v1/tickets/webhook/generic"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let one = std::sync::Arc::new(one);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let one = one.clone();
        statuses.extend(at_once(40, move || one()));
    }
    assert!(statuses.iter().all(|s| s == "401"), "{statuses:?}");
    assert_eq!(gw.audit("webhook.rejected").await.len(), 10);
    assert!(gw.stop());
    gw.serve();
    let s = gw.audit("refusals.suppressed").await;
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0]["kind"], "webhook.rejected");
    assert_eq!(s[0]["count"], 110);
    assert_eq!(s[0]["sources"], 1);
}

/// `curl` the API: the status code.
fn curl_status(url: &str, ca: &std::path::Path, path: &str, key: &str, body: Option<&str>) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http1.1", "--max-time", "30", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .args(["-H", &format!("Authorization: Bearer {key}")]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", b]);
    }
    let out = cmd.arg(format!("{url}{path}")).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Read from `s` until the peer closes it; returns how long that took, or `None` after
/// `within`.
fn closed_within(mut s: TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while started.elapsed() < within {
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_version_line_or_the_tls_handshake() {
    let gw = Gateway::start(Opts::default().gateway("login_timeout = \"2s\""));
    // SSH: the version line, then nothing.
    let mut ssh = TcpStream::connect(gw.ssh_addr()).unwrap();
    ssh.write_all(b"SSH-2.0-idle_client\r\n").unwrap();
    let ssh_closed = std::thread::spawn(move || closed_within(ssh, Duration::from_secs(30)));
    // TLS: a completed handshake, then no request, on the API and the HTTPS gateway.
    let tls_idle = |addr: String| {
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let started = Instant::now();
        let ended = loop {
            if child.try_wait().unwrap().is_some() {
                break Some(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(40) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        drop(stdin);
        ended
    };
    let api = gw.url().trim_start_matches("https://").to_string();
    let https = gw.https_url().trim_start_matches("https://").to_string();
    let api_closed = std::thread::spawn(move || tls_idle(api));
    let https_closed = std::thread::spawn(move || tls_idle(https));
    let ssh = ssh_closed.join().unwrap();
    assert!(
        ssh.is_some(),
        "an SSH client that sent only its version line stayed connected"
    );
    let api = api_closed.join().unwrap();
    assert!(
        api.is_some(),
        "an idle TLS connection to the API stayed open for 40 s"
    );
    let https = https_closed.join().unwrap();
    assert!(
        https.is_some(),
        "an idle TLS connection to the HTTPS gateway stayed open for 40 s"
    );
    // The API still serves.
    assert_eq!(
        gw.api("alice").get("/api/v1/whoami").await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn cli_output_into_a_closed_pipe_ends_quietly() {
    let gw = Gateway::start(Opts::default());
    crate::flows::open_ticket(&gw, "INC-4", "alice");
    let mut cmd = Command::new(BIN);
    cmd.arg("--config")
        .arg(&gw.config)
        .args(["--json", "requests"])
        .env("JITGATE_URL", gw.url())
        .env("JITGATE_CA", gw.ca())
        .env("JITGATE_API_KEY", api_key("admin"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // The reader goes away before the command writes: `jitgate requests | true`.
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.trim().is_empty(),
        "a closed pipe is not an error to report: {err}"
    );
    assert_eq!(status.code(), Some(0), "{err}");
}

#[tokio::test]
async fn audit_verify_prints_whole_lines() {
    let gw = Gateway::start(Opts::default());
    let (code, out, err) = gw.run(&["audit", "verify"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with('\n'), "{out:?}");
    let (code, out, _) = gw.run(&["--json", "audit", "verify"], &[]);
    assert_eq!(code, 0);
    assert!(out.ends_with('\n'), "{out:?}");
}

#[tokio::test]
async fn metrics_pass_promtool_follow_the_accept_header_and_need_a_credential_on_the_api() {
    let gw = Gateway::start(Opts::default());
    gw.api("alice").get("/api/v1/whoami").await.unwrap();
    // The status and everything curl received (headers, then the body).
    let scrape = |url: &str, accept: Option<&str>, key: Option<&str>| -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--http1.1", "-D", "-", "--cacert"])
            .arg(gw.ca());
        if let Some(a) = accept {
            cmd.args(["-H", &format!("Accept: {a}")]);
        }
        if let Some(k) = key {
            cmd.args(["-H", &format!("Authorization: Bearer {k}")]);
        }
        let out = cmd.arg(url).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, text)
    };
    // The metrics listener: Prometheus text unless OpenMetrics is asked for.
    let (status, text) = scrape(gw.metrics_url(), Some("text/plain;version=0.0.4"), None);
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("text/plain; version=0.0.4"), "{text}");
    assert!(text.contains("jitgate_api_requests_total{"), "{text}");
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/test.sh installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics failed:\n{}{}\n{body}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let (_, om) = scrape(
        gw.metrics_url(),
        Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
        None,
    );
    assert!(
        om.contains("application/openmetrics-text") && om.contains("# EOF"),
        "{om}"
    );
    // On the API listener: nobody without a credential, and not a technician.
    let api = format!("{}/metrics", gw.url());
    assert_eq!(scrape(&api, None, None).0, 401);
    assert_eq!(scrape(&api, None, Some(&api_key("alice"))).0, 403);
    let (status, ok) = scrape(&api, None, Some(&api_key("rita")));
    assert_eq!(status, 200, "{ok}");
    assert!(ok.contains("jitgate_api_requests_total"), "{ok}");
}

#[tokio::test]
async fn a_metrics_listener_other_hosts_can_reach_needs_a_token() {
    let gw = Gateway::prepare(Opts::default());
    let text = std::fs::read_to_string(&gw.config).unwrap().replace(
        "metrics_listen = \"127.0.0.1:0\"",
        "metrics_listen = \"0.0.0.0:0\"",
    );
    std::fs::write(&gw.config, &text).unwrap();
    let (code, _, err) = gw.run(&["check"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("metrics_token"), "{err}");
    let with_token = text.replace(
        "metrics_listen = \"0.0.0.0:0\"",
        "metrics_listen = \"0.0.0.0:0\"\nmetrics_token = \"scrape-token-0123456789\"",
    );
    std::fs::write(&gw.config, with_token).unwrap();
    let (code, out, err) = gw.run(&["check"], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test]
async fn container_first_start_writes_a_config_with_a_fresh_admin_key_shown_once() {
    let home = tempfile::tempdir().unwrap();
    // `jitgate` on PATH is the binary under test, except that `serve` only checks the
    // configuration it would serve (the container's ports are fixed).
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let shim = bin.join("jitgate");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\nif [ \"$1\" = serve ]; then exec {BIN} check; fi\nexec {BIN} \"$@\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let start = || {
        let mut cmd = Command::new("sh");
        cmd.arg(crate::fixture::repo().join("scripts/container-start.sh"))
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("JITGATE_HOME", home.path())
            .env("JITGATE_CONFIG", home.path().join("etc/jitgate.toml"));
        output(cmd)
    };
    let (code, out, err) = start();
    assert_eq!(code, 0, "{out}\n{err}");
    let key = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("jgk_"))
        .unwrap_or_else(|| panic!("no admin key shown:\n{out}"))
        .to_string();
    let config = std::fs::read_to_string(home.path().join("data/jitgate.toml")).unwrap();
    assert!(!config.contains(&key), "the key itself is in the file");
    assert!(config.contains(&jitgate::crypto::sha256_hex(key.as_bytes())));
    assert!(config.contains("api_listen = \"0.0.0.0:8440\""), "{config}");
    let (code, out, err) = start();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("jgk_"), "the key was shown twice:\n{out}");
}

#[tokio::test]
async fn ssh_audit_finds_no_failures_and_no_compression_before_authentication() {
    let gw = Gateway::start(Opts::default());
    let out = Command::new("ssh-audit")
        .args([
            "-j",
            "--skip-rate-test",
            "-p",
            &gw.ssh_port().to_string(),
            "127.0.0.1",
        ])
        .output()
        .expect("ssh-audit (scripts/test.sh installs it from PyPI)");
    // ssh-audit 3.9: 0 good, 2 warnings only, 3 failures, 1 connection error.
    let code = out.status.code();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "ssh-audit printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        matches!(code, Some(0 | 2)),
        "ssh-audit exit {code:?}: {report}"
    );
    assert_eq!(
        report["compression"],
        json!(["none"]),
        "{}",
        report["compression"]
    );
    let mut fails = Vec::new();
    for section in ["kex", "key", "enc", "mac"] {
        for a in report[section].as_array().cloned().unwrap_or_default() {
            if a["notes"]["fail"].as_array().is_some_and(|f| !f.is_empty()) {
                fails.push(format!(
                    "{section} {}: {}",
                    a["algorithm"], a["notes"]["fail"]
                ));
            }
        }
    }
    assert!(fails.is_empty(), "{fails:?}");
    assert_eq!(report["cves"], json!([]), "{}", report["cves"]);
    let kex: Vec<&str> = report["kex"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["algorithm"].as_str())
        .collect();
    assert!(
        kex.contains(&"sntrup761x25519-sha512@openssh.com"),
        "{kex:?}"
    );
}
