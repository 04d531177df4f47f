//! A session's exec in the user's container, whole: created and inspected
//! through bollard, started over the Engine's unix socket directly
//! ([`raw_stream`]: bollard's attach decoding corrupts TTY output), resized,
//! and its exit code read. The session broker knows execs only through
//! [`Exec`], so that another way of running a session (a session agent in
//! the container) can be a second implementation of it.

mod raw_stream;

use std::path::PathBuf;
use std::time::Duration;

use backon::BackoffBuilder;
use bollard::Docker;
use bollard::exec::CreateExecOptions;
use bollard::query_parameters::ResizeExecOptions;

pub use raw_stream::{ExecStartError, ExecStream};

use crate::protocol::WindowSize;

/// What an exec runs, and as whom.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub cmd: Vec<String>,
    /// `uid:gid`.
    pub user: String,
    pub working_dir: String,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub tty: bool,
}

/// Where execs are made: the Engine, through bollard for its JSON calls
/// and through its unix socket for the attached stream.
#[derive(Clone)]
pub struct ExecEngine {
    docker: Docker,
    socket: PathBuf,
}

impl ExecEngine {
    pub fn new(docker: Docker, socket: PathBuf) -> Self {
        Self { docker, socket }
    }

    /// Creates an exec of `spec` in container `container` (not started).
    pub async fn create(
        &self,
        container: &str,
        spec: ExecSpec,
    ) -> Result<Exec, bollard::errors::Error> {
        let options = CreateExecOptions {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(spec.tty),
            env: Some(spec.env),
            cmd: Some(spec.cmd),
            user: Some(spec.user),
            working_dir: Some(spec.working_dir),
            ..Default::default()
        };
        let created = self.docker.create_exec(container, options).await?;
        Ok(Exec {
            engine: self.clone(),
            id: created.id,
            tty: spec.tty,
        })
    }
}

/// One exec, from its creation to its exit code.
pub struct Exec {
    engine: ExecEngine,
    id: String,
    tty: bool,
}

impl Exec {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Starts the exec attached: its raw stream (TTY bytes, or the Engine's
    /// multiplexed frames without a TTY).
    pub async fn start(&self) -> Result<ExecStream, ExecStartError> {
        raw_stream::start_exec(&self.engine.socket, &self.id, self.tty).await
    }

    /// Resizes the exec's terminal (a failure is only logged: the session
    /// goes on at its old size).
    pub async fn resize(&self, size: WindowSize) {
        let options = ResizeExecOptions {
            h: i32::from(size.rows),
            w: i32::from(size.cols),
        };
        if let Err(e) = self.engine.docker.resize_exec(&self.id, options).await {
            tracing::debug!(exec = %self.id, error = %e, "resize failed");
        }
    }

    /// The exit code if the exec has ended (`Ok(None)`: still running); an
    /// error when the Engine cannot say (gone, or forgot the exec).
    pub async fn exit_status(&self) -> Result<Option<i32>, String> {
        let inspect = self
            .engine
            .docker
            .inspect_exec(&self.id)
            .await
            .map_err(|e| format!("cannot read the exit code from the container engine: {e}"))?;
        if inspect.running == Some(true) {
            return Ok(None);
        }
        match inspect.exit_code.and_then(|c| i32::try_from(c).ok()) {
            Some(code) => Ok(Some(code)),
            None => Err("the container engine has no exit code for the session".into()),
        }
    }

    /// The exit code, once the Engine has recorded it (shortly after the
    /// stream ends); an error when the Engine is gone or forgot the exec
    /// (a restarted dockerd), or the process outlives its stream.
    pub async fn exit_code(&self) -> Result<i32, String> {
        let mut delays = exit_code_polls();
        loop {
            match self.exit_status().await {
                Ok(Some(code)) => return Ok(code),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(exec = %self.id, error = %e, "cannot read exit code");
                    return Err(e);
                }
            }
            let Some(delay) = delays.next() else { break };
            tokio::time::sleep(delay).await;
        }
        tracing::warn!(exec = %self.id, "exec still running after its stream ended");
        Err("the session's process was still running after its output ended".into())
    }
}

/// The pauses between reads of an exec's exit code: 2 ms doubling to
/// 250 ms, 40 of them (about 8.5 s in all).
fn exit_code_polls() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(2))
        .with_max_delay(Duration::from_millis(250))
        .with_max_times(40)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_code_is_polled_40_times_within_9_s() {
        let pauses: Vec<Duration> = exit_code_polls().collect();
        assert_eq!(pauses.len(), 40);
        assert_eq!(pauses[0], Duration::from_millis(2));
        assert_eq!(pauses[7], Duration::from_millis(250));
        let total: Duration = pauses.iter().sum();
        assert!(
            total > Duration::from_secs(8) && total < Duration::from_secs(9),
            "{total:?}"
        );
    }
}
