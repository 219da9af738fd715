//! The connection's state machine without a network: the login's factors and refusals
//! ([`login`]), the one check of channel requests ([`requests`]), and the connection's task
//! driven by hand, events as the handler sends them and russh's end as a future the test
//! finishes, with paused time for its waits ([`connection`]). The fakes they share are here.

mod connection;
mod login;
mod requests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::ssh_key::{self, PrivateKey};
use russh::server::Auth;
use russh::{ChannelId, MethodKind, Sig};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::bridge::{Command, Kind};
use super::conn::{Connection, Running, Socket};
use super::handler::{Event, PtyReq, Request, Verdict};
use super::link::Client;
use super::login::{Login, Step};
use super::requests::{ChannelState, decide};
use super::server::Gateway;
use super::{UserKeys, env_allowed, is_transfer_command, timing};
use crate::audit::Log;
use crate::config::Config;
use crate::crypto::SigningKey;
use crate::gateway::{Admit, Parts};
use crate::grant::Admission;
use crate::grant::admission::{AdmissionDenied, AdmitRequest};
use crate::metrics::Metrics;
use crate::session::{Cause, Registry};
use crate::store::sqlite::SqliteStore;
use crate::store::{AuditFilter, SessionFilter, Store};

const GOOD: &str = "jgt_good";

fn config(dir: &std::path::Path, alice_keys: &[String]) -> Config {
    let keys = alice_keys
        .iter()
        .map(|k| format!("{k:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"
[gateway]
public_name = "gw"
login_timeout = "20s"
[[users]]
name = "alice"
roles = ["technician"]
ssh_keys = [{keys}]
[[users]]
name = "bob"
roles = ["technician"]
[[targets]]
name = "dc-01"
kind = "ssh"
address = "127.0.0.1:1"
host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLS/fN5CcMLkyFXgymTgElYtx/VQk33mhW2ohI88KzN"
[[tasks]]
name = "reset-credential"
targets = ["dc-01"]
principal = "helpdesk"
allow = ["shell", "pty"]
max_ttl = "30m"
"#
    );
    Config::from_text(&text, &dir.join("jitgate.toml")).unwrap()
}

/// Admits `GOOD` for alice; refuses anything else, counting every check.
struct FakeAdmit {
    admission: Admission,
    checks: AtomicUsize,
}

#[async_trait::async_trait]
impl Admit for FakeAdmit {
    async fn admit(&self, r: AdmitRequest<'_>) -> Result<Admission, AdmissionDenied> {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if r.token == GOOD && r.user == Some("alice") {
            Ok(self.admission.clone())
        } else {
            Err(AdmissionDenied {
                message: "token not recognised".into(),
                grant: None,
            })
        }
    }
}

/// The client side: what the connection said to it.
#[derive(Default)]
struct FakeClient {
    disconnects: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Client for FakeClient {
    async fn disconnect(&self, reason: String) {
        self.disconnects.lock().unwrap().push(reason);
    }

    async fn exit_signal(&self, _: ChannelId, _: Sig, _: bool, _: String) {}
}

fn key() -> PrivateKey {
    PrivateKey::random(&mut rand::rng(), ssh_key::Algorithm::Ed25519).unwrap()
}

fn line(k: &PrivateKey) -> String {
    k.public_key().to_openssh().unwrap()
}

fn alice_admission(cfg: &Config) -> Admission {
    Admission::for_test(cfg)
}

fn fake(cfg: &Config) -> FakeAdmit {
    FakeAdmit {
        admission: alice_admission(cfg),
        checks: AtomicUsize::new(0),
    }
}

fn is_reject(a: &Auth) -> bool {
    matches!(
        a,
        Auth::Reject {
            partial_success: false,
            ..
        }
    )
}

fn instructions(a: &Auth) -> String {
    match a {
        Auth::Partial { instructions, .. } => instructions.to_string(),
        other => panic!("not a prompt: {other:?}"),
    }
}

fn source() -> std::net::IpAddr {
    "127.0.0.1".parse().unwrap()
}
