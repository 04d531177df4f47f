//! The allow-listed paths passed through to the real IMDS.
//!
//! Only the allow-list's own strings are ever sent upstream (never the
//! caller's raw path), with the proxy's own IMDSv2 token. The caller gets
//! the upstream body for 200 and a 404 for 404; anything else is a 502.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::secret::{ExposeSecret, Secret};

const TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BODY: usize = 64 * 1024;
const TOKEN_TTL: u32 = 21_600;

/// Why the real IMDS gave nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("real IMDS {url}: {message}")]
    Request { url: String, message: String },
    #[error("real IMDS {url} answered {status}")]
    Status { url: String, status: StatusCode },
}

/// The real instance metadata service, as the host reaches it.
pub struct Upstream {
    base: String,
    allowed: Vec<String>,
    client: Client<HttpConnector, Empty<Bytes>>,
    token: tokio::sync::Mutex<Option<(Secret, Instant)>>,
}

impl Upstream {
    /// `base` like `http://169.254.169.254`; `allowed` are paths under
    /// `/latest/`, validated by the config.
    pub fn new(base: &str, allowed: Vec<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(TIMEOUT));
        Self {
            base: base.trim_end_matches('/').to_owned(),
            allowed,
            client: Client::builder(TokioExecutor::new()).build(connector),
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// The allow-list entry a request path (under `/latest/`) names: exact,
    /// or with one trailing slash (botocore asks `availability-zone/`).
    pub fn allowed_entry(&self, path: &str) -> Option<&str> {
        let path = path.strip_suffix('/').unwrap_or(path);
        self.allowed.iter().find(|a| *a == path).map(String::as_str)
    }

    /// Allowed entries (for the metadata listings).
    pub fn allowed(&self) -> &[String] {
        &self.allowed
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        header: Option<(&str, &str)>,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        let fail = |message: String| UpstreamError::Request {
            url: url.to_owned(),
            message,
        };
        let mut builder = Request::builder().method(method).uri(url);
        if let Some((name, value)) = header {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Empty::new())
            .map_err(|e| fail(e.to_string()))?;
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| fail("timed out".into()))?
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        let body = tokio::time::timeout(
            TIMEOUT,
            Limited::new(response.into_body(), MAX_BODY).collect(),
        )
        .await
        .map_err(|_| fail("timed out reading the body".into()))?
        .map_err(|e| fail(e.to_string()))?
        .to_bytes();
        Ok((status, body))
    }

    /// The proxy's own IMDSv2 token; `None` when the upstream has no
    /// IMDSv2 (then IMDSv1 is used).
    async fn token(&self, renew: bool) -> Option<Secret> {
        let mut cached = self.token.lock().await;
        if !renew
            && let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Some(token.clone());
        }
        let url = format!("{}/latest/api/token", self.base);
        let ttl = TOKEN_TTL.to_string();
        match self
            .send(
                Method::PUT,
                &url,
                Some(("x-aws-ec2-metadata-token-ttl-seconds", &ttl)),
            )
            .await
        {
            Ok((StatusCode::OK, body)) => {
                let token = Secret::from(String::from_utf8_lossy(&body).into_owned());
                let until = Instant::now() + Duration::from_secs(u64::from(TOKEN_TTL) - 300);
                *cached = Some((token.clone(), until));
                Some(token)
            }
            Ok((status, _)) => {
                tracing::warn!(%status, "real IMDS refused a token; using IMDSv1 for passthrough");
                None
            }
            Err(error) => {
                tracing::warn!(%error, "cannot get a token from the real IMDS");
                None
            }
        }
    }

    /// GETs an allow-listed entry from the real IMDS.
    pub async fn get(&self, entry: &str) -> Result<(StatusCode, Bytes), UpstreamError> {
        debug_assert!(self.allowed.iter().any(|a| a == entry));
        let url = format!("{}/latest/{entry}", self.base);
        let mut renew = false;
        loop {
            let token = self.token(renew).await;
            let header = token
                .as_ref()
                .map(|t| ("x-aws-ec2-metadata-token", t.expose_secret()));
            let (status, body) = self.send(Method::GET, &url, header).await?;
            match status {
                StatusCode::OK | StatusCode::NOT_FOUND => return Ok((status, body)),
                StatusCode::UNAUTHORIZED if !renew => renew = true,
                status => return Err(UpstreamError::Status { url, status }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exact_entries_match() {
        let up = Upstream::new(
            "http://169.254.169.254",
            vec![
                "meta-data/placement/region".into(),
                "meta-data/instance-id".into(),
            ],
        );
        assert_eq!(
            up.allowed_entry("meta-data/placement/region"),
            Some("meta-data/placement/region")
        );
        assert_eq!(
            up.allowed_entry("meta-data/placement/region/"),
            Some("meta-data/placement/region")
        );
        for path in [
            "meta-data/placement/region//",
            "meta-data/placement/region/x",
            "meta-data/placement",
            "meta-data/placement/regionx",
            "meta-data/placement/../iam/security-credentials/",
            "meta-data/iam/security-credentials/host",
        ] {
            assert_eq!(up.allowed_entry(path), None, "{path}");
        }
    }
}
