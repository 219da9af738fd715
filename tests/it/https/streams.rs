//! Long-lived exchanges: a large download streams in bounded memory, websockets echo through,
//! and the grant's end cuts both within a second.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{
    Env, assert_digests_match, done, ended_session, exchanges, http_log, rss_kib, serve_pid,
    session_ended_record,
};
use crate::nginx::{read_frame, sha256_file, write_frame, ws_accept};

#[tokio::test]
async fn a_200_mb_download_streams_without_the_gateway_growing() {
    let env = Env::start();
    let digest = env.nginx.write_blob("big.bin", 200);
    let g = env.grant("alice", "console-read", "INC-4");
    env.bearer(&g.token, "/", &[]).expect(200);
    let pid = serve_pid(&env.gw);
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_kib(pid);

    let peak = Arc::new(AtomicU64::new(idle));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(rss_kib(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let file = env.scratch("download");
    let started = Instant::now();
    let child = env.spawn_download(&g.token, "/big.bin", &file, &[]);
    let out = child.wait_with_output().expect("wait for curl");
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("sampler");
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    let len = fs::metadata(&file).expect("downloaded file").len();
    assert_eq!(len, 200 << 20);
    assert_eq!(sha256_file(&file), digest, "the downloaded bytes differ");
    let _ = fs::remove_file(&file);
    let grown = peak.load(Ordering::SeqCst).saturating_sub(idle);
    eprintln!(
        "200 MB through the gateway in {took:?}; resident memory {idle} KiB idle, +{grown} KiB peak"
    );
    assert!(
        grown < 64 * 1024,
        "the gateway grew by {grown} KiB (idle {idle} KiB) while streaming 200 MB"
    );

    done(&env, "alice", &g);
    let s = ended_session(&env.gw, &g.grant).await;
    let log = http_log(&s);
    let e = exchanges(&log, "GET", "/big.bin");
    assert_eq!(e.len(), 1, "{log:?}");
    assert_eq!(e[0]["status"], 200);
    assert_eq!(e[0]["bytes_out"], 200u64 << 20, "{}", e[0]);
    assert_eq!(e[0]["aborted"], false, "{}", e[0]);
}

#[tokio::test]
async fn concurrent_http2_streams_on_one_connection_all_reach_the_console() {
    let env = Env::start();
    let digest = env.nginx.write_blob("slow/two.bin", 2);
    let g = env.grant("alice", "console-read", "INC-5");
    // One HTTP/2 connection (curl multiplexes --parallel transfers): a 2 s download on the
    // slow location keeps one target connection busy while ten quick requests run beside it.
    let auth = format!("Authorization: Bearer {}", g.token);
    let base = env.gw.https_url();
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--http2",
        "--parallel",
        "--parallel-max",
        "16",
        "--max-time",
        "30",
    ])
    .arg("--cacert")
    .arg(env.gw.ca())
    .args(["-H", &auth])
    .args([
        "-w",
        "%{http_code} %{http_version} %{num_connects} %{url}\\n",
    ]);
    let slow = env.scratch("two");
    cmd.arg("-o").arg(&slow).arg(format!("{base}/slow/two.bin"));
    let quick: Vec<_> = (0..10).map(|i| env.scratch(&format!("quick{i}"))).collect();
    for (i, f) in quick.iter().enumerate() {
        cmd.arg("-o").arg(f).arg(format!("{base}/users/u{i}"));
    }
    let (code, out, err) = crate::harness::output(cmd);
    assert_eq!(code, 0, "curl: {err}\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 11, "{out}");
    let mut connects = 0;
    for l in &lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(w[..2], ["200", "2"], "{l}");
        connects += w[2].parse::<u32>().expect("num_connects");
    }
    assert_eq!(
        connects, 1,
        "the transfers did not share one connection:\n{out}"
    );
    assert_eq!(
        sha256_file(&slow),
        digest,
        "the slow download's bytes differ"
    );
    for f in &quick {
        assert_eq!(
            fs::read_to_string(f).expect("quick reply"),
            crate::nginx::UNLOCKED
        );
    }

    done(&env, "alice", &g);
    let s = ended_session(&env.gw, &g.grant).await;
    let log = http_log(&s);
    assert_eq!(log.len(), 11, "{log:?}");
    assert!(log.iter().all(|e| e["status"] == 200), "{log:?}");
    assert_eq!(
        exchanges(&log, "GET", "/slow/two.bin")[0]["bytes_out"],
        2u64 << 20
    );
}

