//! `bastiond`: the root session broker. See [`bastion::broker`].
#![forbid(unsafe_code)]

use std::time::Duration;

use clap::Parser;

/// After `run` returns (SIGTERM, every session ended), blocking tasks
/// still running get this long; then the process exits anyway, so that a
/// stuck one can never keep a restart waiting.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

fn main() -> anyhow::Result<()> {
    let args = bastion::cli::BastiondArgs::parse();
    bastion::logging::init(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(bastion::broker::run(&args.config));
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    result?;
    Ok(())
}
