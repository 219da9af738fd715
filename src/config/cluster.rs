//! `[store]` (where the state lives) and `[cluster]` (several gateway nodes sharing one
//! PostgreSQL database), with their checks.

use std::path::PathBuf;

use serde::Deserialize;

use super::validate::{Locator, Problem, Seg};
use crate::types::Ttl;

/// `[store]`: where state lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (one node) or `postgres://USER@HOST:PORT/DB` (several).
    #[serde(default = "default_store_url")]
    pub url: String,
    /// PostgreSQL: the password (`env:VAR`, `file:PATH` or literal) when the URL has none;
    /// without either, `PGPASSFILE` (default `~/.pgpass`) is read.
    pub password: Option<String>,
    /// PostgreSQL: PEM certificates to trust for the database's TLS (default: the system's).
    pub ca: Option<PathBuf>,
}

fn default_store_url() -> String {
    "sqlite://data/jitgate.db".into()
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: default_store_url(),
            password: None,
            ca: None,
        }
    }
}

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name in sessions, audit records and `jitgate nodes` (default: the host name).
    pub node: Option<String>,
    /// How often the node tells the database it is alive.
    #[serde(default = "default_heartbeat")]
    pub heartbeat: Ttl,
    /// A node that cannot reach the database for this long refuses admissions and cuts its live
    /// sessions (cause `stale`).
    #[serde(default = "default_max_staleness")]
    pub max_staleness: Ttl,
    /// A node silent for this long is dead: the others end its sessions (cause `node-lost`).
    #[serde(default = "default_dead_after")]
    pub dead_after: Ttl,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node: None,
            heartbeat: default_heartbeat(),
            max_staleness: default_max_staleness(),
            dead_after: default_dead_after(),
        }
    }
}

fn default_heartbeat() -> Ttl {
    Ttl::from_secs(5)
}
fn default_max_staleness() -> Ttl {
    Ttl::from_secs(10)
}
fn default_dead_after() -> Ttl {
    Ttl::from_secs(30)
}

impl ClusterConfig {
    /// This node's name: `node`, else the host name, else `gw`.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "gw".into())
        })
    }
}

/// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl super::Config {
    /// The database password from `store.password`, if one is configured and available.
    pub fn store_password(&self) -> Result<Option<crate::types::Secret>, String> {
        super::resolve_secret(self.store.password.as_deref(), "database password")
    }

    /// Whether several nodes share a PostgreSQL database.
    pub fn is_cluster(&self) -> bool {
        is_postgres(&self.store.url)
    }

    /// Problems with `store.url` and `[cluster]`.
    pub(super) fn validate_cluster(&self, loc: &Locator, problems: &mut Vec<Problem>) {
        use Seg::Key as K;
        let mut err = |path: &[Seg], message: String| {
            problems.push(Problem {
                file: self.source.clone(),
                line: loc.line(path),
                message,
            })
        };
        let url = &self.store.url;
        if !url.starts_with("sqlite://") && !is_postgres(url) {
            err(
                &[K("store"), K("url")],
                format!(
                    "store.url {:?} is not supported; use sqlite://PATH (one node) or postgres://USER@HOST:PORT/DB (several)",
                    crate::store::redact_url(url)
                ),
            );
        }
        let c = &self.cluster;
        if let Some(n) = &c.node
            && n.parse::<crate::types::UserName>().is_err()
        {
            err(
                &[K("cluster"), K("node")],
                format!("cluster.node {n:?} must be letters, digits, '-', '_', '.'"),
            );
        }
        if c.heartbeat.as_secs() < 1 {
            err(
                &[K("cluster"), K("heartbeat")],
                "cluster.heartbeat must be at least 1s".into(),
            );
        }
        if c.max_staleness.as_secs() < 2 * c.heartbeat.as_secs() {
            err(
                &[K("cluster"), K("max_staleness")],
                "cluster.max_staleness must be at least twice the heartbeat, or one slow beat cuts every session".into(),
            );
        }
        if c.dead_after.as_secs() <= c.max_staleness.as_secs() {
            err(
                &[K("cluster"), K("dead_after")],
                "cluster.dead_after must be longer than max_staleness: a node must have cut its own sessions before the others call it dead".into(),
            );
        }
    }
}