/// A WebSocket client over TLS to the gateway.
type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Open `path` on the gateway with an upgrade to WebSocket; returns the stream and the
/// response head.
fn ws_connect(env: &Env, token: &str, path: &str) -> (Tls, String) {
    let ca = fs::read_to_string(env.gw.ca()).expect("certs/ca.pem");
    let cfg = jitgate::pki::client_tls(&ca).expect("client TLS");
    let addr = env.https_addr();
    let tcp = TcpStream::connect(&addr).expect("connect to the HTTPS gateway");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("TLS client");
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {key}\r\n\r\n"
    )
    .expect("send the upgrade request");
    s.flush().expect("flush");
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).expect("read the response head");
        assert!(
            n == 1,
            "the gateway closed during the response head: {head:?}"
        );
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    if head.starts_with("HTTP/1.1 101") {
        let accept = format!("sec-websocket-accept: {}", ws_accept(key));
        assert!(
            head.to_ascii_lowercase()
                .contains(&accept.to_ascii_lowercase()),
            "{head}"
        );
    }
    (s, head)
}

#[tokio::test]
async fn a_websocket_echoes_through_and_is_closed_on_revocation() {
    let env = Env::start();
    let g = env.grant("alice", "console-admin", "INC-5");
    let (mut ws, head) = ws_connect(&env, &g.token, "/ws/echo");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    write_frame(&mut ws, 0x1, b"hello through jitgate", true).expect("send a text frame");
    let (op, data) = read_frame(&mut ws).expect("the echo");
    assert_eq!((op, data.as_slice()), (0x1, &b"hello through jitgate"[..]));
    // One frame over several TLS records, and one of 6 MB that streams through both legs'
    // large reads (many records per read) and back.
    for len in [70_000u32, 6_000_011] {
        let big: Vec<u8> = (0..len)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        write_frame(&mut ws, 0x2, &big, true).expect("send a binary frame");
        let (op, data) = read_frame(&mut ws).expect("the echo");
        assert_eq!(op, 0x2);
        assert!(data == big, "the {len}-byte frame came back changed");
    }

    // A task without `websocket` refuses the upgrade (plain pages still work).
    let other = env.grant("dave", "console-read", "INC-55");
    let (_, head) = ws_connect(&env, &other.token, "/ws/echo");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        head.contains("task console-read does not allow websockets"),
        "{head}"
    );
    env.bearer(&other.token, "/", &[]).expect(200);

    // Revocation closes the live websocket.
    let (code, out, err) = env.gw.cli(
        "admin",
        &["revoke", &g.request, "--reason", "vendor left early"],
    );
    let revoked = Instant::now();
    assert_eq!(code, 0, "revoke: {out} {err}");
    let mut buf = [0u8; 64];
    match ws.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("the websocket still delivers data after revocation: {n} bytes"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the websocket stayed open after revocation"
        ),
    }
    let closed = revoked.elapsed();
    assert!(
        closed < Duration::from_secs(2),
        "closed {closed:?} after revoke"
    );
    assert!(
        write_frame(&mut ws, 0x1, b"still there?", true).is_err() || read_frame(&mut ws).is_err(),
        "the websocket still works after revocation"
    );

    // Later requests are refused with the reason.
    let r = env.bearer(&g.token, "/", &[]);
    r.expect(403);
    assert!(r.body.contains("session terminated"), "{}", r.body);
    assert!(r.body.contains("vendor left early"), "{}", r.body);

    let s = ended_session(&env.gw, &g.grant).await;
    assert_eq!(s["end_cause"], "revoked", "{s}");
    let log = http_log(&s);
    let e = exchanges(&log, "GET", "/ws/echo");
    assert_eq!(e.len(), 1, "{log:?}");
    assert_eq!(e[0]["upgrade"], "websocket", "{}", e[0]);
    assert_eq!(e[0]["status"], 101, "{}", e[0]);
    let (sent, got) = (
        e[0]["bytes_in"].as_u64().unwrap_or(0),
        e[0]["bytes_out"].as_u64().unwrap_or(0),
    );
    // Frames as on the wire: 21 + 70,000 + 6,000,011 bytes of payload each way, plus framing.
    assert!(
        sent >= 6_070_032 && got >= 6_070_032,
        "bytes not counted: {}",
        e[0]
    );
    assert_digests_match(&s);
}

/// Wait up to `limit` after `since` for `child` to exit: its status, when, and its stderr.
fn wait_exit(child: &mut Child, since: Instant, limit: Duration) -> (ExitStatus, Duration, String) {
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            break s;
        }
        assert!(
            since.elapsed() < limit,
            "{child:?} still runs {limit:?} later"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = since.elapsed();
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    (status, took, stderr)
}

