use super::*;

#[test]
fn pkce_challenge_is_rfc_7636_s256() {
    // The example of RFC 7636, appendix B.
    assert_eq!(
        challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    );
}

#[test]
fn only_loopback_addresses_with_a_port_receive_cli_codes() {
    assert!(loopback_redirect("http://127.0.0.1:41234/callback"));
    assert!(loopback_redirect("http://[::1]:41234/callback"));
    assert!(loopback_redirect("http://localhost:41234/callback"));
    for bad in [
        "https://127.0.0.1:41234/callback",
        "http://127.0.0.1/callback",
        "http://evil.example:41234/callback",
        "http://127.0.0.1.evil.example:41234/",
        "http://127.0.0.1:41234@evil.example/",
        "javascript:alert(1)",
    ] {
        assert!(!loopback_redirect(bad), "{bad}");
    }
}

#[test]
fn return_paths_stay_on_the_console() {
    assert!(safe_return("/"));
    assert!(safe_return("/requests/new?ticket=INC-7"));
    for bad in [
        "//evil.example/",
        "/\\evil.example",
        "https://evil.example/",
        "",
        "/a b",
    ] {
        assert!(!safe_return(bad), "{bad}");
    }
}

fn sign_in(idle: Option<u64>) -> SignIn {
    SignIn {
        id: "si_x".into(),
        secret_sha256: String::new(),
        kind: SignInKind::Browser,
        method: SignInMethod::Oidc,
        user: "alice".parse().unwrap(),
        issuer: None,
        subject: None,
        groups: Vec::new(),
        auth_time: 1000,
        created_at: 1000,
        last_seen: 1000,
        expires_at: 5000,
        idle_timeout: idle,
        csrf: None,
        ended_at: None,
        ended_reason: None,
    }
}

#[test]
fn a_sign_in_ends_when_idle_too_long_at_its_hard_end_or_when_ended() {
    let s = sign_in(Some(100));
    assert_eq!(s.over(1099), None);
    assert!(s.over(1100).is_some(), "idle");
    let s = sign_in(None);
    assert_eq!(s.over(4999), None);
    assert!(s.over(5000).is_some(), "absolute");
    let mut s = sign_in(None);
    s.ended_at = Some(1001);
    assert!(s.over(1002).is_some(), "ended");
}

#[test]
fn a_session_in_use_is_touched_before_its_idle_timeout_could_end_it() {
    assert_eq!(touch_every(None), TOUCH_EVERY);
    assert_eq!(touch_every(Some(30 * 60)), TOUCH_EVERY);
    assert_eq!(touch_every(Some(60)), 30);
    assert_eq!(touch_every(Some(2)), 1);
    assert_eq!(touch_every(Some(1)), 1);
}
