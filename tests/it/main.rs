//! jitgate's integration tests: one binary; each test starts the real `jitgate` on port 0 in its
//! own temp directory and drives it only through the CLI, the API, `curl` and OpenSSH clients
//! (against a real `sshd` target, see `sshd.rs`); sign-in tests use a real OpenID provider and a
//! headless Chromium, started once per run (see `peers/`).

mod audit_log;
mod bad_input;
mod check;
mod cluster;
mod console;
mod control_plane;
mod demo;
mod denials;
mod evidence;
mod exceptions;
mod fixture;
mod flows;
mod hardening;
mod harness;
mod https;
mod kex;
mod nginx;
mod openapi;
mod peers;
mod proxy_protocol;
mod rt_peer;
mod session_index;
mod sign_in;
mod ssh;
mod sshd;
mod ticket_bench;
mod ticket_fakes;
mod ticket_systems;
mod web_assets;
mod webhooks;
