//! Several gateway nodes on one real PostgreSQL (tests/it/peers/postgres.rs): the nodes share
//! the database, the certificates and the recordings directory, each has its own data
//! directory, and what one node ends, every node cuts.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::flows::{Granted, approved_token, open_ticket, request};
use crate::harness::{Gateway, Opts, Policy};
use crate::peers::{Postgres, postgres};
use crate::proxy_protocol::haproxy::{Haproxy, Route};
use crate::ssh::{TASKS, Term, ended_session, live_session};
use crate::sshd::Sshd;
use crate::webhooks::send_signed;

mod store;

/// The webhook secret of the test nodes.
const WEBHOOK_SECRET: &str = "cluster-webhook-secret-0123456789";
/// The variable that carries the database password to `serve`.
const PASSWORD_ENV: &str = "JITGATE_TEST_DB_PASSWORD";

/// Two or more nodes in front of one sshd, on one database.
pub struct Nodes {
    pub nodes: Vec<Gateway>,
    /// The database they share.
    pub url: String,
    /// The target every node reaches (kept running while the nodes live).
    _sshd: Sshd,
}

/// The configuration of node `name` on database `url`.
fn node_opts(sshd: &Sshd, url: &str, name: &str, cluster: &str) -> Opts {
    node_opts_with(sshd, url, name, cluster, "")
}

/// [`node_opts`] with `gateway` keys added to `[gateway]`.
fn node_opts_with(sshd: &Sshd, url: &str, name: &str, cluster: &str, gateway: &str) -> Opts {
    Opts::default()
        .gateway(gateway)
        .policy(Policy::None)
        .webhook_secret(WEBHOOK_SECRET)
        .extra(&sshd.target_toml("box", &sshd.host_key))
        .extra(TASKS)
        .store(&format!(
            "url = \"{url}\"\npassword = \"env:{PASSWORD_ENV}\"\n"
        ))
        .env(PASSWORD_ENV, crate::peers::POSTGRES_PASSWORD)
        .extra(&format!("[cluster]\nnode = \"{name}\"\n{cluster}"))
}

/// Copy every file of directory `from` into `to` (the certificates all nodes share).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("dir entry");
        if e.file_type().expect("file type").is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).expect("copy");
        }
    }
}

impl Nodes {
    /// `n` nodes named gw-a, gw-b, ... on a fresh database of `pg`, with `cluster` keys.
    pub fn start_on(pg: &Postgres, n: usize, cluster: &str) -> Self {
        Self::start_with(pg, n, cluster, "")
    }

    /// [`Nodes::start_on`] with `gateway` keys for every node.
    pub fn start_with(pg: &Postgres, n: usize, cluster: &str, gateway: &str) -> Self {
        let url = pg.database();
        let sshd = Sshd::start();
        let mut nodes: Vec<Gateway> = Vec::new();
        for i in 0..n {
            let name = format!("gw-{}", (b'a' + i as u8) as char);
            let gw = Gateway::prepare(node_opts_with(&sshd, &url, &name, cluster, gateway));
            if let Some(first) = nodes.first() {
                // What an admin does: every node gets the first one's keys and CAs, and the
                // recordings directory they all mount.
                copy_dir(&first.path("certs"), &gw.path("certs"));
                let rec = gw.path("recordings");
                let _ = std::fs::remove_dir_all(&rec);
                std::fs::create_dir_all(first.path("recordings")).expect("recordings dir");
                std::os::unix::fs::symlink(first.path("recordings"), &rec)
                    .expect("share the recordings directory");
            } else {
                gw.init();
                sshd.trust(&gw.path("certs/ssh_user_ca.pub"));
            }
            nodes.push(gw);
        }
        for gw in &mut nodes {
            gw.serve();
        }
        Self {
            nodes,
            url,
            _sshd: sshd,
        }
    }

    /// Two nodes on the shared database, with a 1 s heartbeat.
    pub fn two() -> Self {
        Self::start_on(postgres(), 2, QUICK)
    }

