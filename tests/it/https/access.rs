//! Who gets in and how: a bearer token or the login page's cookie, a certificate minted for the
//! session that nginx verifies, credentials that never reach the target or a log, and tokens
//! that work only at their own gateway.

use std::fs;
use std::process::{Child, Command};

use serde_json::Value;

use super::{Env, access_lines, done, ended_sessions, http_log, openssl, session_dir, url_decode};
use crate::flows::granted;
use crate::harness::output;
use crate::nginx::HOME;

#[tokio::test]
async fn curl_with_a_bearer_token_reaches_nginx_with_a_certificate_minted_for_the_session() {
    let env = Env::start();
    let g = env.grant("alice", "console-admin", "INC-1");

    // The technician's view: the console's page, over HTTP/2 (curl's default when offered).
    let r = env.bearer(&g.token, "/", &[]);
    r.expect(200);
    assert_eq!(r.body, HOME);
    assert_eq!(r.version, "2", "ALPN should offer h2: {r:?}");
    let dn = r.header("x-client-dn").unwrap_or_default();
    assert!(dn.contains("CN=alice"), "nginx saw client DN {dn:?}");

    // The certificate nginx verified: jitgate's CA, CN = user, SAN names the grant, it expires
    // with the grant.
    let pem = url_decode(&r.header("x-client-cert").expect("X-Client-Cert"));
    let cert = env.scratch("client.pem");
    fs::write(&cert, &pem).expect("write the client certificate");
    let ca = env.gw.ca().display().to_string();
    let cert_s = cert.display().to_string();
    let verified = openssl(&["verify", "-CAfile", &ca, &cert_s]);
    assert!(verified.contains(": OK"), "{verified}");
    let text = openssl(&["x509", "-in", &cert_s, "-noout", "-text"]);
    assert!(text.contains("Subject: CN = alice"), "{text}");
    let san = format!("URI:urn:jitgate:grant:{}", g.grant);
    assert!(text.contains(&san), "no {san} in\n{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    let end = openssl(&[
        "x509", "-in", &cert_s, "-noout", "-enddate", "-dateopt", "iso_8601",
    ]);
    let grant = crate::flows::grant_state(&env.gw, &g.grant).await;
    let expires = time::OffsetDateTime::from_unix_timestamp(
        grant["expires_at"].as_i64().expect("expires_at"),
    )
    .expect("a time");
    let want = expires
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]Z"
        ))
        .expect("format");
    assert_eq!(end.trim(), format!("notAfter={want}"), "{grant}");

    // What nginx logged: the client certificate, jitgate's headers, no bearer token.
    let lines = access_lines(&env.nginx, "GET", "/");
    assert_eq!(lines.len(), 1, "{}", env.nginx.access_log());
    let line = &lines[0];
    for want in [
        "GET / 200 ".to_string(),
        "dn=\"CN=alice\"".into(),
        "auth=\"-\"".into(),
        "user=\"alice\"".into(),
        format!("grant=\"{}\"", g.grant),
        "ticket=\"INC-1\"".into(),
        "xff=\"127.0.0.1\"".into(),
        "xproto=\"https\"".into(),
        format!("xhost=\"{}\"", env.https_addr()),
    ] {
        assert!(line.contains(&want), "access log lacks {want:?}: {line}");
    }
    assert!(!line.contains("jgt_"), "the token reached nginx: {line}");

    // A client cannot pose as jitgate by sending its headers.
    env.bearer(&g.token, "/", &["-H", "X-Jitgate-User: root"])
        .expect(200);
    let log = env.nginx.access_log();
    assert!(
        !log.contains("root"),
        "a client-sent X-Jitgate-User reached nginx:\n{log}"
    );

    // The target's absolute redirects stay on the gateway; its cookies lose their Domain.
    let r = env.bearer(&g.token, "/moved", &[]);
    r.expect(302);
    assert_eq!(
        r.header("location").as_deref(),
        Some(format!("{}/landing?from=moved", env.gw.https_url()).as_str()),
        "{}",
        r.head
    );
    let r = env.bearer(&g.token, "/set-cookie", &[]);
    r.expect(200);
    let cookie = r.header("set-cookie").expect("Set-Cookie");
    assert!(cookie.starts_with("console_sid=s3"), "{cookie}");
    assert!(!cookie.to_ascii_lowercase().contains("domain"), "{cookie}");

    // Straight to nginx, without a jitgate certificate, the console refuses.
    let direct = env.curl_url(
        &format!("{}/", env.nginx.url()),
        &env.nginx.server_ca(),
        &[],
    );
    direct.expect(400);
    assert!(
        direct.body.contains("No required SSL certificate was sent"),
        "{direct:?}"
    );
    // Nor does a certificate from another CA help (here the console's own CA).
    let dir = env.nginx.path("");
    let key = dir.join("rogue.key").display().to_string();
    let rogue = dir.join("rogue.pem").display().to_string();
    let csr = dir.join("rogue.csr").display().to_string();
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=alice",
    ]);
    let console_ca = env.nginx.server_ca().display().to_string();
    let console_key = env.nginx.path("console-ca.key").display().to_string();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &console_ca,
        "-CAkey",
        &console_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        &rogue,
    ]);
    let direct = env.curl_url(
        &format!("{}/", env.nginx.url()),
        &env.nginx.server_ca(),
        &["--cert", &rogue, "--key", &key],
    );
    assert_eq!(direct.status, 400, "{direct:?}");
    assert!(direct.body.contains("SSL certificate error"), "{direct:?}");
}

