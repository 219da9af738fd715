//! The Request Tracker peer itself (`peers/rt.rs`, a real RT 5): tickets are created, assigned,
//! commented and resolved through REST2 as jitgate will; its webhook scrip posts status and owner
//! changes signed exactly as jitgate's generic webhook verifies; its own server stops and starts.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::now;
use crate::peers::{Rt, RtProcess, rt};

/// How long a scrip's post may take to arrive (it is sent before RT answers the change, so it is
/// normally already there).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);

#[test]
fn rt_peer_creates_assigns_comments_on_and_resolves_a_ticket() {
    let rt: &Rt = rt();
    let alice = rt.create_user("alice");
    let bob = rt.create_user("bob");
    assert_ne!(alice, bob);

    let id = rt.create_ticket("db-01 disk full", &alice);
    assert_eq!(rt.status(id), "new");
    assert_eq!(rt.owner(id), alice);
    let ticket = rt.ticket(id);
    assert!(
        ticket["Subject"]
            .as_str()
            .is_some_and(|s| s.starts_with("db-01 disk full [")),
        "{ticket}"
    );
    assert_eq!(
        rt.search(&format!("Owner = '{alice}' AND Status = 'new'")),
        vec![id]
    );

    rt.comment(id, "jitgate: alice requested ssh to db-01\nfor 30m");
    rt.comment(id, "jitgate: bob approved");
    assert_eq!(
        rt.comments(id),
        vec![
            "jitgate: alice requested ssh to db-01\nfor 30m".to_string(),
            "jitgate: bob approved".to_string(),
        ]
    );

    rt.set_owner(id, &bob);
    assert_eq!(rt.owner(id), bob);
    rt.set_status(id, "open");
    assert_eq!(rt.status(id), "open");
    rt.set_status(id, "resolved");
    assert_eq!(rt.status(id), "resolved");
    assert_eq!(
        rt.search(&format!("Owner = '{bob}' AND Status = 'resolved'")),
        vec![id]
    );
    // The comments stay; the owner and status changes are no comments.
    assert_eq!(rt.comments(id).len(), 2);

    // A request without the token is refused.
    let (code, out, _) = crate::harness::output({
        let mut c = std::process::Command::new("curl");
        c.args(["-s", "-w", "\n%{http_code}"])
            .arg(format!("{}/REST/2.0/ticket/{id}", rt.url()));
        c
    });
    assert_eq!(code, 0);
    assert!(out.ends_with("\n401"), "{out}");
}

/// One POST the scrip made.
struct Delivery {
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A plain HTTP listener on loopback that answers every POST with 200 and hands it over.
fn listen() -> (String, mpsc::Receiver<Delivery>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let url = format!(
        "http://{}/api/v1/tickets/webhook/generic",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Some(delivery) = read_request(stream) else {
                continue;
            };
            // Once the test is over, the next post (another test's ticket) ends this thread,
            // and later posts are refused.
            if tx.send(delivery).is_err() {
                break;
            }
        }
    });
    (url, rx)
}

/// Read one HTTP/1.1 request with a Content-Length body and answer 200.
fn read_request(mut stream: TcpStream) -> Option<Delivery> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("POST /api/v1/tickets/webhook/generic HTTP/1.1") {
        return None;
    }
    let mut headers = HashMap::new();
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    let answer = "{\"status\":\"applied\"}";
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{answer}",
        answer.len()
    );
    Some(Delivery { headers, body })
}

/// The next delivery about `ticket` (deliveries about other tests' tickets are skipped); checks
/// its signature against `secret` and returns its body.
fn next_for(rx: &mpsc::Receiver<Delivery>, ticket: &str, secret: &str) -> (Value, String) {
    loop {
        let d = rx
            .recv_timeout(DELIVERY_TIMEOUT)
            .unwrap_or_else(|_| panic!("no webhook for {ticket} within {DELIVERY_TIMEOUT:?}"));
        let body: Value = serde_json::from_slice(&d.body).unwrap_or_else(|e| {
            panic!(
                "the scrip's body is not JSON ({e}): {}",
                String::from_utf8_lossy(&d.body)
            )
        });
        if body["ticket"] != ticket {
            continue;
        }
        assert_eq!(
            d.headers.get("content-type").map(String::as_str),
            Some("application/json")
        );
        let ts = d
            .headers
            .get("x-jitgate-timestamp")
            .expect("an X-Jitgate-Timestamp header");
        let age = now() - ts.parse::<i64>().expect("the timestamp is unix seconds");
        assert!((0..60).contains(&age), "timestamp {ts} is {age} s old");
        let mut signed = format!("{ts}.").into_bytes();
        signed.extend_from_slice(&d.body);
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
        let want = format!(
            "sha256={}",
            hex::encode(aws_lc_rs::hmac::sign(&key, &signed).as_ref())
        );
        assert_eq!(
            d.headers.get("x-jitgate-signature"),
            Some(&want),
            "the signature over \"<timestamp>.<body>\" for {body}"
        );
        let delivery = d
            .headers
            .get("x-jitgate-delivery")
            .expect("an X-Jitgate-Delivery header")
            .clone();
        return (body, delivery);
    }
}

