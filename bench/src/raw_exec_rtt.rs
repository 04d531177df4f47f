//! The floor of a login: one raw Engine API exec round trip (create, start
//! attached, read to the end, inspect the exit code) of `true` (or a given
//! command, as a given user) in a running container, measured in-process
//! with no CLI start-up. Prints one line per run in milliseconds, for
//! bench/session.sh to summarise.
#![forbid(unsafe_code)]

use std::time::Instant;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use clap::Parser;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

#[derive(Parser)]
struct Args {
    /// Container to exec in (must be running).
    container: String,
    /// Round trips to measure.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Untimed round trips first (connection set-up, caches).
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Run the command as this user (`uid:gid`), as bastiond does.
    #[arg(long)]
    user: Option<String>,
    /// Attach stdin too (closed at once), as bastiond does.
    #[arg(long)]
    stdin: bool,
    /// The command (default `true`); e.g. `-- /bin/bash -c true`, what a
    /// bastion session of `ssh host true` runs.
    #[arg(last = true)]
    command: Vec<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let docker = Docker::connect_with_local_defaults()?
        .negotiate_version()
        .await?;
    let command = if args.command.is_empty() {
        vec!["true".to_owned()]
    } else {
        args.command.clone()
    };
    for i in 0..args.runs + args.warmup {
        let start = Instant::now();
        let exec = docker
            .create_exec(
                &args.container,
                CreateExecOptions {
                    cmd: Some(command.clone()),
                    user: args.user.clone(),
                    attach_stdin: Some(args.stdin),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await?;
        if let StartExecResults::Attached {
            mut output,
            mut input,
        } = docker
            .start_exec(&exec.id, None::<StartExecOptions>)
            .await?
        {
            if args.stdin {
                input.shutdown().await?;
            }
            while output.next().await.is_some() {}
        }
        let code = docker.inspect_exec(&exec.id).await?.exit_code;
        anyhow::ensure!(code == Some(0), "exec exited with {code:?}");
        if i >= args.warmup {
            println!("{:.3}", start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(())
}
