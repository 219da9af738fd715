//! People signing in: through a real OpenID provider (tests/peers/idp.mjs) in headless
//! Chromium and with `jitgate login`; refusals (unmapped groups, tampered state, replayed
//! callback, an ID token for another client, an expired session, a cross-site POST); step-up
//! for high-impact approvals; one-time sign-in links where there is no provider.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{BIN, Gateway, Opts, Out, Policy, output};
use crate::peers::{Context, Page, browser, idp};
use crate::sshd::free_port;

mod tickets;

/// The password of every test account at the provider.
const PASSWORD: &str = "correct horse battery staple";

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A gateway whose people sign in through the test provider, and the provider's client for it.
struct Sso {
    gw: Gateway,
    client_id: String,
}

/// `[oidc]` for the test provider with `extra` keys; helpdesk → technician, approvers →
/// approver.
fn sso(extra_oidc: &str, extra: &str) -> Sso {
    sso_with(extra_oidc, extra, "client_secret_basic")
}

/// [`sso`], with the client registered for `auth_method` at the token endpoint.
fn sso_with(extra_oidc: &str, extra: &str, auth_method: &str) -> Sso {
    let port = free_port();
    let redirect = format!("https://127.0.0.1:{port}/auth/callback");
    let (client_id, secret) = idp().register_client(&redirect, auth_method);
    let toml = format!(
        r#"
[oidc]
issuer = "{issuer}"
client_id = "{client_id}"
client_secret = "{secret}"
ca = "{ca}"
redirect_url = "{redirect}"
{extra_oidc}

[[oidc.role_mappings]]
group = "it-helpdesk"
roles = ["technician"]

[[oidc.role_mappings]]
group = "it-approvers"
roles = ["approver"]
{extra}
"#,
        issuer = idp().issuer(),
        ca = idp().ca().display(),
    );
    let gw = Gateway::start(
        Opts::default()
            .policy(Policy::PermitAll)
            .api_port(port)
            .extra(&toml),
    );
    Sso { gw, client_id }
}

/// A fresh account at the provider; its id and user name are `name` plus a number.
fn person(name: &str, groups: &[&str]) -> String {
    let id = format!("{name}{}", SEQ.fetch_add(1, Ordering::Relaxed));
    idp().set_account(
        &id,
        PASSWORD,
        json!({ "preferred_username": id, "name": name, "email": format!("{id}@example.test"), "groups": groups }),
    );
    id
}

/// On the provider's login form: sign in as `login`.
fn at_provider(page: &Page, login: &str) -> String {
    page.fill("#login", login);
    page.fill("#password", PASSWORD);
    page.click("#submit")
}

/// Sign `login` in to the console from the start; the page after.
fn browser_sign_in(gw: &Gateway, ctx: &Context, login: &str) -> Page {
    let page = ctx.page();
    page.goto(&format!("{}/login", gw.url()));
    assert!(
        page.url().starts_with(idp().issuer()),
        "/login must send the browser to the provider, it is at {}",
        page.url()
    );
    at_provider(&page, login);
    page
}

/// `fetch` from the page; `{status, body}`.
fn fetch(page: &Page, method: &str, path: &str, headers: Value) -> Value {
    page.eval(&format!(
        "async () => {{ const r = await fetch({path:?}, {{ method: {method:?}, headers: {headers}, body: {body} }}); \
         const t = await r.text(); let b; try {{ b = JSON.parse(t) }} catch (e) {{ b = t }}; return {{ status: r.status, body: b }}; }}",
        body = if method == "GET" { "undefined" } else { "'{}'" },
    ))
}