#[test]
fn rt_peer_scrip_posts_signed_generic_webhooks_on_owner_change_and_resolve() {
    const SECRET: &str = "rt-scrip-secret-0123456789abcdef";
    let rt = rt();
    let (url, rx) = listen();
    rt.install_webhook_scrip(&url, SECRET);
    let alice = rt.create_user("alice");
    let bob = rt.create_user("bob");
    let id = rt.create_ticket("web-02 certificate renewal", &alice);
    let ticket = format!("rt:{id}");
    let title = rt.ticket(id)["Subject"].as_str().unwrap().to_string();

    // The generic webhook's shape exactly (it refuses unknown fields).
    rt.set_owner(id, &bob);
    let (body, first) = next_for(&rx, &ticket, SECRET);
    assert_eq!(
        body,
        json!({"ticket": ticket, "state": "open", "assignee": bob, "title": title})
    );

    rt.set_status(id, "resolved");
    let (body, second) = next_for(&rx, &ticket, SECRET);
    assert_eq!(
        body,
        json!({"ticket": ticket, "state": "resolved", "assignee": bob, "title": title})
    );
    assert_ne!(first, second, "each change is its own delivery");

    // Unowned is a null assignee; rejected is closed.
    rt.set_owner(id, "Nobody");
    let (body, _) = next_for(&rx, &ticket, SECRET);
    assert_eq!(
        body,
        json!({"ticket": ticket, "state": "resolved", "assignee": null, "title": title})
    );
    rt.set_status(id, "rejected");
    let (body, _) = next_for(&rx, &ticket, SECRET);
    assert_eq!(body["state"], "closed");

    // Installing again for the same URL replaces the secret instead of adding scrips.
    const NEW_SECRET: &str = "rt-scrip-secret-rotated-456789abcdef";
    rt.install_webhook_scrip(&url, NEW_SECRET);
    rt.set_status(id, "open");
    let (body, _) = next_for(&rx, &ticket, NEW_SECRET);
    assert_eq!(body["state"], "open");
    rt.remove_webhook_scrip(&url);
    rt.set_status(id, "resolved");
    while let Ok(d) = rx.recv_timeout(Duration::from_secs(2)) {
        let body: Value = serde_json::from_slice(&d.body).unwrap();
        assert_ne!(body["ticket"], ticket, "a removed scrip posted {body}");
    }
}

#[test]
fn rt_peer_own_server_stops_and_starts_over_the_same_database() {
    let rt = rt();
    let owner = rt.create_user("carol");
    let id = rt.create_ticket("own server", &owner);
    let mut own: RtProcess = rt.start_own();
    assert_ne!(own.url(), rt.url());
    let get = |base: &str| {
        let mut c = std::process::Command::new("curl");
        c.args(["-s", "--max-time", "10", "-w", "\n%{http_code}"])
            .arg("-H")
            .arg(format!("Authorization: token {}", rt.token()))
            .arg(format!("{base}/REST/2.0/ticket/{id}"));
        crate::harness::output(c)
    };
    let owner_at = |base: &str| {
        let (code, out, err) = get(base);
        assert_eq!(code, 0, "curl {base}: {err}");
        let (body, status) = out.rsplit_once('\n').unwrap();
        assert_eq!(status, "200", "{body}");
        let ticket: Value = serde_json::from_str(body).unwrap();
        ticket["Owner"]["id"].as_str().unwrap().to_string()
    };
    assert_eq!(owner_at(&own.url()), owner);

    let pid = own.pid().expect("running");
    own.stop();
    assert!(own.pid().is_none());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "rt-server {pid} is gone"
    );
    let (code, _, err) = get(&own.url());
    assert_eq!(code, 7, "curl cannot connect to a stopped RT: {err}");
    // The shared server is untouched.
    assert_eq!(rt.owner(id), owner);

    own.start();
    assert_eq!(owner_at(&own.url()), owner);
}
