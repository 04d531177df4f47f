//! Checks of the running daemons: bastiond's health socket, the metadata
//! proxy's admin endpoints (`/healthz`, and `/healthz/sts`: whether STS
//! answers the proxy with its own credentials).

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::{Check, Services};
use crate::broker::health::{self, Status};
use crate::config::Config;

/// How long each daemon gets to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(12);

pub async fn bastiond(config: &Config, services: &Services) -> Check {
    let path = config.bastiond.health_socket.clone();
    let fix = services.restart("bastiond");
    let asked =
        tokio::task::spawn_blocking(move || health::ask(&path, Duration::from_secs(5))).await;
    match asked {
        Ok(Ok(h)) if h.status == Status::Ok => Check::ok(
            "bastiond",
            format!(
                "healthy (pid {}, version {}, up {} s, {} live session(s))",
                h.pid, h.version, h.uptime_seconds, h.live_sessions
            ),
        ),
        Ok(Ok(h)) => {
            let broken: Vec<&str> = [&h.docker, &h.login_socket]
                .into_iter()
                .filter(|p| !p.ok)
                .map(|p| p.detail.as_str())
                .collect();
            Check::fail(
                "bastiond",
                format!("degraded (pid {}): {}", h.pid, broken.join("; ")),
                fix,
            )
        }
        Ok(Err(e)) => Check::fail("bastiond", format!("{e}: it is not running or hangs"), fix),
        Err(e) => Check::fail("bastiond", format!("cannot ask bastiond: {e}"), fix),
    }
}

/// The proxy's health and, through it, STS.
pub async fn proxy(config: &Config, services: &Services) -> Vec<Check> {
    let admin = config.metadata_proxy.admin_listen;
    let fix = services.restart("metadata-proxy");
    let proxy = match get(admin, "/healthz").await {
        Ok((200, body)) => Check::ok("metadata proxy", body.trim().to_owned()),
        Ok((status, body)) => Check::fail(
            "metadata proxy",
            format!("unhealthy ({status}): {}", body.trim()),
            fix.clone(),
        ),
        Err(e) => {
            return vec![
                Check::fail(
                    "metadata proxy",
                    format!("no answer on its admin address {admin}: {e}"),
                    fix.clone(),
                ),
                Check::fail("sts", "cannot ask: the metadata proxy does not answer", fix),
            ];
        }
    };
    let sts_fix = "check [metadata_proxy] sts_endpoint and sts_region in bastion.toml, the host's credentials (its instance profile, or /etc/bastion/metadata-proxy.env) and the route to STS";
    let sts = match get(admin, "/healthz/sts").await {
        Ok((200, body)) => Check::ok("sts", format!("{} (asked by the proxy)", body.trim())),
        Ok((_, body)) => Check::fail("sts", body.trim().to_owned(), sts_fix),
        Err(e) => Check::fail("sts", format!("the proxy did not answer: {e}"), sts_fix),
    };
    vec![proxy, sts]
}

/// `GET path` on `addr`: the status and the body (at most 64 KiB).
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let ask = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = http::Request::get(path)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(ANSWER_TIMEOUT, ask)
        .await
        .map_err(|_| format!("no answer within {} s", ANSWER_TIMEOUT.as_secs()))?
}
