//! Starting a `docker exec` and getting its raw stream.
//!
//! bollard's `start_exec` decodes the attach stream with a heuristic that
//! treats any chunk starting with byte 0, 1 or 2 as a multiplexing header,
//! which corrupts TTY sessions carrying such bytes (`head -c 1G /dev/zero`).
//! So the start request goes through hyper directly, and after the HTTP
//! upgrade we own the plain unix socket: raw bytes for TTY execs, Docker's
//! 8-byte-header frames otherwise (parsed in [`crate::broker::pump`]).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// The attach stream of a started exec.
pub struct ExecStream {
    /// The connection to the Docker daemon, now carrying the exec's bytes.
    pub socket: UnixStream,
    /// Bytes hyper had already read past the upgrade response.
    pub pending: Bytes,
}

/// Why an exec could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecStartError {
    #[error("cannot connect to the Docker Engine at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP exchange with the Docker Engine failed while starting exec {exec_id}: {source}")]
    Http {
        exec_id: String,
        #[source]
        source: hyper::Error,
    },
    #[error("the Docker Engine refused to start exec {exec_id} ({status}): {message}")]
    Refused {
        exec_id: String,
        status: StatusCode,
        message: String,
    },
    #[error("the Docker Engine did not hand over the exec {exec_id} stream")]
    NoUpgrade { exec_id: String },
}

/// Starts exec `exec_id` attached, over the Docker socket at `docker_socket`.
pub async fn start_exec(
    docker_socket: &Path,
    exec_id: &str,
    tty: bool,
) -> Result<ExecStream, ExecStartError> {
    let http_err = |source| ExecStartError::Http {
        exec_id: exec_id.to_owned(),
        source,
    };
    let unix =
        UnixStream::connect(docker_socket)
            .await
            .map_err(|source| ExecStartError::Connect {
                path: docker_socket.to_owned(),
                source,
            })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(unix))
        .await
        .map_err(http_err)?;
    let conn = tokio::spawn(conn.with_upgrades());

    let body = serde_json::json!({ "Detach": false, "Tty": tty }).to_string();
    let request = Request::post(format!("/exec/{exec_id}/start"))
        .header(hyper::header::HOST, "docker")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, "tcp")
        .body(Full::new(Bytes::from(body)))
        .expect("static request parts are valid");
    let response = sender.send_request(request).await.map_err(http_err)?;
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let body = response.into_body().collect().await.map_err(http_err)?;
        let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
            .unwrap_or(text);
        conn.abort();
        return Err(ExecStartError::Refused {
            exec_id: exec_id.to_owned(),
            status,
            message,
        });
    }
    let upgraded = hyper::upgrade::on(response).await.map_err(http_err)?;
    let parts =
        upgraded
            .downcast::<TokioIo<UnixStream>>()
            .map_err(|_| ExecStartError::NoUpgrade {
                exec_id: exec_id.to_owned(),
            })?;
    Ok(ExecStream {
        socket: parts.io.into_inner(),
        pending: parts.read_buf,
    })
}