/// Wait until `file` holds at least `bytes`.
fn wait_size(file: &Path, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while fs::metadata(file).map(|m| m.len()).unwrap_or(0) < bytes {
        assert!(
            Instant::now() < deadline,
            "{} did not reach {bytes} bytes",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn ticket_close_aborts_in_flight_downloads_and_the_slow_reader_sees_it_at_once() {
    let env = Env::start();
    // Two long downloads on one grant: from a console that sends slowly (nginx `limit_rate`)
    // and to a client that reads slowly (`curl --limit-rate`).
    env.nginx.write_blob("slow/report.bin", 32);
    env.nginx.write_blob("export.bin", 32);
    let g = env.grant("alice", "console-read", "INC-6");
    env.bearer(&g.token, "/", &[]).expect(200);
    let (f1, f2) = (env.scratch("report"), env.scratch("export"));
    let mut slow_target = env.spawn_download(&g.token, "/slow/report.bin", &f1, &[]);
    let mut slow_reader = env.spawn_download(&g.token, "/export.bin", &f2, &["--limit-rate", "1M"]);
    wait_size(&f1, 256 * 1024);
    wait_size(&f2, 256 * 1024);

    let (code, out, err) = env.gw.cli("admin", &["ticket", "close", "INC-6"]);
    let closed = Instant::now();
    let at_close = fs::metadata(&f2).map(|m| m.len()).unwrap_or(0);
    assert_eq!(code, 0, "ticket close: {out} {err}");
    let (status, took, stderr) = wait_exit(&mut slow_target, closed, Duration::from_secs(10));
    // 18: partial file (HTTP/1.1); 92: stream reset (HTTP/2); 56: connection cut.
    assert!(
        matches!(status.code(), Some(18 | 56 | 92)),
        "curl {status}: {stderr}"
    );
    assert!(
        took < Duration::from_secs(1),
        "the download stopped {took:?} after the ticket closed (curl {status}: {stderr})"
    );
    // The slow reader sees the end at once: its connection is reset (curl 56), so it does not
    // first read the megabytes its socket buffers held (an orderly close gives curl 18 after
    // 4 MB and more). Counted in bytes, not seconds, so a busy machine cannot fail it.
    let (status, took, stderr) = wait_exit(&mut slow_reader, closed, Duration::from_secs(20));
    let after = fs::metadata(&f2).map(|m| m.len()).unwrap_or(0) - at_close;
    eprintln!(
        "the slow reader's download failed {took:?} after the ticket closed, {after} bytes on"
    );
    assert_eq!(
        status.code(),
        Some(56),
        "the slow reader's connection was not reset (curl {status}: {stderr})"
    );
    assert!(
        after < 3 << 20,
        "the slow reader read {after} bytes after the ticket closed (curl {status}: {stderr})"
    );
    for f in [&f1, &f2] {
        let got = fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        assert!(got < 32 << 20, "{got} bytes arrived");
    }

    // Recorded: cause, reason, a kill latency under a second.
    let s = ended_session(&env.gw, &g.grant).await;
    assert_eq!(s["end_cause"], "ticket", "{s}");
    let sid = s["id"].as_str().expect("session id");
    let r = session_ended_record(&env.gw, sid).await;
    assert_eq!(r["cause"], "ticket", "{r}");
    assert!(
        r["reason"]
            .as_str()
            .is_some_and(|x| x.contains("ticket INC-6 closed")),
        "{r}"
    );
    let latency = r["kill_latency_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no kill_latency_ms in {r}"));
    eprintln!("kill latency {latency} ms");
    assert!(latency < 1000, "kill latency {latency} ms: {r}");

    // Later requests: 403 and why.
    let later = env.bearer(&g.token, "/", &[]);
    later.expect(403);
    assert!(
        later
            .body
            .contains("session terminated: ticket INC-6 closed"),
        "{}",
        later.body
    );
    assert_eq!(
        later.header("x-jitgate-refused").as_deref(),
        Some("jitgate: session terminated: ticket INC-6 closed")
    );

    // Both downloads are in http.jsonl as aborted, and session.json's digest is of that file.
    let log = http_log(&s);
    for path in ["/slow/report.bin", "/export.bin"] {
        let e = exchanges(&log, "GET", path);
        assert_eq!(e.len(), 1, "{path}: {log:?}");
        assert_eq!(e[0]["aborted"], true, "{}", e[0]);
        assert!(
            e[0]["bytes_out"].as_u64().is_some_and(|b| b < 32 << 20),
            "{}",
            e[0]
        );
    }
    assert_digests_match(&s);
}

#[tokio::test]
async fn a_target_that_stops_answering_gets_a_504_naming_it_within_the_target_timeout() {
    let env = Env::with_gateway("target_timeout = \"2s\"");
    let g = env.grant("alice", "console-read", "INC-8");
    let started = Instant::now();
    let r = env.bearer(&g.token, "/stall", &[]);
    let took = started.elapsed();
    r.expect(504);
    assert!(
        r.body
            .contains("target console did not begin to answer within 2s"),
        "{}",
        r.body
    );
    assert!(took < Duration::from_secs(20), "answered after {took:?}");
    // The session goes on: the next request is served.
    env.bearer(&g.token, "/", &[]).expect(200);
    done(&env, "alice", &g);
    let s = ended_session(&env.gw, &g.grant).await;
    let log = http_log(&s);
    let e = exchanges(&log, "GET", "/stall");
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["status"], 504, "{}", e[0]);
}
