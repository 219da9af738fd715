//! The console's "Open console" on a real nginx admin console behind the HTTPS gateway, and the
//! HTTPS session's exchanges on its session page.

use std::time::{Duration, Instant};

use super::Env;
use crate::flows::{open_ticket, request};
use crate::peers::browser;

#[test]
fn open_console_admits_the_browser_to_nginx_and_the_session_page_lists_its_requests() {
    let env = Env::start();
    let gw = &env.gw;
    open_ticket(gw, "INC-93", "alice");
    let (code, v, err) = request(
        gw,
        "alice",
        "console-read",
        "console",
        "INC-93",
        "30m",
        "look at the console",
    );
    assert_eq!(code, 0, "{v} {err}");
    let req = v["id"].as_str().unwrap().to_string();
    let (code, out, err) = gw.cli("bob", &["approve", &req]);
    assert_eq!(code, 0, "{out}{err}");

    let link = |user: &str| {
        let (code, out, err) = gw.cli("admin", &["sign-in-link", user]);
        assert_eq!(code, 0, "{out}{err}");
        out.lines()
            .find(|l| l.starts_with("https://"))
            .unwrap()
            .to_string()
    };
    let alice = browser().context();
    let a = alice.page();
    a.goto(&link("alice"));
    a.click("#continue");
    a.goto(&format!("{}/requests/{req}", gw.url()));
    a.click("button:has-text(\"Open console\")");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !a.url().starts_with("https://localhost:") || a.url().contains("/_jitgate/") {
        assert!(
            Instant::now() < deadline,
            "still at {}: {}",
            a.url(),
            a.content()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let home = a.content();
    assert!(
        home.contains("jitgate-it console home"),
        "nginx's page through the gateway: {home}"
    );
    // A request outside the task's allow-list is refused by the gateway, not by nginx.
    let refused =
        a.eval("async () => (await fetch('/users/dave/unlock', {method: 'POST'})).status");
    assert_eq!(refused, 403, "POST is outside console-read");
    assert!(
        !env.nginx.access_log().contains("POST /users/dave/unlock"),
        "the refused request never reached nginx"
    );

    // The reviewer's session page lists the exchanges of the HTTPS session.
    let rita = browser().context();
    let r = rita.page();
    r.goto(&link("rita"));
    r.click("#continue");
    r.goto(&format!("{}/sessions?user=alice&protocol=https", gw.url()));
    r.click("#sessions tbody tr:first-child a");
    let table = r.wait_until_text("#http", "GET", Duration::from_secs(10));
    assert!(
        table.contains("POST") && table.contains("refused"),
        "{table}"
    );
}
