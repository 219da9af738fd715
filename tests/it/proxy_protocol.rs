//! The PROXY protocol on the SSH and HTTPS listeners, behind a real HAProxy (`mode tcp`,
//! `send-proxy` and `send-proxy-v2`, see `proxy_protocol/haproxy.rs`): the technician's address,
//! not the balancer's, is what the audit records, the admission throttle and the target see;
//! a balancer's connection without a header and a header from anyone else are refused and
//! audited (`proxy.refused`); direct clients are served as before.
//!
//! Loopback only: HAProxy connects from 127.0.0.2 (the balancer the gateways trust) or 127.0.0.3
//! (one they do not), and clients from 127.0.0.7 and up.

pub mod haproxy;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Gateway, Opts, Out, Policy, output};
use crate::nginx::{HOME, Nginx};
use crate::ssh::{
    Env, Granted, QUIET, assert_target_untouched, client_opts, grant, sessions_of, with_token,
};
use haproxy::{Haproxy, Route};

/// The balancer the gateways trust.
const BALANCER: &str = "127.0.0.2";
/// A balancer they do not.
const STRANGER: &str = "127.0.0.3";
/// The `[gateway]` key that trusts [`BALANCER`].
const TRUSTED: &str = "proxy_protocol_from = [\"127.0.0.2/32\"]";

/// An sshd target and a gateway that trusts [`BALANCER`].
fn ssh_env() -> Env {
    Env::build(None, |o| o.gateway(TRUSTED))
}

/// HAProxy in front of `to`, connecting from `source` with `send`.
fn haproxy(to: &str, send: &'static str, source: &'static str) -> Haproxy {
    Haproxy::start(&[Route {
        to: to.to_string(),
        send,
        source,
    }])
}

/// `ssh -b FROM -p PORT user@127.0.0.1 CMD`, the token typed at the password prompt.
fn ssh_via(port: u16, from: &str, token: &str, user: &str, cmd: &str) -> Out {
    let mut args = client_opts();
    args.extend(["-o", "PreferredAuthentications=password", "-b", from, "-p"].map(String::from));
    args.push(port.to_string());
    args.extend(QUIET.map(String::from));
    args.push(format!("{user}@127.0.0.1"));
    args.push(cmd.to_string());
    output(with_token(token, "ssh", &args))
}

/// `curl --interface FROM` of `url` with a bearer token, trusting `gw`'s CA: status and body.
fn curl_via(gw: &Gateway, from: &str, url: &str, token: &str) -> (u16, String, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--http1.1",
        "--max-time",
        "20",
        "--interface",
        from,
        "--cacert",
    ])
    .arg(gw.ca())
    .arg("-H")
    .arg(format!("Authorization: Bearer {token}"))
    .args(["-w", "\n%{http_code}"])
    .arg(url);
    let (_, out, err) = output(cmd);
    let (body, status) = out.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string(), err)
}

/// The first `event` record for which `hit` holds (waits up to 10 s: a refusal is audited
/// as the gateway sees the connection end, which can be just after the client exits).
async fn audited(gw: &Gateway, event: &str, hit: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let recs = gw.audit(event).await;
        if let Some(r) = recs.iter().find(|r| hit(r)) {
            return r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no matching {event} record within 10 s; got {recs:?}\ngateway log:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `session.started` record of `grant`.
async fn started(gw: &Gateway, grant: &str) -> Value {
    audited(gw, "session.started", |r| r["grant"] == grant).await
}

/// The `proxy.refused` record of `protocol` whose reason contains `reason`.
async fn proxy_refused(gw: &Gateway, protocol: &str, reason: &str) -> Value {
    audited(gw, "proxy.refused", |r| {
        r["protocol"] == protocol && r["reason"].as_str().is_some_and(|s| s.contains(reason))
    })
    .await
}

/// Whether `text` is `ip:port`.
fn is_from(text: &Value, ip: &str) -> bool {
    text.as_str()
        .and_then(|s| s.strip_prefix(ip))
        .and_then(|s| s.strip_prefix(':'))
        .is_some_and(|port| port.parse::<u16>().is_ok())
}

/// A plain TCP connection to `to` from `from` (any port).
async fn tcp_from(from: &str, to: &str) -> std::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(format!("{from}:0").parse().unwrap())
        .unwrap_or_else(|e| panic!("bind {from}: {e}"));
    let tcp = socket
        .connect(to.parse().unwrap())
        .await
        .unwrap_or_else(|e| panic!("connect to {to}: {e}"));
    let tcp = tcp.into_std().expect("a std socket");
    tcp.set_nonblocking(false).expect("blocking");
    tcp.set_read_timeout(Some(Duration::from_secs(15)))
        .expect("a read timeout");
    tcp
}

/// Read until the gateway closes `tcp`; returns what it sent and how long that took.
fn until_closed(tcp: &mut std::net::TcpStream) -> (Vec<u8>, Duration) {
    let began = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tcp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                panic!("the gateway did not close the connection within 15 s")
            }
            Err(_) => break,
        }
    }
    (got, began.elapsed())
}

