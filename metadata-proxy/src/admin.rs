//! The admin listener: `/healthz` and `/metrics`. It binds to loopback by
//! default (the config refuses wildcard addresses) and iptables' INPUT
//! rules on the bastion bridge keep containers away from it.

use std::sync::Arc;

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::containers::DockerWatcher;
use crate::metadata_api::Body;
use crate::metrics::{Exposition, Metrics};

pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub watcher: Arc<DockerWatcher>,
}

fn plain(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl Admin {
    pub fn handle<B>(&self, request: &Request<B>) -> Response<Body> {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return plain(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".into(),
                "text/plain",
            );
        }
        match request.uri().path() {
            "/healthz" => {
                if self.watcher.is_healthy() {
                    plain(
                        StatusCode::OK,
                        format!(
                            "ok: {} user containers known\n",
                            self.watcher.directory().len()
                        ),
                        "text/plain",
                    )
                } else {
                    plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: the Docker events stream is not connected (is dockerd running?)\n".into(),
                        "text/plain",
                    )
                }
            }
            "/metrics" => {
                // OpenMetrics for scrapers that ask for it, Prometheus text
                // for everyone else (curl, promtool).
                let accept = request
                    .headers()
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok());
                let format = Exposition::from_accept(accept);
                plain(
                    StatusCode::OK,
                    self.metrics.render_as(format),
                    format.content_type(),
                )
            }
            _ => plain(
                StatusCode::NOT_FOUND,
                "not found: try /healthz or /metrics\n".into(),
                "text/plain",
            ),
        }
    }
}
