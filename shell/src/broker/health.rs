//! bastiond's health answer for `bastionctl doctor` and monitoring: a
//! root-only unix socket (`[bastiond] health_socket`, mode 0600) that
//! writes one JSON line per connection ([`Health`]) and closes it. It reads
//! nothing from the peer, so a client can only ask.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

use super::{Broker, BrokerError};

/// How long one answer may take to reach a peer before it is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the Docker Engine gets to answer a ping.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(3);

/// One health answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` when every part below is ok, else `degraded`.
    pub status: Status,
    pub version: String,
    pub pid: u32,
    pub uptime_seconds: u64,
    pub live_sessions: usize,
    /// The Docker Engine answers a ping.
    pub docker: Part,
    /// The login socket is still there (a removed socket takes every login).
    pub login_socket: Part,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Degraded,
}

/// One part's state and, when not ok, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub ok: bool,
    pub detail: String,
}

/// Binds the health socket at `path`, replacing a stale one, readable and
/// writable by root only.
pub fn listen(path: &Path) -> Result<UnixListener, BrokerError> {
    super::bind_socket(path, 0o600)
}

/// Answers each connection with the broker's health until aborted.
pub async fn serve(broker: Arc<Broker>, listener: UnixListener, login_socket: PathBuf) {
    loop {
        match listener.accept().await {
            Ok((mut stream, _)) => {
                let broker = broker.clone();
                let login_socket = login_socket.clone();
                tokio::spawn(async move {
                    let health = health(&broker, &login_socket).await;
                    let mut line = serde_json::to_vec(&health).expect("health serializes");
                    line.push(b'\n');
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&line)).await;
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "health socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The broker's health now.
pub async fn health(broker: &Broker, login_socket: &Path) -> Health {
    let docker = match tokio::time::timeout(DOCKER_TIMEOUT, broker.containers.docker().ping()).await
    {
        Ok(Ok(_)) => Part::ok("the Docker Engine answers"),
        Ok(Err(e)) => Part::failed(format!("the Docker Engine does not answer: {e}")),
        Err(_) => Part::failed(format!(
            "the Docker Engine did not answer within {}s",
            DOCKER_TIMEOUT.as_secs()
        )),
    };
    let login_socket = match std::fs::symlink_metadata(login_socket) {
        Ok(m) if m.file_type().is_socket() => Part::ok(login_socket.display().to_string()),
        _ => Part::failed(format!(
            "{} is gone: no login can reach bastiond; restart bastiond",
            login_socket.display()
        )),
    };
    let status = if docker.ok && login_socket.ok {
        Status::Ok
    } else {
        Status::Degraded
    };
    Health {
        status,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        uptime_seconds: broker.started.elapsed().as_secs(),
        live_sessions: broker.live.total(),
        docker,
        login_socket,
    }
}

impl Part {
    fn ok(detail: impl Into<String>) -> Self {
        Self {
            ok: true,
            detail: detail.into(),
        }
    }

    fn failed(detail: impl Into<String>) -> Self {
        Self {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// Asks the bastiond behind `path` for its health (what `bastionctl
/// doctor` does).
pub fn ask(path: &Path, timeout: Duration) -> Result<Health, HealthError> {
    use std::io::Read;
    let err = |source| HealthError::Connect {
        path: path.to_owned(),
        source,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(err)?;
    stream.set_read_timeout(Some(timeout)).map_err(err)?;
    let mut text = String::new();
    (&mut stream)
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(err)?;
    serde_json::from_str(text.trim_end()).map_err(|source| HealthError::Answer {
        path: path.to_owned(),
        source,
    })
}

/// Why no health answer came.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot ask bastiond at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bastiond at {path} gave an answer that is not its health: {source}")]
    Answer {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_answer_is_one_stable_json_object() {
        let health = Health {
            status: Status::Degraded,
            version: "0.1.0".into(),
            pid: 7,
            uptime_seconds: 3,
            live_sessions: 2,
            docker: Part::failed("down"),
            login_socket: Part::ok("/run/bastion/bastiond.sock"),
        };
        let text = serde_json::to_string(&health).unwrap();
        assert!(text.contains(r#""status":"degraded""#), "{text}");
        assert!(
            text.contains(r#""docker":{"ok":false,"detail":"down"}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Health>(&text).unwrap(), health);
    }

    #[tokio::test]
    async fn the_socket_is_root_only_and_a_live_one_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("health.sock");
        let listener = listen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(
            listen(&path),
            Err(BrokerError::AlreadyRunning { .. })
        ));
        drop(listener);
        // A stale socket (nobody listening) is replaced.
        listen(&path).unwrap();
    }
}