/// A grant of alice's on `ticket`, and a command run with it by `ssh` from `client` through
/// HAProxy; returns the grant once its `session.started` names `client`.
async fn session_through(env: &Env, hp: &Haproxy, client: &str, ticket: &str) -> Granted {
    let g = grant(&env.gw, "alice", "ops", ticket, "15m");
    let (code, out, err) = ssh_via(hp.ports[0], client, &g.token, "alice", "echo in-$((40+2))");
    assert_eq!(
        code,
        0,
        "ssh through HAProxy: {err}\nHAProxy:\n{}",
        hp.log()
    );
    assert_eq!(out, "in-42\n");
    let rec = started(&env.gw, &g.grant).await;
    assert!(is_from(&rec["source"], client), "{rec}");
    g
}

#[tokio::test]
async fn ssh_behind_haproxy_send_proxy_v2_records_the_technicians_address() {
    let env = ssh_env();
    // With a CRC32C TLV on every header, and HAProxy's health checks (LOCAL headers) running.
    let hp = haproxy(
        env.gw.ssh_addr(),
        "send-proxy-v2 proxy-v2-options crc32c check inter 300ms",
        BALANCER,
    );
    let g = session_through(&env, &hp, "127.0.0.7", "INC-1").await;
    let sessions = sessions_of(&env.gw, &g.grant).await;
    assert!(is_from(&sessions[0]["source"], "127.0.0.7"), "{sessions:?}");

    // A wrong token through the balancer is denied, throttled and audited as the technician's.
    let wrong = jitgate::types::GrantToken::generate();
    let (code, _, _) = ssh_via(hp.ports[0], "127.0.0.7", wrong.expose(), "alice", "true");
    assert_eq!(code, 255);
    let denied = audited(&env.gw, "admission.denied", |r| {
        r["reason"]
            .as_str()
            .is_some_and(|s| s.contains("unknown grant token"))
    })
    .await;
    assert_eq!(denied["source"], "127.0.0.7", "{denied}");

    // HAProxy's health checks came in all along, and none of them was refused.
    let refused = env.gw.audit("proxy.refused").await;
    assert!(refused.is_empty(), "{refused:?}");
}

#[tokio::test]
async fn ssh_behind_haproxy_send_proxy_v1_records_the_technicians_address() {
    let env = ssh_env();
    let hp = haproxy(env.gw.ssh_addr(), "send-proxy", BALANCER);
    session_through(&env, &hp, "127.0.0.8", "INC-1").await;
}

/// The console target behind the HTTPS gateway.
const CONSOLE_TASK: &str = r#"
[[tasks]]
name = "console-read"
description = "Look at the test console"
targets = ["console"]
http_allow = ["GET /*"]
max_ttl = "1h"
"#;

