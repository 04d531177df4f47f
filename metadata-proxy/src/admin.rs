//! The admin listener: `/healthz`, `/healthz/sts` and `/metrics`. It binds
//! to loopback by default (the config refuses wildcard addresses) and
//! iptables' INPUT rules on the bastion bridge keep containers away from it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::containers::DockerWatcher;
use crate::metadata_api::Body;
use crate::metrics::{Exposition, Metrics};
use crate::sts::AssumeRole;

pub struct Admin<S> {
    pub metrics: Arc<Metrics>,
    pub watcher: Arc<DockerWatcher>,
    pub sts: StsCheck<S>,
}

/// `/healthz/sts`: whether STS answers the proxy, with the proxy's own
/// credentials and endpoint (GetCallerIdentity, which needs no
/// permission). One call at a time, and an answer is reused for
/// [`StsCheck::FRESH`]: the admin port cannot be used to flood STS.
pub struct StsCheck<S> {
    sts: S,
    last: tokio::sync::Mutex<Option<(Instant, Result<Duration, String>)>>,
}

impl<S: AssumeRole> StsCheck<S> {
    pub const FRESH: Duration = Duration::from_secs(10);
    const TIMEOUT: Duration = Duration::from_secs(10);

    pub fn new(sts: S) -> Self {
        Self {
            sts,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// How long STS took to answer, or why it did not.
    pub async fn check(&self) -> Result<Duration, String> {
        let mut last = self.last.lock().await;
        if let Some((at, result)) = &*last
            && at.elapsed() < Self::FRESH
        {
            return result.clone();
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(Self::TIMEOUT, self.sts.probe()).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}s", Self::TIMEOUT.as_secs())),
        };
        *last = Some((Instant::now(), result.clone()));
        result
    }
}

fn plain(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

impl<S: AssumeRole> Admin<S> {
    pub async fn handle<B>(&self, request: &Request<B>) -> Response<Body> {
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
            "/healthz/sts" => match self.sts.check().await {
                Ok(took) => plain(
                    StatusCode::OK,
                    format!("ok: STS answers ({} ms)\n", took.as_millis()),
                    "text/plain",
                ),
                Err(error) => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("STS does not answer the proxy: {error}\n"),
                    "text/plain",
                ),
            },
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
                "not found: try /healthz, /healthz/sts or /metrics\n".into(),
                "text/plain",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::sts::{AssumeRoleRequest, IssuedCredentials, StsError};

    /// A test double counting GetCallerIdentity calls: moto keeps no count
    /// of them, and the claim is about how many calls reach STS.
    #[derive(Default)]
    struct CountingProbeTestDouble {
        probes: AtomicUsize,
    }

    impl AssumeRole for Arc<CountingProbeTestDouble> {
        async fn assume_role(&self, _: &AssumeRoleRequest) -> Result<IssuedCredentials, StsError> {
            unreachable!("the STS check only probes")
        }

        async fn probe(&self) -> Result<(), StsError> {
            self.probes.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_flood_of_sts_checks_makes_one_sts_call() {
        let sts = Arc::new(CountingProbeTestDouble::default());
        let check = Arc::new(StsCheck::new(sts.clone()));
        let asks: Vec<_> = (0..200)
            .map(|_| {
                let check = check.clone();
                tokio::spawn(async move { check.check().await })
            })
            .collect();
        for ask in asks {
            assert!(ask.await.unwrap().is_ok());
        }
        assert_eq!(sts.probes.load(Ordering::SeqCst), 1);
    }
}
