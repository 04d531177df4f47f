//! `bastion-metadata-proxy --config /etc/bastion/bastion.toml`
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bastion_metadata_proxy::server::{ProxyOptions, start};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

/// Hands each bastion user container STS credentials for its own IAM role,
/// through the EC2 instance metadata and container-credentials endpoints.
#[derive(Parser)]
#[command(name = "bastion-metadata-proxy", version)]
struct Args {
    /// The bastion configuration file (root-owned, not group/world-writable).
    #[arg(long, default_value = bastion_core::config::DEFAULT_PATH)]
    config: PathBuf,
    /// How log lines look on stderr (no colours unless it is a terminal).
    #[arg(long, value_enum, default_value = "text")]
    log_format: bastion_core::logging::Format,
    /// Write this program's manual page into DIR and exit.
    #[arg(long, value_name = "DIR")]
    man: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(dir) = &args.man {
        return match bastion_core::man_pages::write_man_pages(
            dir,
            vec![<Args as clap::CommandFactory>::command()],
        ) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!(
                    "bastion-metadata-proxy: cannot write the manual page into {}: {e}",
                    dir.display()
                );
                ExitCode::FAILURE
            }
        };
    }
    bastion_core::logging::init(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "bastion-metadata-proxy: {}",
                bastion_core::logging::error_chain(error.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = bastion_core::config::Config::load(&args.config)
        .with_context(|| format!("cannot start with {}", args.config.display()))?;
    let proxy = start(ProxyOptions::from_config(&config)).await?;
    bastion_core::service_manager::ready();
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    bastion_core::service_manager::stopping();
    proxy.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
