//! jitgate's integration tests: one binary; each test starts the real `jitgate` on port 0 in its
//! own temp directory and drives it only through the CLI, the API and `curl`.

mod audit_log;
mod bad_input;
mod check;
mod control_plane;
mod denials;
mod fixture;
mod flows;
mod harness;
mod webhooks;
