//! Every way the SSH gateway refuses a technician: the client gets no command output and exits
//! 255, nothing reaches the target, and the audit log says why.

use std::time::Duration;

use serde_json::Value;

use super::{Env, Term, assert_target_untouched, client_opts, grant, ssh_exec, with_token};
use crate::flows::grant_state;
use crate::harness::{api_key, output};
use crate::sshd::{LOGIN, pub_key_line};

/// `ssh user@gateway echo` with `token` is refused, and `admission.denied` records `reason`.
async fn assert_refused(env: &Env, user: &str, token: &str, reason: &str) -> Value {
    let (code, out, err) = ssh_exec(&env.gw, token, user, "echo got-in");
    assert_eq!(code, 255, "not refused: stdout {out:?}, stderr {err:?}");
    assert_eq!(out, "", "command output from a refused connection");
    assert!(err.contains("Permission denied"), "stderr: {err:?}");
    assert_target_untouched(env);
    denial(env, user, reason).await
}

/// The `admission.denied` record for `user` whose reason contains `reason`. A connection that
/// authenticated only halfway (token without the registered key) is audited when the gateway
/// sees it close, which can be just after the client has exited: wait for it, boundedly.
async fn denial(env: &Env, user: &str, reason: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let recs = env.gw.audit("admission.denied").await;
        let hit = recs.iter().find(|r| {
            r["user"] == user
                && r["protocol"] == "ssh"
                && r["reason"].as_str().is_some_and(|s| s.contains(reason))
        });
        match hit {
            Some(r) => {
                assert_eq!(r["source"], "127.0.0.1", "{r}");
                return r.clone();
            }
            None if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            None => panic!("no admission.denied for {user} with reason {reason:?}; got {recs:?}"),
        }
    }
}

#[tokio::test]
async fn refused_with_a_wrong_token() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let unknown = jitgate::types::GrantToken::generate();
    let r = assert_refused(&env, "alice", unknown.expose(), "unknown grant token").await;
    assert!(r["grant"].is_null(), "{r}");

    // At the prompt, a mistyped token is refused with the reason and the prompt comes back;
    // the right one then lets the technician in.
    let mut typo = g.token.clone();
    typo.pop();
    typo.push(if g.token.ends_with('A') { 'B' } else { 'A' });
    let mut t = Term::ssh(&env.gw, "alice");
    t.expect("Grant token:", Duration::from_secs(10));
    t.send(&format!("{typo}\r"));
    t.expect("[jitgate] refused:", Duration::from_secs(5));
    t.expect("checksum", Duration::from_secs(5));
    t.expect("Grant token:", Duration::from_secs(5));
    t.send(&format!("{}\r", g.token));
    t.expect("$ ", Duration::from_secs(10));
    t.send("echo in-$((40+2))\r");
    t.expect("in-42", Duration::from_secs(5));
    t.send("exit\r");
    assert_eq!(t.wait(Duration::from_secs(5)).code(), Some(0));
}

#[tokio::test]
async fn refused_with_an_expired_token() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "3s");
    let expires = grant_state(&env.gw, &g.grant).await["expires_at"]
        .as_i64()
        .expect("expires_at");
    while jitgate::types::now() <= expires {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = assert_refused(&env, "alice", &g.token, "expired").await;
    assert_eq!(r["grant"], g.grant.as_str(), "{r}");
}

#[tokio::test]
async fn refused_with_a_revoked_token() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let (code, out, err) = env
        .gw
        .cli("bob", &["revoke", &g.request, "--reason", "wrong machine"]);
    assert_eq!(code, 0, "revoke: {out} {err}");
    let r = assert_refused(&env, "alice", &g.token, "revoked").await;
    assert_eq!(r["grant"], g.grant.as_str(), "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("wrong machine"),
        "{r}"
    );
}

