//! `bastionctl`: checks for ops and tools for security reviewers.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Administer and review the bastion.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Configuration file.
    #[arg(long, global = true, default_value = bastion::config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration file; names the bad key and line.
    Check,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Check => match bastion::ctl::check(&args.config) {
            Ok(summary) => {
                println!("{summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bastionctl: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