    pub fn a(&self) -> &Gateway {
        &self.nodes[0]
    }

    pub fn b(&self) -> &Gateway {
        &self.nodes[1]
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, g)| format!("--- node {i} ---\n{}", g.logs()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// On node `gw`: open `ticket` for alice, request `ops` on `box`, approve as bob, fetch the
/// token.
fn grant_on(gw: &Gateway, ticket: &str) -> Granted {
    open_ticket(gw, ticket, "alice");
    let (code, v, err) = request(gw, "alice", "ops", "box", ticket, "30m", "cluster test");
    assert_eq!(code, 0, "request: {v} {err}\n{}", gw.logs());
    approved_token(
        gw,
        "alice",
        v["id"].as_str().expect("request id").to_string(),
    )
}

/// alice's shell through node `gw`, answering.
fn shell(gw: &Gateway, token: &str) -> Term {
    let mut t = Term::ssh_login(gw, "alice", token);
    t.expect("$ ", Duration::from_secs(15));
    t.send("echo up-$((40+2))\r");
    t.expect("up-42", Duration::from_secs(5));
    t
}

/// Close `ticket` through `gw`'s generic webhook.
fn close_by_webhook(gw: &Gateway, ticket: &str) -> Value {
    let body = serde_json::json!({ "ticket": ticket, "state": "closed" });
    let (status, v) = send_signed(
        gw,
        "generic",
        &body,
        jitgate::types::now(),
        WEBHOOK_SECRET,
        &format!("close-{ticket}"),
    );
    assert_eq!(status, 200, "{v}");
    v
}

#[tokio::test]
async fn a_ticket_closed_through_one_nodes_webhook_cuts_the_session_another_node_holds() {
    let c = Nodes::two();
    let g = grant_on(c.a(), "INC-501");
    let mut term = shell(c.b(), &g.token);
    let live = live_session(c.a(), &g.grant).await;
    assert_eq!(live["node"], "gw-b", "{live}");
    let closed = Instant::now();
    close_by_webhook(c.a(), "INC-501");
    term.expect("ticket INC-501 closed", Duration::from_secs(5));
    let took = closed.elapsed();
    let s = ended_session(c.b(), &g.grant).await;
    assert_eq!(s["end_cause"], "ticket", "{s}\n{}", c.logs());
    assert_eq!(s["node"], "gw-b", "{s}");
    // Well within a heartbeat: the notification, not the heartbeat's re-read, cut it.
    assert!(
        took < Duration::from_millis(900),
        "the cut took {took:?}\n{}",
        c.logs()
    );
    // Node A exports the evidence of node B's session (the shared recordings, the one chain),
    // and the bundle verifies offline against the audit key.
    let sid = s["id"].as_str().expect("session id");
    let bundle = c.a().path("evidence.tar");
    let (code, out, err) = c.a().run(
        &["evidence", "export", sid, "-o", bundle.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let key = c.a().path("certs/audit_ed25519.pub.pem");
    let (code, out, err) = c.a().run(
        &[
            "evidence",
            "verify",
            bundle.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}\n{err}");
}

/// The heartbeat keys of most tests.
const QUICK: &str = "heartbeat = \"1s\"\nmax_staleness = \"3s\"\ndead_after = \"6s\"\n";

#[tokio::test]
async fn behind_haproxy_sessions_spread_over_the_nodes_carry_the_technicians_address_and_one_close_cuts_all()
 {
    let c = Nodes::start_with(
        postgres(),
        2,
        QUICK,
        "proxy_protocol_from = [\"127.0.0.2/32\"]",
    );
    let hp = Haproxy::start(&[Route {
        to: format!("{},{}", c.a().ssh_addr(), c.b().ssh_addr()),
        send: "send-proxy-v2",
        source: "127.0.0.2",
    }]);
    let g = grant_on(c.a(), "INC-505");
    // Four technicians' sessions from 127.0.0.9, through the balancer.
    let mut terms: Vec<Term> = (0..4)
        .map(|_| {
            let mut args: Vec<String> = crate::ssh::client_opts();
            args.extend(
                [
                    "-o",
                    "PreferredAuthentications=keyboard-interactive",
                    "-b",
                    "127.0.0.9",
                    "-p",
                ]
                .map(String::from),
            );
            args.push(hp.ports[0].to_string());
            args.push("alice@127.0.0.1".into());
            let mut t = Term::spawn("ssh", &args, 24, 80);
            t.expect("Grant token:", Duration::from_secs(10));
            t.send(&format!("{}\r", g.token));
            t.expect("$ ", Duration::from_secs(15));
            t
        })
        .collect();
    let sessions = crate::ssh::sessions_of(c.a(), &g.grant).await;
    assert_eq!(sessions.len(), 4, "{sessions:?}");
    for node in ["gw-a", "gw-b"] {
        let on = sessions.iter().filter(|s| s["node"] == node).count();
        assert_eq!(on, 2, "round-robin puts two on {node}: {sessions:?}");
    }
    for s in &sessions {
        let source = s["source"].as_str().unwrap_or_default();
        assert!(source.starts_with("127.0.0.9"), "{s}");
    }
    close_by_webhook(c.a(), "INC-505");
    for t in &mut terms {
        t.expect("ticket INC-505 closed", Duration::from_secs(5));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = crate::ssh::sessions_of(c.b(), &g.grant).await;
        if s.iter().all(|s| s["end_cause"] == "ticket") {
            break;
        }
        assert!(Instant::now() < deadline, "{s:?}\n{}", c.logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_kill_sent_to_one_node_cuts_a_session_on_another() {
    let c = Nodes::two();
    let g = grant_on(c.a(), "INC-502");
    let mut term = shell(c.b(), &g.token);
    let live = live_session(c.a(), &g.grant).await;
    let sid = live["id"].as_str().expect("session id").to_string();
    let (code, out, err) = c.a().cli("bob", &["kill", &sid, "--reason", "wrong host"]);
    assert_eq!(code, 0, "{out}\n{err}\n{}", c.logs());
    term.expect("wrong host", Duration::from_secs(5));
    let s = ended_session(c.a(), &g.grant).await;
    assert_eq!(s["end_cause"], "killed", "{s}");
    // Both nodes list both, alive, from the one database.
    let (code, v, err) = c.b().cli_json("admin", &["nodes"]);
    assert_eq!(code, 0, "{v} {err}");
    let names: Vec<&str> = v
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["alive"] == true)
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, ["gw-a", "gw-b"], "{v}");
}

/// `jitgate audit verify --log FILE --key PUB.pem`, with `gw`'s audit public key.
fn verify_offline(gw: &Gateway, log: &Path) -> crate::harness::Out {
    let key = gw.path("certs/audit_ed25519.pub.pem");
    gw.run(
        &[
            "audit",
            "verify",
            "--log",
            log.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
        &[],
    )
}

#[tokio::test]
async fn records_two_nodes_write_at_once_form_one_chain_that_verifies_offline() {
    let c = Nodes::two();
    // Both nodes append at once: tickets opened and requests made on each, in parallel.
    std::thread::scope(|s| {
        for (i, gw) in c.nodes.iter().enumerate() {
            s.spawn(move || {
                for k in 0..8 {
                    let ticket = format!("INC-6{i}{k}");
                    open_ticket(gw, &ticket, "alice");
                    let (code, v, err) =
                        request(gw, "alice", "ops", "box", &ticket, "30m", "chain test");
                    assert_eq!(code, 0, "{v} {err}");
                }
            });
        }
    });
    let out = c.b().path("chain.jsonl");
    let (code, o, err) = c
        .b()
        .run(&["audit", "export", "-o", out.to_str().unwrap()], &[]);
    assert_eq!(code, 0, "{o}\n{err}");
    let text = std::fs::read_to_string(&out).expect("the export");
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect();
    // One sequence, and records of both nodes, each named.
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=records.len() as u64).collect::<Vec<_>>());
    for node in ["gw-a", "gw-b"] {
        let n = records
            .iter()
            .filter(|r| r["node"] == node && r["event"] == "request.created")
            .count();
        assert_eq!(n, 8, "{node}'s requests in the chain");
    }
    assert!(records.iter().all(|r| r["node"].is_string()));
    // Offline, with only the file and the public key.
    let (code, o, err) = verify_offline(c.a(), &out);
    assert_eq!(code, 0, "{o}\n{err}");
    // Against the database, from either node.
    let (code, o, err) = c.a().run(&["audit", "verify"], &[]);
    assert_eq!(code, 0, "{o}\n{err}");
    assert!(o.contains("tail matches the database"), "{o}");
    // A record changed in the export is caught.
    let tampered = text.replacen("chain test", "chain tost", 1);
    std::fs::write(&out, tampered).unwrap();
    let (code, _, err) = verify_offline(c.a(), &out);
    assert_eq!(code, 1, "{err}");
    // A reviewer's audit page, on either node, verifies the database's chain.
    let (code, o, err) = c.b().cli("admin", &["sign-in-link", "rita"]);
    assert_eq!(code, 0, "{o}\n{err}");
    let link = o
        .lines()
        .find(|l| l.starts_with("https://"))
        .expect("a link");
    let ctx = crate::peers::browser().context();
    let page = ctx.page();
    page.goto(link);
    page.click("#continue");
    page.goto(&format!("{}/audit", c.b().url()));
    let verdict = page.text("#verified");
    assert!(
        verdict.contains("The chain and every signature verify")
            && verdict.contains("the end matches the database"),
        "{verdict}"
    );
    assert!(
        page.text("#audit").contains("gw-a"),
        "{}",
        page.text("#audit")
    );
    crate::console::shot(&page, "audit-two-nodes");
    // A record changed in the database is caught by the CLI and the page alike.
    let db = c.url.rsplit('/').next().expect("a database name");
    let changed = postgres().psql(
        db,
        "UPDATE audit SET record = replace(record, 'chain test', 'chain tost') \
         WHERE seq = (SELECT min(seq) FROM audit WHERE record LIKE '%chain test%') RETURNING seq",
    );
    let changed = changed.lines().next().expect("the changed record's seq");
    let (code, o, err) = c.a().run(&["audit", "verify"], &[]);
    assert_eq!(code, 1, "{o}\n{err}");
    assert!(
        err.contains("NOT intact") && err.contains(&format!("(seq {changed})")),
        "{err}"
    );
    page.goto(&format!("{}/audit", c.a().url()));
    let verdict = page.text("#verified");
    assert!(verdict.contains("does not verify"), "{verdict}");
    crate::console::shot(&page, "audit-two-nodes-tampered");
}

#[tokio::test]
async fn without_the_database_every_node_refuses_admissions_and_cuts_its_sessions_until_it_returns()
{
    let pg = Postgres::start();
    let c = Nodes::start_on(&pg, 2, QUICK);
    let g = grant_on(c.a(), "INC-503");
    let mut on_a = shell(c.a(), &g.token);
    let mut on_b = shell(c.b(), &g.token);
    let stopped = Instant::now();
    pg.stop();
    // max_staleness, plus a heartbeat to notice, plus a margin.
    for t in [&mut on_a, &mut on_b] {
        t.expect("lost its database", Duration::from_secs(8));
    }
    // Not before max_staleness from the last heartbeat that reached the database, which may be
    // up to one heartbeat (1 s) before the stop.
    let took = stopped.elapsed();
    assert!(
        took >= Duration::from_secs(2),
        "cut before max_staleness: {took:?}"
    );
    // Admissions are refused, saying why.
    let mut refused = Term::ssh_login(c.b(), "alice", &g.token);
    refused.expect("cannot reach its database", Duration::from_secs(15));
    pg.resume();
    // Back: admissions again, and the cut sessions are on record with cause `stale`.
    let deadline = Instant::now() + Duration::from_secs(20);
    let ended = loop {
        let a = c
            .a()
            .api("admin")
            .get(&format!("/api/v1/sessions?grant={}", g.grant))
            .await;
        if let Ok(a) = a
            && a.ok()
        {
            let list = a.body.as_array().cloned().unwrap_or_default();
            let stale: Vec<Value> = list
                .into_iter()
                .filter(|s| s["end_cause"] == "stale")
                .collect();
            if stale.len() == 2 {
                break stale;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the cut sessions were not recorded after the database returned\n{}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let nodes: Vec<&str> = ended.iter().filter_map(|s| s["node"].as_str()).collect();
    assert!(
        nodes.contains(&"gw-a") && nodes.contains(&"gw-b"),
        "{ended:?}"
    );
    let again = shell(c.b(), &g.token);
    again.send("exit\r");
    drop(c);
    pg.remove();
}

#[tokio::test]
async fn a_node_killed_outright_has_its_sessions_ended_by_the_others_as_node_lost() {
    let mut c = Nodes::two();
    let g = grant_on(c.a(), "INC-504");
    let mut t = shell(c.b(), &g.token);
    t.send("echo recorded-$((6*7))\r");
    t.expect("recorded-42", Duration::from_secs(5));
    c.nodes[1].kill_hard();
    // dead_after (6 s), and a heartbeat of node A to see it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        let s = crate::ssh::sessions_of(c.a(), &g.grant).await;
        if let Some(s) = s.into_iter().find(|s| !s["ended_at"].is_null()) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "gw-b's session is still live: {}",
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(s["end_cause"], "node-lost", "{s}");
    assert_eq!(s["node"], "gw-b", "{s}");
    // With the digest of what gw-b recorded, read from the shared recordings directory.
    let files = s["files"].as_array().expect("files");
    assert!(
        files
            .iter()
            .any(|f| f["bytes"].as_u64().unwrap_or(0) > 0 && f["sha256"].is_string()),
        "{s}"
    );
    let ended = crate::flows::session_ended_record(c.a(), s["id"].as_str().unwrap()).await;
    assert_eq!(ended["cause"], "node-lost", "{ended}");
    assert_eq!(ended["node"], "gw-a", "the survivor wrote it: {ended}");
    let (code, v, err) = c.a().cli_json("admin", &["nodes"]);
    assert_eq!(code, 0, "{v} {err}");
    let b = v
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "gw-b")
        .cloned()
        .expect("gw-b listed");
    assert_eq!(b["alive"], false, "{v}");
}

#[tokio::test]
async fn nodes_migrating_one_new_database_at_once_apply_each_migration_once() {
    let pg = postgres();
    let url = pg.database();
    let sshd = Sshd::start();
    let gws: Vec<Gateway> = ["gw-x", "gw-y", "gw-z"]
        .iter()
        .map(|n| Gateway::prepare(node_opts(&sshd, &url, n, "")))
        .collect();
    let outs: Vec<(i32, String, String)> = std::thread::scope(|s| {
        let hs: Vec<_> = gws
            .iter()
            .map(|gw| s.spawn(move || gw.run(&["migrate"], &[])))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (code, out, err) in &outs {
        assert_eq!(*code, 0, "{out}\n{err}");
        assert!(out.contains("up to date"), "{out}");
    }
    // Exactly one of them applied the migrations; the others found nothing to do.
    let applied: Vec<&String> = outs
        .iter()
        .map(|(_, o, _)| o)
        .filter(|o| !o.contains(": 0 migration"))
        .collect();
    assert_eq!(applied.len(), 1, "{outs:?}");
    let db = url.rsplit('/').next().unwrap();
    assert_eq!(pg.psql(db, "SELECT version FROM jitgate_schema"), "3");
    assert_eq!(pg.psql(db, "SELECT count(*) FROM audit_head"), "1");
}

#[tokio::test]
async fn a_sign_in_link_made_on_one_node_signs_in_on_another_once() {
    let c = Nodes::two();
    let (code, out, err) = c.a().cli("admin", &["sign-in-link", "bob"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let link = out
        .lines()
        .find(|l| l.starts_with("https://"))
        .expect("a link")
        .to_string();
    // The same link on node B's address: what a balancer in front of the API would do.
    let on_b = link.replacen(c.a().url(), c.b().url(), 1);
    assert_ne!(on_b, link, "{link}");
    let ctx = crate::peers::browser().context();
    let page = ctx.page();
    page.goto(&on_b);
    page.click("#continue");
    assert_eq!(page.text("#user"), "bob", "{}", page.content());
    // Spent: on either node.
    let again = crate::peers::browser().context();
    let p = again.page();
    p.goto(&link);
    p.click("#continue");
    assert!(p.text("#why").contains("already used"), "{}", p.content());
}

#[tokio::test]
async fn a_second_process_under_a_live_nodes_name_is_refused_at_start() {
    let c = Nodes::two();
    let g = grant_on(c.a(), "INC-506");
    let _term = shell(c.a(), &g.token);
    // Another gateway directory, configured as gw-a on the same database.
    let url = c.a().config.clone();
    let text = std::fs::read_to_string(&url).expect("gw-a's config");
    let other = Gateway::prepare(Opts::default());
    std::fs::write(&other.config, &text).expect("write the config");
    copy_dir(&c.a().path("certs"), &other.path("certs"));
    let (code, out, err) = other.run(
        &["serve"],
        &[(PASSWORD_ENV, crate::peers::POSTGRES_PASSWORD)],
    );
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(err.contains("gateway node name gw-a is in use"), "{err}");
    // gw-a's session was not taken for an orphan.
    let live = live_session(c.a(), &g.grant).await;
    assert!(live["ended_at"].is_null(), "{live}");
}

#[tokio::test]
async fn a_node_stopped_cleanly_starts_again_at_once_under_its_name() {
    let mut c = Nodes::two();
    c.nodes[1].restart();
    let (code, v, err) = c.b().cli_json("admin", &["nodes"]);
    assert_eq!(code, 0, "{v} {err}");
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "gw-b" && n["alive"] == true),
        "{v}"
    );
}

#[tokio::test]
async fn a_node_reaches_its_database_over_tls_it_verifies() {
    let pg = Postgres::start_tls();
    let url = format!("{}?sslmode=require", pg.database());
    let db = url
        .rsplit('/')
        .next()
        .and_then(|d| d.split('?').next())
        .expect("a database name")
        .to_string();
    let sshd = Sshd::start();
    let store = |ca: &str| format!("url = \"{url}\"\npassword = \"env:{PASSWORD_ENV}\"\n{ca}");
    // The CA that signed the server's certificate is not among the system's: refused, saying
    // why, before anything is written.
    let stranger = Gateway::prepare(node_opts(&sshd, &url, "gw-x", QUICK).store(&store("")));
    let (code, out, err) = stranger.run(&["migrate"], &[]);
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(!err.contains(crate::peers::POSTGRES_PASSWORD), "{err}");
    assert_eq!(
        pg.psql(
            &db,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'jitgate_schema'"
        ),
        "0"
    );
    // With store.ca: the node serves, over TLS.
    let ca = format!("ca = \"{}\"\n", pg.ca().display());
    let mut gw = Gateway::prepare(node_opts(&sshd, &url, "gw-a", QUICK).store(&store(&ca)));
    gw.init();
    sshd.trust(&gw.path("certs/ssh_user_ca.pub"));
    gw.serve();
    let g = grant_on(&gw, "INC-520");
    let _t = shell(&gw, &g.token);
    let tls = pg.psql(
        "postgres",
        "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = 'jitgate'",
    );
    let (with_tls, all) = tls.split_once('|').expect("two counts");
    assert!(all.parse::<u32>().unwrap() > 0, "{tls}");
    assert_eq!(with_tls, all, "every connection of the node is TLS: {tls}");
    drop(gw);
    pg.remove();
}