#[tokio::test]
async fn refused_after_the_requester_is_done() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let (code, out, err) = env.gw.cli("alice", &["done", &g.request]);
    assert_eq!(code, 0, "done: {out} {err}");
    let r = assert_refused(&env, "alice", &g.token, "completed").await;
    assert_eq!(r["grant"], g.grant.as_str(), "{r}");
}

#[tokio::test]
async fn refused_with_another_users_token() {
    let env = Env::start();
    let daves = grant(&env.gw, "dave", "ops", "INC-2", "15m");
    let r = assert_refused(&env, "alice", &daves.token, "was not issued to alice").await;
    assert_eq!(r["grant"], daves.grant.as_str(), "{r}");
    // dave's token still works for dave.
    let (code, out, err) = ssh_exec(&env.gw, &daves.token, "dave", "echo dave-in");
    assert_eq!((code, out.as_str()), (0, "dave-in\n"), "{err}");
}

#[tokio::test]
async fn refused_with_the_wrong_ssh_user_name() {
    let env = Env::start();
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    // A likely slip: the login name on the target instead of one's own.
    let r = assert_refused(&env, LOGIN, &g.token, &format!("was not issued to {LOGIN}")).await;
    assert_eq!(r["grant"], g.grant.as_str(), "{r}");
}

#[tokio::test]
async fn public_key_required_when_the_user_registered_one() {
    let keys = tempfile::tempdir().expect("temp dir");
    let key = keys.path().join("kim_ed25519");
    let made = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "kim@laptop", "-f"])
        .arg(&key)
        .output()
        .expect("run ssh-keygen");
    assert!(made.status.success(), "ssh-keygen failed");
    let user = format!(
        "[[users]]\nname = \"kim\"\nroles = [\"technician\"]\napi_key_sha256 = \"{}\"\nssh_keys = [\"{}\"]\n",
        jitgate::crypto::sha256_hex(api_key("kim").as_bytes()),
        pub_key_line(&keys.path().join("kim_ed25519.pub"))
    );
    let env = Env::with(None, &user);
    let g = grant(&env.gw, "kim", "ops", "INC-1", "15m");

    // The token alone is not enough.
    let (code, out, err) = ssh_exec(&env.gw, &g.token, "kim", "echo got-in");
    assert_eq!(code, 255, "token without the key was let in: {out} {err}");
    assert_eq!(out, "");
    assert!(err.contains("Permission denied"), "{err:?}");
    assert_target_untouched(&env);
    denial(&env, "kim", "requires public-key authentication").await;

    // The registered key and the token together are.
    let mut args = client_opts();
    args.extend(
        [
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "PreferredAuthentications=publickey,password",
            "-i",
        ]
        .map(String::from),
    );
    args.push(key.display().to_string());
    args.push("-p".into());
    args.push(env.gw.ssh_port().to_string());
    args.extend(super::QUIET.map(String::from));
    args.push("kim@127.0.0.1".into());
    args.push("echo key-and-token".into());
    let (code, out, err) = output(with_token(&g.token, "ssh", &args));
    assert_eq!(code, 0, "key + token refused: {out} {err}");
    assert_eq!(out, "key-and-token\n");
}

#[tokio::test]
async fn refused_when_the_target_host_key_changed() {
    // The configuration pins a key the target does not have (as after a rebuild, or a
    // machine in the middle).
    let env = Env::with(Some(crate::fixture::HOST_KEY), "");
    let g = grant(&env.gw, "alice", "ops", "INC-1", "15m");
    let (code, out, err) = ssh_exec(&env.gw, &g.token, "alice", "echo got-in");
    assert_ne!(
        code, 0,
        "reached a target with the wrong host key: {out} {err}"
    );
    assert_eq!(out, "", "command output from a refused target");
    assert!(
        err.contains("host key does not match"),
        "the technician is not told why: {err:?}"
    );
    assert_target_untouched(&env);
    let recs = env.gw.audit("target.refused").await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["target"], "box", "{}", recs[0]);
    let reason = recs[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("host key does not match"), "{reason}");
    assert!(reason.contains("SHA256:"), "fingerprints missing: {reason}");
}
