//! The one check of a channel request, and what the pump is told.

use super::*;

/// A channel's state and the commands its pump would get.
fn channel() -> (ChannelState, mpsc::UnboundedReceiver<Box<Command>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ChannelState::new(tx), rx)
}

fn env(name: &str) -> Request {
    Request::Env {
        name: name.into(),
        value: "x".into(),
    }
}

#[test]
fn channel_requests_are_checked_once_and_become_the_pumps_commands() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let task = &cfg.tasks[0];
    let (mut ch, mut commands) = channel();
    let pty = PtyReq {
        term: "xterm".into(),
        cols: 80,
        rows: 24,
        pw: 0,
        ph: 0,
        modes: Vec::new(),
    };
    assert_eq!(
        decide(task, Some(&mut ch), Request::Pty(pty)),
        Verdict::Allow
    );
    assert_eq!(decide(task, Some(&mut ch), env("TERM")), Verdict::Allow);
    // Not passed through, and not worth a message: clients send these unasked.
    assert_eq!(
        decide(task, Some(&mut ch), env("LD_PRELOAD")),
        Verdict::Refuse {
            why: "environment variable LD_PRELOAD is not passed through".into(),
            quiet: true
        }
    );
    assert_eq!(decide(task, Some(&mut ch), Request::Shell), Verdict::Allow);
    // One program per channel.
    assert!(matches!(
        decide(task, Some(&mut ch), Request::Shell),
        Verdict::Refuse { quiet: false, .. }
    ));
    let mut next = || commands.try_recv().map(|c| *c);
    assert!(matches!(next(), Ok(Command::Pty(p)) if p.term == "xterm"));
    assert!(matches!(next(), Ok(Command::Env(k, _)) if k == "TERM"));
    assert!(matches!(next(), Ok(Command::Start(Kind::Shell))));
    assert!(next().is_err(), "refusals reach no pump");
}

#[test]
fn refused_programs_end_their_channel_with_the_reason_and_x11_is_never_passed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let task = &cfg.tasks[0];
    let (mut ch, mut commands) = channel();
    assert_eq!(
        decide(task, Some(&mut ch), Request::Exec(b"ls".to_vec())),
        Verdict::RefuseAndEnd("task reset-credential does not allow running commands".into())
    );
    assert_eq!(
        decide(task, Some(&mut ch), Request::Subsystem("sftp".into())),
        Verdict::RefuseAndEnd(
            "task reset-credential does not allow file transfer (sftp, scp)".into()
        )
    );
    assert_eq!(
        decide(task, Some(&mut ch), Request::X11),
        Verdict::Refuse {
            why: "X11 forwarding is not available through jitgate".into(),
            quiet: false
        }
    );
    assert!(matches!(
        decide(task, None, Request::Shell),
        Verdict::Refuse { ref why, .. } if why == "no such channel"
    ));
    assert!(commands.try_recv().is_err());
}

#[test]
fn at_most_32_environment_variables_reach_the_target_per_channel() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[]);
    let (mut ch, mut commands) = channel();
    for i in 0..40 {
        let v = decide(&cfg.tasks[0], Some(&mut ch), env(&format!("LC_{i}")));
        assert_eq!(v, Verdict::Allow, "acknowledged, as OpenSSH expects");
    }
    let mut passed = 0;
    while commands.try_recv().is_ok() {
        passed += 1;
    }
    assert_eq!(passed, 32);
}

#[test]
fn transfer_commands_are_recognised() {
    assert!(is_transfer_command(b"scp -t /tmp"));
    assert!(is_transfer_command(
        b"rsync --server -vlogDtpre.iLsfxCIvu . /tmp/x"
    ));
    assert!(is_transfer_command(b"/usr/bin/scp -f x"));
    assert!(!is_transfer_command(b"ls -l"));
    assert!(!is_transfer_command(b"echo scp"));
}

#[test]
fn env_allow_list() {
    assert!(env_allowed("TERM"));
    assert!(env_allowed("LC_ALL"));
    assert!(!env_allowed("LD_PRELOAD"));
    assert!(!env_allowed("PATH"));
}