#[tokio::test]
async fn https_behind_haproxy_records_and_forwards_the_clients_address() {
    let mut nginx = Nginx::prepare();
    let opts = Opts::default()
        .policy(Policy::None)
        .gateway(TRUSTED)
        .extra(&nginx.target_toml("console"))
        .extra(CONSOLE_TASK);
    let mut gw = Gateway::prepare(opts);
    gw.init();
    nginx.start(&gw.ca());
    gw.serve();
    let to = gw.https_url().trim_start_matches("https://").to_string();
    let hp = Haproxy::start(&[
        Route {
            to: to.clone(),
            send: "send-proxy-v2",
            source: BALANCER,
        },
        Route {
            to,
            send: "send-proxy",
            source: BALANCER,
        },
    ]);
    for (i, client, ticket) in [(0, "127.0.0.7", "INC-1"), (1, "127.0.0.8", "INC-2")] {
        crate::flows::open_ticket(&gw, ticket, "alice");
        let id = crate::flows::pending(&gw, "alice", "console-read", "console", ticket);
        let g = crate::flows::approved_token(&gw, "alice", id);
        let url = format!("https://{}/", hp.address(i));
        let (status, body, err) = curl_via(&gw, client, &url, &g.token);
        assert_eq!(
            status,
            200,
            "curl through HAProxy: {err} {body}\n{}",
            hp.log()
        );
        assert_eq!(body, HOME);
        let rec = started(&gw, &g.grant).await;
        assert!(is_from(&rec["source"], client), "{rec}");
        let seen = format!("xff=\"{client}\"");
        assert!(
            nginx.access_log().contains(&seen),
            "the target did not see {seen}:\n{}",
            nginx.access_log()
        );
    }
    assert!(gw.audit("proxy.refused").await.is_empty());
}

#[tokio::test]
async fn a_proxy_header_from_outside_proxy_protocol_from_is_refused_and_audited() {
    let env = ssh_env();
    // A balancer the gateway was not told about: its header would forge the client's address.
    let hp = haproxy(env.gw.ssh_addr(), "send-proxy-v2", STRANGER);
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let (code, out, err) = ssh_via(hp.ports[0], "127.0.0.7", &g.token, "alice", "echo got-in");
    assert_eq!(code, 255, "not refused: {out:?} {err:?}");
    assert_eq!(out, "");
    let rec = proxy_refused(&env.gw, "ssh", "PROXY v2 header from 127.0.0.3").await;
    assert_eq!(rec["source"], STRANGER, "{rec}");
    assert_eq!(rec["peer"], STRANGER, "{rec}");
    assert!(
        rec["reason"]
            .as_str()
            .unwrap()
            .contains("not in gateway.proxy_protocol_from"),
        "{rec}"
    );
    assert!(env.gw.audit("session.started").await.is_empty());
    assert_target_untouched(&env);
    // Counted for the operator's dashboards as well: each refusal the audit log holds (a
    // balancer may try a refused connection again, so there may be more than one).
    let refusals = env.gw.audit("proxy.refused").await.len();
    assert!(refusals >= 1);
    let metrics = std::process::Command::new("curl")
        .args(["-sf", env.gw.metrics_url()])
        .output()
        .expect("curl the metrics");
    let text = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        text.lines()
            .any(|l| l
                == format!("jitgate_gateway_proxy_refusals_total{{protocol=\"ssh\"}} {refusals}")),
        "{text}"
    );
}

#[tokio::test]
async fn a_proxy_header_on_the_https_listener_is_refused_from_a_direct_client_and_through_the_balancer()
 {
    let gw = Gateway::start(Opts::default().gateway(TRUSTED));
    let https = gw.https_url().trim_start_matches("https://").to_string();

    // A direct client (127.0.0.1 is not in the list) sending a v1 header of its own.
    let mut tcp = tcp_from("127.0.0.1", &https).await;
    tcp.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 443\r\n")
        .unwrap();
    let (answer, _) = until_closed(&mut tcp);
    assert!(answer.is_empty(), "the gateway answered: {answer:?}");
    let rec = proxy_refused(&gw, "https", "PROXY v1 header from 127.0.0.1").await;
    assert_eq!(
        (&rec["source"], &rec["peer"]),
        (&"127.0.0.1".into(), &"127.0.0.1".into())
    );

    // A client behind the trusted balancer sending a header of its own after HAProxy's.
    let hp = haproxy(&https, "send-proxy-v2", BALANCER);
    let mut tcp = tcp_from("127.0.0.9", &hp.address(0)).await;
    tcp.write_all(b"PROXY TCP4 6.6.6.6 127.0.0.1 5555 443\r\n")
        .unwrap();
    let (answer, _) = until_closed(&mut tcp);
    assert!(answer.is_empty(), "the gateway answered: {answer:?}");
    let rec = proxy_refused(&gw, "https", "second PROXY v1 header").await;
    assert_eq!(rec["source"], "127.0.0.9", "{rec}");
    assert_eq!(rec["peer"], BALANCER, "{rec}");
}

