//! `jitgate serve`: run the gateway until SIGINT or SIGTERM.

use anyhow::{Context, Result};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Cli;
use crate::config::{Config, ConfigError};
use crate::server::Runtime;

/// `jitgate serve`.
pub async fn serve(cli: &Cli) -> Result<i32> {
    let text = std::fs::read_to_string(&cli.config).with_context(|| {
        format!(
            "cannot read {}; pass --config PATH (an example is config/jitgate.toml)",
            cli.config.display()
        )
    })?;
    let cfg = match Config::from_text(&text, &cli.config) {
        Ok(c) => c,
        Err(ConfigError::Invalid(problems)) => {
            for p in problems {
                eprintln!("{p}");
            }
            eprintln!("fix the configuration (`jitgate check` shows the same), then start again");
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    let api_addr = cfg.gateway.api_listen;
    let runtime = match Runtime::open(cfg, &text).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jitgate cannot start: {e}");
            return Ok(1);
        }
    };
    let api = TcpListener::bind(api_addr)
        .await
        .with_context(|| format!("cannot listen on {api_addr} (gateway.api_listen)"))?;
    let bound = api.local_addr()?;
    let ssh_addr = runtime.cfg.gateway.ssh_listen;
    let ssh = TcpListener::bind(ssh_addr)
        .await
        .with_context(|| format!("cannot listen on {ssh_addr} (gateway.ssh_listen)"))?;
    let ssh_bound = ssh.local_addr()?;
    let https_addr = runtime.cfg.gateway.https_listen;
    let https = TcpListener::bind(https_addr)
        .await
        .with_context(|| format!("cannot listen on {https_addr} (gateway.https_listen)"))?;
    let https_bound = https.local_addr()?;
    let metrics_addr = runtime.cfg.gateway.metrics_listen;
    let metrics = TcpListener::bind(metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {metrics_addr} (gateway.metrics_listen)"))?;
    let metrics_bound = metrics.local_addr()?;
    tracing::info!(api = %bound, ssh = %ssh_bound, "jitgate listening");
    super::say_or_ignore(format!("jitgate API listening on https://{bound}"));
    super::say_or_ignore(format!(
        "jitgate metrics listening on http://{metrics_bound}/metrics"
    ));
    super::say_or_ignore(format!("jitgate SSH gateway listening on {ssh_bound}"));
    super::say_or_ignore(format!(
        "jitgate HTTPS gateway listening on https://{https_bound}"
    ));
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        });
    }
    runtime
        .serve(
            crate::server::Listeners {
                api,
                ssh: Some(ssh),
                https: Some(https),
                metrics: Some(metrics),
            },
            shutdown,
        )
        .await?;
    Ok(0)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