#[tokio::test]
async fn cookie_login_works_and_the_token_never_appears_in_a_cookie_or_a_log() {
    let env = Env::start();
    let g = env.grant("alice", "console-admin", "INC-2");

    // Without a credential: browsers go to the login page, other clients are told what to send.
    let r = env.curl("/", &["-H", "Accept: text/html"]);
    r.expect(303);
    assert_eq!(r.header("location").as_deref(), Some("/_jitgate/login"));
    let r = env.curl("/", &[]);
    r.expect(401);
    assert!(r.body.contains("Authorization: Bearer"), "{}", r.body);
    let form = env.curl("/_jitgate/login", &[]);
    form.expect(200);
    assert!(form.body.contains("name=\"token\""), "{}", form.body);

    // A wrong token: the form again, saying why, and no cookie.
    let (body, last) = g.token.split_at(g.token.len() - 1);
    let wrong = format!("{body}{}", if last == "x" { "y" } else { "x" });
    let r = env.curl(
        "/_jitgate/login",
        &["--http1.1", "--data-urlencode", &format!("token={wrong}")],
    );
    r.expect(200);
    assert!(r.header("set-cookie").is_none(), "{}", r.head);
    assert!(r.body.contains("role=\"alert\""), "{}", r.body);

    // The real token: 303 to the console with a cookie that holds a random handle.
    let r = env.curl(
        "/_jitgate/login",
        &[
            "--http1.1",
            "--data-urlencode",
            &format!("token={}", g.token),
        ],
    );
    r.expect(303);
    assert_eq!(r.header("location").as_deref(), Some("/"));
    let set = r.header("set-cookie").expect("Set-Cookie");
    let (pair, attrs) = set.split_once(';').expect("cookie attributes");
    let handle = pair
        .strip_prefix("__Host-jitgate=")
        .unwrap_or_else(|| panic!("cookie {set:?}"));
    assert_eq!(attrs.trim(), "Path=/; Secure; HttpOnly; SameSite=Strict");
    assert!(handle.len() >= 32, "handle {handle:?} is short");
    let secret = g.token.trim_start_matches("jgt_");
    assert!(
        !handle.contains(&secret[..16]) && !set.contains(&g.token),
        "the cookie carries the token: {set}"
    );

    // The cookie opens the console; nginx gets the site's own cookies, never jitgate's.
    let cookie = format!("Cookie: __Host-jitgate={handle}; theme=dark");
    let r = env.curl("/", &["-H", &cookie]);
    r.expect(200);
    assert_eq!(r.body, HOME);
    let lines = access_lines(&env.nginx, "GET", "/");
    assert_eq!(lines.len(), 1, "{}", env.nginx.access_log());
    assert!(lines[0].contains("cookie=\"theme=dark\""), "{}", lines[0]);
    assert!(lines[0].contains("dn=\"CN=alice\""), "{}", lines[0]);

    // The bearer header is stripped too.
    env.bearer(&g.token, "/index.html", &[]).expect(200);
    let lines = access_lines(&env.nginx, "GET", "/index.html");
    assert_eq!(lines.len(), 1, "{}", env.nginx.access_log());
    assert!(lines[0].contains("auth=\"-\""), "{}", lines[0]);

    // Logout ends the cookie's session; the cookie is cleared and no longer works.
    let r = env.curl("/_jitgate/logout", &["-H", &cookie]);
    r.expect(200);
    let cleared = r.header("set-cookie").expect("Set-Cookie on logout");
    assert!(
        cleared.starts_with("__Host-jitgate=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    let r = env.curl("/", &["-H", &cookie]);
    r.expect(401);
    assert!(r.body.contains("no longer valid"), "{}", r.body);

    // End the bearer session too, then look everywhere the token could have leaked.
    done(&env, "alice", &g);
    let sessions = ended_sessions(&env.gw, &g.grant).await;
    assert_eq!(
        sessions.len(),
        2,
        "a login session and a bearer session: {sessions:?}"
    );
    let logged_out: Vec<_> = sessions
        .iter()
        .filter(|s| s["end_reason"] == "logged out")
        .collect();
    assert_eq!(logged_out.len(), 1, "{sessions:?}");
    assert_eq!(logged_out[0]["end_cause"], "client", "{sessions:?}");
    let mut places = vec![
        ("gateway log".to_string(), env.gw.logs()),
        (
            "audit log".into(),
            fs::read_to_string(env.gw.audit_log()).expect("audit log"),
        ),
        ("nginx access log".into(), env.nginx.access_log()),
        ("nginx error log".into(), env.nginx.error_log()),
    ];
    for s in &sessions {
        let dir = session_dir(s);
        for f in ["http.jsonl", "session.json"] {
            let text = fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            places.push((format!("{}/{f}", dir.display()), text));
        }
    }
    assert!(!env.gw.logs().is_empty(), "the gateway logged nothing");
    for (what, text) in places {
        assert!(
            !text.contains(&g.token) && !text.contains(secret),
            "the token appears in the {what}"
        );
    }
}

#[tokio::test]
async fn concurrent_first_requests_with_one_token_share_one_session() {
    let env = Env::start();
    let g = env.grant("alice", "console-read", "INC-10");
    let curls: Vec<Child> = (0..4)
        .map(|i| {
            let file = env.scratch(&format!("parallel-{i}"));
            env.spawn_download(&g.token, "/", &file, &[])
        })
        .collect();
    for c in curls {
        let out = c.wait_with_output().expect("wait for curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    done(&env, "alice", &g);
    let list = ended_sessions(&env.gw, &g.grant).await;
    let ids: Vec<&Value> = list.iter().map(|s| &s["id"]).collect();
    assert_eq!(list.len(), 1, "one token, one session; got {ids:?}");
    assert_eq!(http_log(&list[0]).len(), 4);
}

#[tokio::test]
async fn grant_tokens_work_only_at_their_own_gateway() {
    let env = Env::start();
    // An SSH grant (reset-credential on dc-01) at the HTTPS gateway.
    let ssh = granted(&env.gw, "alice", "INC-7");
    let r = env.bearer(&ssh.token, "/", &[]);
    r.expect(403);
    let why = "is for ssh target dc-01; use the SSH gateway";
    assert!(r.body.contains(why), "{}", r.body);
    let r = env.curl(
        "/_jitgate/login",
        &[
            "--http1.1",
            "--data-urlencode",
            &format!("token={}", ssh.token),
        ],
    );
    r.expect(200);
    assert!(r.header("set-cookie").is_none(), "{}", r.head);
    assert!(r.body.contains(why), "{}", r.body);
    assert!(
        env.nginx.access_log().is_empty(),
        "an SSH grant reached the console:\n{}",
        env.nginx.access_log()
    );

    // An HTTPS grant at the SSH gateway.
    let https = env.grant("dave", "console-admin", "INC-8");
    let mut cmd = Command::new("sshpass");
    cmd.arg("-e")
        .arg("ssh")
        .args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
        ])
        .args(["-o", "PreferredAuthentications=password"])
        .args(["-o", "NumberOfPasswordPrompts=1", "-p"])
        .arg(env.gw.ssh_port().to_string())
        .arg("dave@127.0.0.1")
        .arg("true")
        .env("SSHPASS", &https.token)
        .env_remove("SSH_AUTH_SOCK");
    let (code, out, err) = output(cmd);
    assert_ne!(code, 0, "the HTTPS token logged in over SSH: {out} {err}");

    // Both refusals are audited with the reason.
    let denied = env.gw.audit("admission.denied").await;
    let find = |grant: &str, protocol: &str| {
        denied
            .iter()
            .find(|r| r["grant"] == grant && r["protocol"] == protocol)
            .cloned()
            .unwrap_or_else(|| panic!("no {protocol} admission.denied for {grant}: {denied:?}"))
    };
    let r = find(&ssh.grant, "https");
    assert!(r["reason"].as_str().is_some_and(|x| x.contains(why)), "{r}");
    let r = find(&https.grant, "ssh");
    assert!(
        r["reason"]
            .as_str()
            .is_some_and(|x| x.contains("is for https target console")),
        "{r}"
    );
}
