//! The task's HTTP allow-list: what it admits reaches nginx, the rest gets a 403 page that says
//! which task allows what, and the refusal is recorded.

use super::{Env, done, ended_session, exchanges, http_log};
use crate::nginx::UNLOCKED;

#[tokio::test]
async fn the_allow_list_admits_the_tasks_requests_and_refuses_the_rest() {
    let env = Env::start();
    let g = env.grant("alice", "console-admin", "INC-3");
    let post = ["--http1.1", "-X", "POST", "--data-binary", "why=locked out"];

    // Admitted: any GET, and the one POST the task names.
    let r = env.bearer(&g.token, "/anything/at/all", &[]);
    r.expect(404);
    assert!(r.header("x-jitgate-refused").is_none(), "{}", r.head);
    let r = env.bearer(&g.token, "/users/dave/unlock", &post);
    r.expect(200);
    assert_eq!(r.body, UNLOCKED);

    // Refused, with a page that names the task and what it allows.
    let refused: [(&str, &str, &[&str]); 4] = [
        ("DELETE", "/users/dave", &["--http1.1", "-X", "DELETE"]),
        ("POST", "/other", &post),
        ("POST", "/users/dave/delete", &post),
        ("POST", "/users/dave/../carol/unlock", &post),
    ];
    for (method, path, args) in refused {
        let mut a = args.to_vec();
        a.push("--path-as-is");
        let r = env.bearer(&g.token, path, &a);
        r.expect(403);
        let why = r.header("x-jitgate-refused").expect("X-Jitgate-Refused");
        assert_eq!(
            why,
            format!("jitgate: task console-admin does not allow {method} {path}"),
            "{}",
            r.head
        );
        for want in ["console-admin", "GET /*", "POST /users/*/unlock"] {
            assert!(
                r.body.contains(want),
                "the 403 page lacks {want:?}: {}",
                r.body
            );
        }
    }
    // None of them reached nginx.
    let log = env.nginx.access_log();
    assert_eq!(log.lines().count(), 2, "{log}");
    assert!(!log.contains("DELETE") && !log.contains("/other"), "{log}");

    // The recording holds every request, the refusals with their reason.
    done(&env, "alice", &g);
    let s = ended_session(&env.gw, &g.grant).await;
    let log = http_log(&s);
    assert_eq!(log.len(), 6, "{log:?}");
    for (method, path) in [("GET", "/anything/at/all"), ("POST", "/users/dave/unlock")] {
        let e = exchanges(&log, method, path);
        assert_eq!(e.len(), 1, "{log:?}");
        assert!(e[0]["refused"].is_null(), "{}", e[0]);
    }
    for (method, path) in [
        ("DELETE", "/users/dave"),
        ("POST", "/other"),
        ("POST", "/users/dave/delete"),
        ("POST", "/users/dave/../carol/unlock"),
    ] {
        let e = exchanges(&log, method, path);
        assert_eq!(e.len(), 1, "{method} {path}: {log:?}");
        assert_eq!(e[0]["status"], 403, "{}", e[0]);
        let why = e[0]["refused"].as_str().unwrap_or_default();
        assert!(
            why.contains("does not allow"),
            "no refusal recorded: {}",
            e[0]
        );
    }
}
