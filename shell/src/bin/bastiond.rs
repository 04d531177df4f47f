//! `bastiond`: the root session broker. See [`bastion::broker`].
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;

/// The bastion session broker: runs each SSH login in the user's container.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file (root-owned, not group/world-writable).
    #[arg(long, default_value = bastion::config::DEFAULT_PATH)]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = bastion::logging::Format::Text)]
    log_format: bastion::logging::Format,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    bastion::logging::init(args.log_format);
    bastion::broker::run(&args.config).await?;
    Ok(())
}
