//! `bastiond`: the root session broker. See [`bastion::broker`].
#![forbid(unsafe_code)]

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = bastion::cli::BastiondArgs::parse();
    bastion::logging::init(args.log_format);
    bastion::broker::run(&args.config).await?;
    Ok(())
}