#[tokio::test]
async fn a_connection_from_proxy_protocol_from_without_a_header_is_refused() {
    let env = ssh_env();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    // An ssh client on the balancer's address, straight to the gateway.
    let (code, out, err) = ssh_via(
        env.gw.ssh_port(),
        BALANCER,
        &g.token,
        "alice",
        "echo got-in",
    );
    assert_eq!(code, 255, "not refused: {out:?} {err:?}");
    let rec = proxy_refused(&env.gw, "ssh", "does not begin with a PROXY header").await;
    assert_eq!(rec["source"], BALANCER, "{rec}");
    let reason = rec["reason"].as_str().unwrap();
    assert!(reason.contains("SSH client"), "{reason}");
    assert!(
        reason.contains("127.0.0.2, which is in gateway.proxy_protocol_from"),
        "{reason}"
    );
    assert!(env.gw.audit("session.started").await.is_empty());
    assert_target_untouched(&env);

    // The same on the HTTPS listener: a TLS client where a header was due.
    let url = format!("{}/", env.gw.https_url());
    let (status, _, _) = curl_via(&env.gw, BALANCER, &url, &g.token);
    assert_eq!(status, 0, "curl got an answer");
    let rec = proxy_refused(&env.gw, "https", "TLS handshake").await;
    assert_eq!(rec["source"], BALANCER, "{rec}");

    // A balancer that connects and says nothing is let go after 5 s, and that is audited.
    let mut tcp = tcp_from(BALANCER, env.gw.ssh_addr()).await;
    let (answer, waited) = until_closed(&mut tcp);
    assert!(
        answer.is_empty(),
        "the gateway spoke first to a balancer: {answer:?}"
    );
    assert!(
        waited >= Duration::from_millis(4500) && waited < Duration::from_secs(10),
        "closed after {waited:?}"
    );
    proxy_refused(&env.gw, "ssh", "no PROXY header within 5s").await;
}

#[tokio::test]
async fn direct_clients_outside_proxy_protocol_from_are_served_as_before() {
    let env = ssh_env();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let (code, out, err) = ssh_via(
        env.gw.ssh_port(),
        "127.0.0.1",
        &g.token,
        "alice",
        "echo direct",
    );
    assert_eq!(code, 0, "{err}\ngateway log:\n{}", env.gw.logs());
    assert_eq!(out, "direct\n");
    let rec = started(&env.gw, &g.grant).await;
    assert!(is_from(&rec["source"], "127.0.0.1"), "{rec}");
    // And from another address outside the list.
    let (code, out, err) = ssh_via(
        env.gw.ssh_port(),
        "127.0.0.10",
        &g.token,
        "alice",
        "echo again",
    );
    assert_eq!((code, out.as_str()), (0, "again\n"), "{err}");
    assert!(env.gw.audit("proxy.refused").await.is_empty());
}

#[test]
fn check_names_the_file_line_and_entry_of_a_bad_proxy_protocol_from() {
    let gw = Gateway::prepare(
        Opts::default()
            .gateway("proxy_protocol_from = [\n  \"127.0.0.2/32\",\n  \"10.0.0.1/8\",\n]"),
    );
    let text = std::fs::read_to_string(&gw.config).unwrap();
    // The key's line: the list is one value to the TOML parser.
    let line = text
        .lines()
        .position(|l| l.starts_with("proxy_protocol_from = ["))
        .unwrap()
        + 1;
    let (code, out, err) = gw.run(&["check"], &[]);
    assert_eq!(code, 1, "check accepted it: {out} {err}");
    let want = format!("{}:{line}:", gw.config.display());
    assert!(
        err.lines().any(|l| l.starts_with(&want)
            && l.contains(
                "gateway.proxy_protocol_from[1]: \"10.0.0.1/8\" is not an address block"
            )
            && l.contains("first address")),
        "expected `{want} ... \"10.0.0.1/8\" is not an address block ...`, got:\n{err}"
    );
}