/// A screenshot of `page`, kept under the target directory (`it-screenshots/`) to look at.
fn screenshot(page: &Page, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("it-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    let p = dir.join(format!("{name}.png"));
    page.screenshot(&p);
    p
}

#[tokio::test]
async fn a_person_signs_in_through_the_provider_and_out_again() {
    let s = sso("", "");
    let who = person("tina", &["it-helpdesk", "staff"]);
    let ctx = browser().context();
    let page = browser_sign_in(&s.gw, &ctx, &who);
    assert_eq!(
        page.url(),
        format!("{}/", s.gw.url()),
        "lands on the home page"
    );
    assert_eq!(page.text("#user"), who);
    assert!(
        page.text("#roles").contains("technician"),
        "{}",
        page.text("#roles")
    );
    assert!(page.text("#groups").contains("it-helpdesk"));
    let shot = screenshot(&page, "home");
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);

    // The cookie: the console's own name, a random handle, HttpOnly, Secure, Lax.
    let c = ctx
        .cookie("__Host-jitgate-console")
        .expect("console cookie");
    assert_eq!(c["httpOnly"], true);
    assert_eq!(c["secure"], true);
    assert_eq!(c["sameSite"], "Lax");
    assert!(c["value"].as_str().unwrap().len() >= 50);
    assert!(
        ctx.cookie("__Host-jitgate-login").is_none(),
        "the round-trip cookie is gone"
    );

    // The API takes the session: who am I, and a read.
    let me = fetch(&page, "GET", "/api/v1/whoami", json!({}));
    assert_eq!(me["status"], 200, "{me}");
    assert_eq!(me["body"]["user"], who.as_str());
    assert_eq!(me["body"]["method"], "oidc");
    let list = fetch(&page, "GET", "/api/v1/requests", json!({}));
    assert_eq!(list["status"], 200, "{list}");

    // Audited, and the person is in the store with a first and last sign-in.
    let signed = s.gw.audit("auth.signed_in").await;
    let rec = signed
        .iter()
        .find(|r| r["user"] == who.as_str())
        .expect("auth.signed_in");
    assert_eq!(rec["issuer"], idp().issuer());
    assert_eq!(rec["subject"], who.as_str());
    assert_eq!(rec["groups"], json!(["it-helpdesk", "staff"]));
    assert_eq!(rec["source"], "127.0.0.1");

    // Sign out: the session ends here and the browser goes to the provider's sign-out.
    page.click("#sign-out");
    assert!(
        page.url().starts_with(idp().issuer()),
        "sign-out continues at the provider: {}",
        page.url()
    );
    page.click("#logout");
    let after = ctx.page();
    let status = after.goto(&format!("{}/api/v1/whoami", s.gw.url()));
    assert_eq!(status, Some(401), "{}", after.content());
    assert_eq!(s.gw.audit("auth.signed_out").await.len(), 1);
}

#[tokio::test]
async fn a_client_registered_for_client_secret_post_signs_people_in_with_it() {
    let s = sso_with(
        "token_endpoint_auth = \"client_secret_post\"",
        "",
        "client_secret_post",
    );
    let who = person("pia", &["it-helpdesk"]);
    let ctx = browser().context();
    let page = browser_sign_in(&s.gw, &ctx, &who);
    assert_eq!(page.text("#user"), who, "{}", page.content());
}

#[tokio::test]
async fn a_person_whose_groups_map_to_no_role_is_refused_and_told_which_groups() {
    let s = sso("", "");
    let who = person("mark", &["marketing", "staff"]);
    let ctx = browser().context();
    let page = browser_sign_in(&s.gw, &ctx, &who);
    let why = page.text("#why");
    assert!(why.contains("marketing") && why.contains("staff"), "{why}");
    assert!(why.contains("an admin must map one"), "{why}");
    screenshot(&page, "refused");
    assert!(ctx.cookie("__Host-jitgate-console").is_none());
    let refused = s.gw.audit("auth.refused").await;
    let rec = &refused[0];
    assert_eq!(rec["user"], who.as_str());
    assert_eq!(rec["subject"], who.as_str());
    assert_eq!(rec["groups"], json!(["marketing", "staff"]));
    assert!(rec["reason"].as_str().unwrap().contains("mapped"));
}

