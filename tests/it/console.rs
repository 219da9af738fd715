//! The web console in headless Chromium: the whole flow of the product in the browser, on the
//! demo's targets (built-in SSH target and admin web console) and on a fixture gateway.
//! Screenshots of each page are kept under the target directory (`it-screenshots/`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::demo::{Demo, SSH_OPTS};
use crate::harness::{Gateway, Opts, Policy};
use crate::peers::{Context, Page, browser};

/// A screenshot of `page`, kept to look at.
pub(crate) fn shot(page: &Page, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("it-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    let p = dir.join(format!("console-{name}.png"));
    page.screenshot(&p);
    p
}

/// Sign a browser in with a one-time link; the page lands on the home page.
fn sign_in_with(ctx: &Context, link: &str) -> Page {
    let page = ctx.page();
    page.goto(link);
    page.click("#continue");
    assert!(page.content().contains("id=\"user\""), "{}", page.content());
    page
}

/// Wait until `cond` holds (polling), or panic with `what`.
fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not happen within {timeout:?}");
}

#[test]
fn request_approve_reveal_connect_watch_kill_and_replay_in_the_browser() {
    let demo = Demo::start();
    let link = |u: &str| demo.info["sign_in_links"][u].as_str().unwrap().to_string();

    // alice asks for a shell on demo-box for DEMO-1, from a deep link a ticket could carry.
    let alice = browser().context();
    let a = sign_in_with(&alice, &link("alice"));
    shot(&a, "home-technician");
    a.goto(&format!(
        "{}/requests/new?ticket=DEMO-1&target=demo-box&task=demo-shell",
        demo.s("api")
    ));
    a.fill("#ttl", "10m");
    a.fill("#reason", "look at the failing agent");
    a.wait_until_text("#preview-verdict", "allow", Duration::from_secs(10));
    assert!(a.text("#preview-approvals").contains("1 approval"));
    shot(&a, "request-new");
    a.click("button:has-text(\"Request access\")");
    a.wait_url(
        &format!("{}/requests/req_", demo.s("api")),
        Duration::from_secs(10),
    );
    let req_url = a.url();
    let req = req_url.rsplit('/').next().unwrap().to_string();
    assert!(a.text("#state").contains("pending"));

    // bob sees it in his queue with the ticket and the scope, and approves with a comment.
    let bob = browser().context();
    let b = sign_in_with(&bob, &link("bob"));
    b.goto(&format!("{}/approvals", demo.s("api")));
    let card = b.text(&format!("article[data-request=\"{req}\"]"));
    assert!(
        card.contains("DEMO-1")
            && card.contains("demo-shell")
            && card.contains("look at the failing agent"),
        "{card}"
    );
    assert!(
        card.contains("Principal") && card.contains("demo"),
        "{card}"
    );
    shot(&b, "approvals");
    b.fill(
        &format!("article[data-request=\"{req}\"] input[name=comment]"),
        "go ahead",
    );
    b.click(&format!(
        "article[data-request=\"{req}\"] button:has-text(\"Approve\")"
    ));

    // alice's page turns approved by itself; she reveals the token once.
    a.wait_until_text("#state", "approved", Duration::from_secs(15));
    shot(&a, "request-approved");
    a.click("text=Reveal token");
    a.wait_until_text("#token", "jgt_", Duration::from_secs(10));
    let token = a.text("#token").trim().to_string();
    let ssh_cmd = a.text("#ssh-command");
    assert!(
        ssh_cmd.starts_with("ssh -p ") && ssh_cmd.contains("alice@"),
        "{ssh_cmd}"
    );
    a.goto(&req_url);
    assert!(
        a.content().contains("token-gone"),
        "a second reveal is not offered"
    );
    let again = a.eval(&format!(
        "async () => (await fetch('/api/v1/requests/{req}/token', {{method: 'POST', headers: {{'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}}}})).status"
    ));
    assert_eq!(again, 409, "the server refuses a second reveal");

    // She connects with stock ssh and works in a shell.
    // Under `script`, so that ssh has a terminal of a real size to report (100x30).
    let ssh_line = format!(
        "stty cols 100 rows 30; exec sshpass -p {token} ssh -tt {} -o PreferredAuthentications=password -p {} alice@127.0.0.1",
        SSH_OPTS.join(" "),
        demo.ssh_port()
    );
    let mut ssh = Command::new("script")
        .args(["-qec", &ssh_line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ssh");
    let mut stdin = ssh.stdin.take().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    stdin.write_all(b"echo console-watch-$((6*7))\n").unwrap();

    // An admin finds the live session, watches it, then kills it with a reason.
    let admin = browser().context();
    let m = sign_in_with(&admin, &link("admin"));
    m.goto(&format!("{}/sessions?live=yes", demo.s("api")));
    shot(&m, "sessions");
    m.click("#sessions tbody tr:first-child a");
    assert!(m.url().contains("/sessions/ses_"), "{}", m.url());
    let session_url = m.url();
    m.click("#watch");
    m.wait_until_text("#live-player", "console-watch-42", Duration::from_secs(15));
    stdin.write_all(b"echo after-watch-started\n").unwrap();
    m.wait_until_text(
        "#live-player",
        "after-watch-started",
        Duration::from_secs(15),
    );
    shot(&m, "session-live");
    m.fill("#kill-reason", "console test: cut it");
    m.click("text=Kill session");
    let mut out = String::new();
    let mut err = String::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while ssh.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        ssh.try_wait().unwrap().is_some(),
        "ssh still runs after the kill"
    );
    ssh.stdout.take().unwrap().read_to_string(&mut out).ok();
    ssh.stderr.take().unwrap().read_to_string(&mut err).ok();
    assert!(
        format!("{out}{err}").contains("console test: cut it"),
        "alice's ssh ends with the reason: {out}\n{err}"
    );

    // The session page plays the recording: time advances, and the kill is a chapter.
    eventually(
        "the session to be recorded as ended",
        Duration::from_secs(10),
        || {
            m.goto(&session_url);
            m.content().contains("data-state=\"ended\"")
        },
    );
    assert!(m.text("#end-reason").contains("console test: cut it"));
    m.wait_until_eval(
        "() => !!document.querySelector('.player[data-cast]')?.player",
        Duration::from_secs(10),
    );
    m.eval("() => document.querySelector('.player[data-cast]').player.play()");
    std::thread::sleep(Duration::from_millis(1500));
    let t = m.eval(
        "async () => await document.querySelector('.player[data-cast]').player.getCurrentTime()",
    );
    assert!(
        t.as_f64().unwrap_or(0.0) > 0.0,
        "the player's time advances: {t}"
    );
    let chapters = m.text("ol.chapters");
    assert!(
        chapters.contains("session terminated"),
        "the termination is a chapter: {chapters}"
    );
    m.click("ol.chapters li:last-child button");
    std::thread::sleep(Duration::from_millis(500));
    let at = m.eval(
        "async () => await document.querySelector('.player[data-cast]').player.getCurrentTime()",
    );
    assert!(
        at.as_f64().unwrap_or(0.0) > 1.0,
        "the chapter seeks the player: {at}"
    );
    shot(&m, "session-ended");
}

#[test]
fn an_https_grant_opens_the_console_target_through_open_console() {
    let demo = Demo::start();
    let link = |u: &str| demo.info["sign_in_links"][u].as_str().unwrap().to_string();
    let r = demo.cli_json(
        "alice",
        &[
            "request",
            "--task",
            "unlock-account",
            "--target",
            "demo-console",
            "--ticket",
            "DEMO-1",
            "--ttl",
            "10m",
            "--reason",
            "unlock dave",
        ],
    );
    let req = r["id"].as_str().unwrap().to_string();
    demo.cli_json("bob", &["approve", &req]);
    let alice = browser().context();
    let a = sign_in_with(&alice, &link("alice"));
    a.goto(&format!("{}/requests/{req}", demo.s("api")));
    a.click("text=Open console");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !a.url().starts_with("https://localhost:") || a.url().contains("/_jitgate/") {
        assert!(
            Instant::now() < deadline,
            "the browser did not reach the console target; it is at {}: {}",
            a.url(),
            a.content()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let page = a.content();
    assert!(
        page.contains("dave"),
        "the demo console lists locked accounts: {page}"
    );
    shot(&a, "open-console");
    // The token was never revealed for this: the page still offers it once.
    a.goto(&format!("{}/requests/{req}", demo.s("api")));
    assert!(a.content().contains("Reveal token"));
}

#[tokio::test]
async fn a_reviewer_signs_off_a_break_glass_use_and_reads_the_audit_log() {
    let zed = jitgate::crypto::sha256_hex(crate::harness::api_key("zed").as_bytes());
    let gw = Gateway::start(Opts::default().policy(Policy::PermitAll).extra(&format!(
        "[break_glass]\ntasks = [\"endpoint-remediation\"]\nmax_ttl = \"15m\"\n\n\
         [[users]]\nname = \"zed\"\nroles = [\"technician\", \"break-glass\"]\napi_key_sha256 = \"{zed}\"\n"
    )));
    let bg = gw
        .api("zed")
        .post(
            "/api/v1/break-glass",
            json!({ "target": "dc-01", "reason": "ransomware on dc-01, isolating now", "task": "endpoint-remediation" }),
        )
        .await
        .unwrap();
    assert_eq!(bg.status, 201, "{:?}", bg.body);
    let (code, out, err) = gw.cli("admin", &["sign-in-link", "rita"]);
    assert_eq!(code, 0, "{out}{err}");
    let link = out
        .lines()
        .find(|l| l.starts_with("https://"))
        .unwrap()
        .to_string();
    let rita = browser().context();
    let p = sign_in_with(&rita, &link);
    assert!(
        p.text("#oversight").contains("ransomware"),
        "{}",
        p.text("#oversight")
    );
    p.goto(&format!("{}/reviews", gw.url()));
    shot(&p, "reviews");
    p.fill(
        "textarea[name=notes]",
        "isolation was right; reviewed the recording",
    );
    p.click("text=Sign off");
    p.wait_until_text("main", "Signed off by rita", Duration::from_secs(10));
    let reviews = gw
        .api("rita")
        .get("/api/v1/reviews?all=true")
        .await
        .unwrap();
    assert!(
        reviews.body.to_string().contains("isolation was right"),
        "{:?}",
        reviews.body
    );
    p.goto(&format!("{}/audit?event=review.completed", gw.url()));
    assert!(
        p.text("#verified").contains("verify"),
        "{}",
        p.text("#verified")
    );
    assert!(p.text("#audit").contains("review.completed"));
    shot(&p, "audit");
}

/// A one-time sign-in link for `user`, made by admin (a gateway without `[oidc]`).
fn link_for(gw: &Gateway, user: &str) -> String {
    let (code, out, err) = gw.cli("admin", &["sign-in-link", user]);
    assert_eq!(code, 0, "{out}{err}");
    out.lines()
        .find(|l| l.starts_with("https://"))
        .expect("a link")
        .to_string()
}

#[test]
fn the_browser_flow_reaches_a_real_openssh_target_and_its_recording_plays() {
    let env = crate::ssh::Env::start();
    let gw = &env.gw;
    crate::flows::open_ticket(gw, "INC-90", "alice");
    let alice = browser().context();
    let a = sign_in_with(&alice, &link_for(gw, "alice"));
    a.goto(&format!(
        "{}/requests/new?ticket=INC-90&target=box&task=shell-only",
        gw.url()
    ));
    a.fill("#ttl", "15m");
    a.fill("#reason", "rotate the service password");
    a.wait_until_text("#preview-verdict", "allow", Duration::from_secs(10));
    a.click("button:has-text(\"Request access\")");
    a.wait_url(
        &format!("{}/requests/req_", gw.url()),
        Duration::from_secs(10),
    );
    let req = a.url().rsplit('/').next().unwrap().to_string();

    let bob = browser().context();
    let b = sign_in_with(&bob, &link_for(gw, "bob"));
    b.goto(&format!("{}/requests/{req}", gw.url()));
    b.click("button:has-text(\"Approve\")");
    a.wait_until_text("#state", "approved", Duration::from_secs(15));
    a.click("text=Reveal token");
    let token = a.wait_until_text("#token", "jgt_", Duration::from_secs(10));
    let (code, out, err) =
        crate::ssh::ssh_exec(gw, token.trim(), "alice", "echo real-sshd-$((40+2))");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("real-sshd-42"), "{out}");

    // Done ends the grant from the console; the session page then plays the recording.
    a.goto(&format!("{}/requests/{req}", gw.url()));
    a.click("button:has-text(\"Done\")");
    a.wait_until_text("main", "completed", Duration::from_secs(10));
    let rita = browser().context();
    let r = sign_in_with(&rita, &link_for(gw, "rita"));
    r.goto(&format!("{}/sessions?user=alice&target=box", gw.url()));
    r.click("#sessions tbody tr:first-child a");
    r.wait_until_eval(
        "() => !!document.querySelector('.player[data-cast]')?.player",
        Duration::from_secs(10),
    );
    let d = r.eval("async () => { const p = document.querySelector('.player[data-cast]').player; await p.play(); await new Promise(r => setTimeout(r, 500)); return p.getDuration(); }");
    assert!(
        d.as_f64().unwrap_or(0.0) > 0.0,
        "the recording has a duration: {d}"
    );
    shot(&r, "real-sshd-session");
}

#[tokio::test]
async fn the_preview_says_what_the_rules_would_say_and_stores_nothing() {
    let gw = Gateway::start(Opts::default().policy(Policy::PermitAll));
    crate::flows::open_ticket(&gw, "INC-91", "alice");
    let before = gw.audit("request.denied").await.len();
    let ask = |ticket: &str, task: &str, ttl: &str| json!({ "ticket": ticket, "target": "dc-01", "task": task, "ttl": ttl, "reason": "printer" });
    let p = gw
        .api("alice")
        .post(
            "/api/v1/requests/preview",
            ask("INC-91", "reset-credential", "10m"),
        )
        .await
        .unwrap();
    assert_eq!(p.status, 200, "{:?}", p.body);
    assert_eq!(p.body["allowed"], true, "{:?}", p.body);
    assert_eq!(p.body["required_approvals"], 1);
    let p = gw
        .api("alice")
        .post(
            "/api/v1/requests/preview",
            ask("INC-91", "endpoint-remediation", "10m"),
        )
        .await
        .unwrap();
    assert_eq!(p.body["high_impact"], true, "{:?}", p.body);
    assert!(
        p.body["approvals_why"]
            .as_str()
            .unwrap()
            .contains("2 approvals"),
        "{:?}",
        p.body
    );
    let p = gw
        .api("alice")
        .post(
            "/api/v1/requests/preview",
            ask("INC-91", "reset-credential", "2h"),
        )
        .await
        .unwrap();
    assert_eq!(p.body["allowed"], false);
    assert!(
        p.body["refusal"].as_str().unwrap().contains("max_ttl"),
        "{:?}",
        p.body
    );
    let p = gw
        .api("alice")
        .post(
            "/api/v1/requests/preview",
            ask("INC-404", "reset-credential", "10m"),
        )
        .await
        .unwrap();
    assert!(
        p.body["refusal"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{:?}",
        p.body
    );
    // Nothing was made or recorded by asking.
    let mine = gw.api("alice").get("/api/v1/requests").await.unwrap();
    assert_eq!(
        mine.body.as_array().map(Vec::len),
        Some(0),
        "{:?}",
        mine.body
    );
    assert_eq!(gw.audit("request.denied").await.len(), before);
}

#[tokio::test]
async fn an_approver_never_sees_an_approve_button_for_their_own_request() {
    let gw = Gateway::start(Opts::default().policy(Policy::PermitAll));
    crate::flows::open_ticket(&gw, "INC-92", "sam");
    let r = gw
        .api("sam")
        .post(
            "/api/v1/requests",
            json!({ "ticket": "INC-92", "target": "dc-01", "task": "reset-credential", "ttl": "10m", "reason": "own" }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
    let req = r.body["id"].as_str().unwrap().to_string();
    let sam = browser().context();
    let p = sign_in_with(&sam, &link_for(&gw, "sam"));
    p.goto(&format!("{}/approvals", gw.url()));
    let card = p.text(&format!("article[data-request=\"{req}\"]"));
    assert!(card.contains("your own request"), "{card}");
    assert!(!card.contains("Approve"), "{card}");
    p.goto(&format!("{}/requests/{req}", gw.url()));
    assert!(!p.content().contains(">Approve<"));
    // And the server refuses it anyway, from the console's own page with its token.
    let status = p.eval(&format!(
        "async () => (await fetch('/api/v1/requests/{req}/approve', {{method: 'POST', headers: {{'Content-Type': 'application/json', 'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content}}, body: '{{}}'}})).status"
    ));
    assert_eq!(status, 403);
}
