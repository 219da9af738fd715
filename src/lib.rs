//! jitgate: a privileged session gateway for ticket-bound just-in-time access.
//!
//! A technician requests one named task on one target, tied to an open ticket; policy and a
//! human approve it; jitgate issues a short-lived grant token that its gateways admit, and records
//! every step in a hash-chained, signed audit log.
//!
//! `ARCHITECTURE.md` draws the data flow and follows a grant token from accept to the target.
//!
//! Map of the modules, in dependency order:
//! - [`types`]: ids, names, durations, secrets; [`crypto`]: hashing, HMAC, Ed25519.
//! - [`config`]: the TOML model and its validation.
//! - [`store`]: the `Store` trait and its SQLite implementation.
//! - [`audit`]: typed audit events and the tamper-evident log.
//! - [`policy`]: built-in invariants and Cedar policies.
//! - [`ticket`]: the local ticket provider and webhook ingestion.
//! - [`grant`]: requests, approvals, grants, tokens, the grant event bus and admission.
//! - [`metrics`]: Prometheus metrics shared by the API and the gateways; [`net`]: the bounded
//!   accept loop and the cuttable socket every listener uses, the PROXY protocol.
//! - [`pki`]: the CAs jitgate owns, the keys `jitgate init` creates, per-session certificates.
//! - [`session`]: the registry of live sessions and the code that ends them.
//! - [`recording`]: asciicast v2 writer and reader, `session.json`, replay.
//! - [`gateway`]: what a gateway is built from (the admission check, the registry, keys, audit
//!   log, metrics, settings); [`ssh`], [`https`]: the two gateways.
//! - [`evidence`]: signed, offline-verifiable evidence bundles of one session.
//! - [`api`]: the control-plane REST API; [`server`]: listeners and shutdown.
//! - [`client`]: the HTTPS client the CLI uses; [`cli`]: the commands; [`demo`]: `jitgate demo`.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod console;
pub mod crypto;
pub mod demo;
pub mod evidence;
pub mod gateway;
pub mod grant;
pub mod https;
pub mod identity;
pub mod metrics;
pub mod net;
pub mod pki;
pub mod policy;
pub mod recording;
pub mod server;
pub mod session;
pub mod ssh;
pub mod store;
pub mod ticket;
pub mod types;