#[tokio::test]
async fn a_tampered_state_and_a_replayed_callback_are_refused() {
    let s = sso("", "");
    let who = person("tom", &["it-helpdesk"]);
    let ctx = browser().context();
    let page = browser_sign_in(&s.gw, &ctx, &who);
    assert_eq!(page.text("#user"), who);
    let callback = page
        .navigations()
        .into_iter()
        .find(|u| u.starts_with(&format!("{}/auth/callback?", s.gw.url())))
        .expect("the provider sent the browser to /auth/callback");

    // The same answer again (a replay): its state was used up.
    let replay = ctx.page();
    replay.goto(&callback);
    let why = replay.text("#why");
    assert!(why.contains("already used"), "{why}");
    screenshot(&replay, "replayed-callback");

    // A sign-in in progress, answered with another state than the one it sent.
    let other = browser().context();
    let p = other.page();
    p.goto(&format!("{}/login", s.gw.url()));
    let code = crate::peers::query_param(&callback, "code").unwrap();
    p.goto(&format!(
        "{}/auth/callback?code={code}&state=tampered{}",
        s.gw.url(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let why = p.text("#why");
    assert!(why.contains("state does not match"), "{why}");
    assert!(other.cookie("__Host-jitgate-console").is_none());
    assert!(s.gw.audit("auth.refused").await.len() >= 2);
}

#[tokio::test]
async fn an_id_token_issued_for_another_client_is_refused() {
    let s = sso("", "");
    let who = person("ann", &["it-helpdesk"]);
    idp().tamper_next_id_token(&s.client_id, "some-other-app");
    let ctx = browser().context();
    let page = browser_sign_in(&s.gw, &ctx, &who);
    let why = page.text("#why");
    assert!(why.contains("issued for another client"), "{why}");
    assert!(ctx.cookie("__Host-jitgate-console").is_none());
}

#[tokio::test]
async fn a_console_session_ends_after_its_idle_timeout() {
    let s = sso(
        "",
        "[console]\nidle_timeout = \"2s\"\nabsolute_timeout = \"1h\"",
    );
    let who = person("ian", &["it-helpdesk"]);
    let ctx = browser().context();
    let page = browser_sign_in(&s.gw, &ctx, &who);
    assert_eq!(page.text("#user"), who);
    std::thread::sleep(Duration::from_millis(2500));
    let me = fetch(&page, "GET", "/api/v1/whoami", json!({}));
    assert_eq!(me["status"], 401, "{me}");
    assert!(
        me["body"]["message"]
            .as_str()
            .unwrap()
            .contains("without use"),
        "{me}"
    );
    // The console sends the browser to sign in again (the provider, whose own session is
    // still fresh, signs the person straight back in).
    let again = ctx.page();
    again.goto(&format!("{}/", s.gw.url()));
    assert!(
        again
            .navigations()
            .iter()
            .any(|u| u.starts_with(&format!("{}/login?return_to=", s.gw.url()))),
        "{:?}",
        again.navigations()
    );
}

/// A pending request by alice (API key) for `task` on dc-01.
async fn pending_request(gw: &Gateway, task: &str) -> String {
    let a = gw
        .api("admin")
        .post(
            "/api/v1/tickets",
            json!({ "id": "INC-77", "assignee": "alice", "title": "locked out" }),
        )
        .await
        .unwrap();
    assert!(a.ok() || a.status == 409, "{:?}", a.body);
    let r = gw
        .api("alice")
        .post(
            "/api/v1/requests",
            json!({ "task": task, "target": "dc-01", "ticket": "INC-77", "ttl": "10m", "reason": "user locked out" }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_cross_site_post_with_the_console_cookie_is_refused() {
    let s = sso("", "");
    let req = pending_request(&s.gw, "reset-credential").await;
    let who = person("abe", &["it-approvers"]);
    let ctx = browser().context();
    let page = browser_sign_in(&s.gw, &ctx, &who);
    assert_eq!(page.text("#user"), who);

    // A page on another origin of the same site (the provider's port on 127.0.0.1, as a target
    // behind the HTTPS gateway would be) posts a form to the API with the browser's cookie.
    let attack = idp().page(&format!(
        "<form id=f method=post enctype=text/plain action=\"{}/api/v1/requests/{req}/approve\">\
         <input name='{{\"comment\":\"' value='\"}}'></form><script>document.getElementById('f').submit()</script>",
        s.gw.url()
    ));
    let evil = ctx.page();
    evil.goto(&attack);
    evil.wait_url(s.gw.url(), Duration::from_secs(10));
    let answer = evil.content();
    assert!(answer.contains("csrf"), "{answer}");
    let r =
        s.gw.api("admin")
            .get(&format!("/api/v1/requests/{req}"))
            .await
            .unwrap();
    assert_eq!(r.body["state"], "pending", "{:?}", r.body);

    // From the console's own page, without the CSRF token: refused; with it: approved.
    page.goto(&format!("{}/", s.gw.url()));
    let path = format!("/api/v1/requests/{req}/approve");
    let bare = fetch(
        &page,
        "POST",
        &path,
        json!({ "Content-Type": "application/json" }),
    );
    assert_eq!(bare["status"], 403, "{bare}");
    let token = page.eval("document.querySelector('input[name=csrf_token]').value");
    let ok = fetch(
        &page,
        "POST",
        &path,
        json!({ "Content-Type": "application/json", "X-CSRF-Token": token }),
    );
    assert_eq!(ok["status"], 200, "{ok}");
    assert_eq!(ok["body"]["state"], "approved", "{ok}");
    assert_eq!(ok["body"]["approvals"][0]["approver"], who.as_str());
}

/// A client command with the credentials file in `xdg` and no API key.
fn cli_as_person(gw: &Gateway, xdg: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(&gw.config).args(args);
    cmd.env_remove("JITGATE_API_KEY")
        .env("JITGATE_URL", gw.url())
        .env("JITGATE_CA", gw.ca())
        .env("XDG_CONFIG_HOME", xdg);
    output(cmd)
}

/// `jitgate login --no-browser`, with the test's Chromium playing the browser: signs in at the
/// provider when it asks.
fn cli_login(gw: &Gateway, xdg: &Path, ctx: &Context, login: &str) -> Out {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&gw.config)
        .args(["login", "--no-browser"])
        .env_remove("JITGATE_API_KEY")
        .env("JITGATE_URL", gw.url())
        .env("JITGATE_CA", gw.ca())
        .env("XDG_CONFIG_HOME", xdg)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jitgate login");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    let url = loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "login said: {said}");
        said.push_str(&line);
        if line.starts_with("https://") {
            break line.trim().to_string();
        }
    };
    assert!(
        url.starts_with(&format!("{}/login?cli_redirect=", gw.url())),
        "{url}"
    );
    let page = ctx.page();
    page.goto(&url);
    if page.url().starts_with(idp().issuer()) {
        at_provider(&page, login);
    }
    page.wait_url("http://127.0.0.1:", Duration::from_secs(20));
    assert!(page.content().contains("Signed in"), "{}", page.content());
    let out = child.wait_with_output().expect("jitgate login");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut err, &mut rest).ok();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        said + &rest,
    )
}

#[tokio::test]
async fn jitgate_login_gives_the_cli_a_credential_and_logout_revokes_it() {
    let s = sso("", "");
    let who = person("lena", &["it-helpdesk"]);
    let xdg = tempfile::tempdir().unwrap();
    let ctx = browser().context();
    let (code, out, err) = cli_login(&s.gw, xdg.path(), &ctx, &who);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("Signed in as {who}")), "{out}");

    let file = xdg.path().join("jitgate/credentials.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let stored: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let credential = stored[s.gw.url()]["credential"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(credential.starts_with("jgs_"));
    assert!(
        !s.gw.logs().contains(&credential),
        "the credential is never logged"
    );

    let (code, out, err) = cli_as_person(&s.gw, xdg.path(), &["requests"]);
    assert_eq!(code, 0, "jitgate requests with no API key: {out}\n{err}");
    let (code, out, _) = cli_as_person(&s.gw, xdg.path(), &["--json", "whoami"]);
    assert_eq!(code, 0);
    let me: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(me["user"], who.as_str());
    assert_eq!(me["roles"], json!(["technician"]));
    assert_eq!(me["method"], "oidc");
    assert!(me["signed_in_at"].is_string() && me["expires_at"].is_string());

    let (code, out, err) = cli_as_person(&s.gw, xdg.path(), &["logout"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, _, err) = cli_as_person(&s.gw, xdg.path(), &["requests"]);
    assert_ne!(code, 0, "after logout the CLI is nobody");
    assert!(err.contains("jitgate login"), "{err}");
    // The credential itself was revoked at the gateway, not only forgotten.
    let revoked =
        s.gw.client(Some(credential))
            .get("/api/v1/whoami")
            .await
            .unwrap();
    assert_eq!(revoked.status, 401, "{:?}", revoked.body);
}

#[tokio::test]
async fn approving_a_high_impact_request_needs_a_sign_in_newer_than_the_bound() {
    let s = sso("step_up_max_age = \"3s\"", "");
    // endpoint-remediation is high impact (two approvals); carol's API key may not do it.
    let req = pending_request(&s.gw, "endpoint-remediation").await;
    let (code, _, err) = s.gw.cli("carol", &["approve", &req]);
    assert_ne!(code, 0);
    assert!(err.contains("an API key cannot do it"), "{err}");

    let who = person("amy", &["it-approvers"]);
    let xdg = tempfile::tempdir().unwrap();
    let ctx = browser().context();
    let (code, out, err) = cli_login(&s.gw, xdg.path(), &ctx, &who);
    assert_eq!(code, 0, "{out}\n{err}");
    std::thread::sleep(Duration::from_millis(4500));
    let (code, _, err) = cli_as_person(&s.gw, xdg.path(), &["approve", &req]);
    assert_ne!(
        code, 0,
        "a sign-in older than step_up_max_age cannot approve"
    );
    assert!(
        err.contains("sign in again with jitgate login to approve a high-impact request"),
        "{err}"
    );
    // Signing in again makes the provider check the person again (max_age), and then it works.
    let (code, out, err) = cli_login(&s.gw, xdg.path(), &ctx, &who);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = cli_as_person(&s.gw, xdg.path(), &["approve", &req]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[tokio::test]
async fn without_a_provider_one_time_links_sign_people_in_once() {
    let gw = Gateway::start(Opts::default());
    // jitgate login says at once that there is nobody to sign in with.
    let xdg = tempfile::tempdir().unwrap();
    let (code, _, err) = cli_as_person(&gw, xdg.path(), &["login", "--no-browser"]);
    assert_ne!(code, 0);
    assert!(err.contains("has no identity provider"), "{err}");
    let (code, out, err) = gw.cli("admin", &["sign-in-link", "bob"]);
    // A gateway without [oidc]: /login says how people sign in here.
    let ctx = browser().context();
    let page = ctx.page();
    page.goto(&format!("{}/login", gw.url()));
    assert!(page.content().contains("jitgate sign-in-link"));
    screenshot(&page, "no-provider");
    assert_eq!(code, 0, "{out}\n{err}");
    let link = out
        .lines()
        .find(|l| l.starts_with("https://"))
        .expect("a link")
        .to_string();
    let (code, _, err) = gw.cli("alice", &["sign-in-link", "bob"]);
    assert_ne!(code, 0, "only admins make links");
    assert!(err.contains("admin"), "{err}");

    page.goto(&link);
    screenshot(&page, "link");
    page.click("#continue");
    assert!(page.content().contains("id=\"user\""), "{}", page.content());
    assert_eq!(page.text("#user"), "bob");
    assert!(page.text("#roles").contains("approver"));
    let me = fetch(&page, "GET", "/api/v1/whoami", json!({}));
    assert_eq!(me["body"]["method"], "link", "{me}");

    let again = browser().context();
    let p = again.page();
    p.goto(&link);
    p.click("#continue");
    assert!(p.text("#why").contains("already used"), "{}", p.content());
    assert!(again.cookie("__Host-jitgate-console").is_none());
}

#[tokio::test]
async fn a_person_known_only_from_the_provider_requests_and_is_admitted() {
    let s = sso("", "");
    let who = person("olga", &["it-helpdesk"]);
    let xdg = tempfile::tempdir().unwrap();
    let ctx = browser().context();
    let (code, out, err) = cli_login(&s.gw, xdg.path(), &ctx, &who);
    assert_eq!(code, 0, "{out}\n{err}");
    let a =
        s.gw.api("admin")
            .post(
                "/api/v1/tickets",
                json!({ "id": "INC-78", "assignee": who, "title": "printer" }),
            )
            .await
            .unwrap();
    assert!(a.ok(), "{:?}", a.body);
    let (code, out, err) = cli_as_person(
        &s.gw,
        xdg.path(),
        &[
            "request",
            "--task",
            "reset-credential",
            "--target",
            "dc-01",
            "--ticket",
            "INC-78",
            "--ttl",
            "10m",
            "--reason",
            "printer queue",
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let req = out.lines().next().unwrap().trim().to_string();
    // The approval re-checks the requester, whom only the store knows (no [[users]] entry).
    let (code, out, err) = s.gw.cli("carol", &["approve", &req]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = cli_as_person(&s.gw, xdg.path(), &["token", &req]);
    assert_eq!(code, 0, "{out}\n{err}");
    let token = out.lines().next().unwrap().trim().to_string();
    let admitted = s.gw.admit(&token, &who, "ssh").await;
    assert!(admitted.ok(), "{:?}", admitted.body);
    assert_eq!(admitted.body["user"], who.as_str());
}

#[tokio::test]
async fn an_unreachable_provider_gets_a_page_that_says_so_and_api_keys_still_work() {
    let dead = free_port();
    let gw = Gateway::start(Opts::default().extra(&format!(
        r#"
[oidc]
issuer = "https://127.0.0.1:{dead}"
client_id = "jitgate"
client_secret = "a-secret-nobody-will-check"

[[oidc.role_mappings]]
group = "it-helpdesk"
roles = ["technician"]
"#
    )));
    let mut cmd = Command::new("curl");
    cmd.args(["-sk", "-o", "-", "-w", "\n%{http_code}"])
        .arg(format!("{}/login", gw.url()));
    let (code, out, err) = output(cmd);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("\n502"), "{out}");
    assert!(
        out.contains("Sign-in is not available") && out.contains(&format!("127.0.0.1:{dead}")),
        "{out}"
    );
    // The gateway serves on: automation with API keys does not depend on the provider.
    let me = gw.api("alice").get("/api/v1/whoami").await.unwrap();
    assert_eq!(me.status, 200, "{:?}", me.body);
    assert_eq!(me.body["method"], "api_key");
}
