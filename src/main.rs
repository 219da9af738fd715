//! The `jitgate` binary: parse the command line, set up logging, dispatch.
#![forbid(unsafe_code)]

use clap::Parser;
use jitgate::cli::{ApiFailure, Cli, LogFormat};

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JITGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Threads for blocking work (file syncs, SQLite, digests). tokio's default is 512, and a
/// ticket close that cuts 1,000 sessions queues thousands of such jobs at once (each end
/// record syncs its recordings, `session.json`, the audit log and the store): tokio then
/// started about 490 threads, most of them waiting on the store's one connection or the
/// audit log's lock, and kept about 10 MB more resident. With 64 the same ends are recorded
/// as fast, with 2 MB (`bench/ssh.sh` prints the peak).
const BLOCKING_THREADS: usize = 64;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build();
    match runtime {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn run() {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let json = cli.json;
    let code = match jitgate::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            if let Some(f) = e.downcast_ref::<ApiFailure>() {
                if json {
                    jitgate::cli::say(serde_json::to_string_pretty(&f.body).unwrap_or_default());
                }
                match (
                    f.body.get("error").and_then(|v| v.as_str()),
                    f.body.get("id").and_then(|v| v.as_str()),
                ) {
                    (Some("denied"), Some(id)) => eprintln!("error: request {id} denied: {f}"),
                    _ => eprintln!("error: {f}"),
                }
            } else {
                eprintln!("error: {e:#}");
            }
            1
        }
    };
    std::process::exit(code);
}
