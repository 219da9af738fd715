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

#[tokio::main]
async fn main() {
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
