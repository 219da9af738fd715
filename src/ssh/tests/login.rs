//! The login's two factors and its refusals.

use super::*;

#[tokio::test]
async fn a_wrong_token_is_refused_at_the_prompt_with_its_reason_until_the_third_try() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let (admit, keys) = (fake(&cfg), UserKeys::new(&cfg.users));
    let mut login = Login::default();
    assert!(matches!(login.start_prompt(), Auth::Partial { .. }));
    for attempt in 1..=3 {
        let why = login
            .token(&admit, &keys, source(), "alice", "jgt_wrong")
            .await
            .unwrap_err();
        assert_eq!(why, "token not recognised");
        let answer = login.refused(&why, true);
        if attempt < 3 {
            assert_eq!(
                instructions(&answer),
                "[jitgate] refused: token not recognised"
            );
        } else {
            assert!(is_reject(&answer), "try {attempt}: {answer:?}");
        }
    }
    // Used up: even the right token is not checked any more.
    let (_, step) = login
        .token(&admit, &keys, source(), "alice", GOOD)
        .await
        .unwrap();
    assert!(
        matches!(step, Step::Answer(ref a) if is_reject(a)),
        "{step:?}"
    );
    assert!(is_reject(&login.start_prompt()));
    assert_eq!(admit.checks.load(Ordering::Relaxed), 3);
    // At the password prompt a refusal shows nothing.
    let fresh = Login::default();
    assert!(is_reject(&fresh.refused("token not recognised", false)));
}

#[tokio::test]
async fn a_user_without_registered_keys_is_let_in_by_the_token_alone_and_checked_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let (admit, keys) = (fake(&cfg), UserKeys::new(&cfg.users));
    let mut login = Login::default();
    let (admitted_now, step) = login
        .token(&admit, &keys, source(), "alice", GOOD)
        .await
        .unwrap();
    assert!(admitted_now);
    assert!(matches!(step, Step::Open(ref a) if a.user().name.as_str() == "alice"));
    let (admitted_now, _) = login
        .token(&admit, &keys, source(), "alice", GOOD)
        .await
        .unwrap();
    assert!(!admitted_now, "the token is checked once per connection");
    assert_eq!(admit.checks.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_user_with_registered_keys_needs_the_key_and_the_token_in_either_order() {
    let dir = tempfile::tempdir().unwrap();
    let k = key();
    let cfg = config(dir.path(), &[line(&k)]);
    let (admit, keys) = (fake(&cfg), UserKeys::new(&cfg.users));

    // Token first: the key is asked for, and the missing factor is noted for the audit.
    let mut login = Login::default();
    let (_, step) = login
        .token(&admit, &keys, source(), "alice", GOOD)
        .await
        .unwrap();
    match step {
        Step::Answer(Auth::Reject {
            proceed_with_methods: Some(m),
            partial_success: true,
        }) => assert!(m.contains(&MethodKind::PublicKey)),
        other => panic!("{other:?}"),
    }
    let missing = login.incomplete.clone().expect("noted");
    assert!(
        missing
            .reason
            .contains("requires public-key authentication"),
        "{missing:?}"
    );
    assert!(matches!(
        login.key_offered(&keys, "alice", k.public_key()),
        Auth::Accept
    ));
    assert!(matches!(
        login.key_verified(&keys, "alice", k.public_key()),
        Step::Open(_)
    ));

    // Key first: then the token opens the session.
    let mut login = Login::default();
    match login.key_verified(&keys, "alice", k.public_key()) {
        Step::Answer(Auth::Reject {
            proceed_with_methods: Some(m),
            partial_success: true,
        }) => assert!(m.contains(&MethodKind::KeyboardInteractive)),
        other => panic!("{other:?}"),
    }
    let (_, step) = login
        .token(&admit, &keys, source(), "alice", GOOD)
        .await
        .unwrap();
    assert!(matches!(step, Step::Open(_)), "{step:?}");
}

#[tokio::test]
async fn a_key_counts_only_for_the_user_it_is_registered_to_and_was_proven_as() {
    let dir = tempfile::tempdir().unwrap();
    let (alices, strangers) = (key(), key());
    let cfg = config(dir.path(), &[line(&alices)]);
    let (admit, keys) = (fake(&cfg), UserKeys::new(&cfg.users));
    let mut login = Login::default();
    // Someone else's key, or alice's key offered as bob: refused, with what is left to try.
    match login.key_offered(&keys, "alice", strangers.public_key()) {
        Auth::Reject {
            proceed_with_methods: Some(m),
            partial_success: false,
        } => assert!(m.contains(&MethodKind::PublicKey)),
        other => panic!("{other:?}"),
    }
    match login.key_offered(&keys, "bob", alices.public_key()) {
        Auth::Reject {
            proceed_with_methods: Some(m),
            partial_success: false,
        } => assert!(m.contains(&MethodKind::Password)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        login.key_verified(&keys, "bob", alices.public_key()),
        Step::Answer(ref a) if is_reject(a)
    ));
    // Proven as alice, the key does not stand in for a token presented as someone else.
    let _ = login.key_verified(&keys, "alice", alices.public_key());
    let why = login
        .token(&admit, &keys, source(), "bob", GOOD)
        .await
        .unwrap_err();
    assert_eq!(why, "token not recognised");
}

#[tokio::test]
async fn a_session_that_cannot_be_opened_shows_why_and_ends_the_tries() {
    let mut login = Login::default();
    let shown = login.open_failed("cannot create the recording folder", true);
    assert_eq!(
        instructions(&shown),
        "[jitgate] refused: cannot create the recording folder"
    );
    assert!(is_reject(&login.start_prompt()));
    assert!(is_reject(
        &Login::default().open_failed("cannot create the recording folder", false)
    ));
}
