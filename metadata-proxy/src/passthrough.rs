//! The allow-listed paths passed through to the real IMDS.
//!
//! Only the allow-list's own strings are ever sent upstream (never the
//! caller's raw path). The requests go through `aws_config`'s IMDSv2
//! client, which fetches, caches and renews the proxy's own session token
//! and retries what IMDS asks to be retried. It speaks IMDSv2 only, as every
//! EC2 instance does (IMDSv1 can be turned off, IMDSv2 cannot). The caller
//! gets the upstream body for 200 and a 404 for 404; anything else is a 502.

use std::time::Duration;

use aws_config::imds::client::Client;
use aws_config::imds::client::error::ImdsError;

/// Each connection to the real IMDS, and each read from it.
const TIMEOUT: Duration = Duration::from_secs(2);
/// A caller waits at most this long for a passthrough answer.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(4);
/// The real IMDS on the host is one hop away: one retry is enough.
const ATTEMPTS: u32 = 2;
const TOKEN_TTL: Duration = Duration::from_secs(21_600);

/// Why the real IMDS gave nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("metadata_proxy.imds_upstream {url:?} is not a usable IMDS endpoint: {message}")]
    Endpoint { url: String, message: String },
    #[error("real IMDS {url}: no session token ({message})")]
    Token { url: String, message: String },
    #[error("real IMDS {url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("real IMDS {url}: {message}")]
    Request { url: String, message: String },
}

/// The real instance metadata service, as the host reaches it.
pub struct Upstream {
    base: String,
    allowed: Vec<String>,
    client: Client,
}

impl Upstream {
    /// `base` like `http://169.254.169.254`; `allowed` are paths under
    /// `/latest/`, validated by the config.
    pub fn new(base: &str, allowed: Vec<String>) -> Result<Self, UpstreamError> {
        let base = base.trim_end_matches('/').to_owned();
        let client = Client::builder()
            .endpoint(&base)
            .map_err(|e| UpstreamError::Endpoint {
                url: base.clone(),
                message: e.to_string(),
            })?
            .max_attempts(ATTEMPTS)
            .connect_timeout(TIMEOUT)
            .read_timeout(TIMEOUT)
            .operation_timeout(OPERATION_TIMEOUT)
            .token_ttl(TOKEN_TTL)
            .build();
        Ok(Self {
            base,
            allowed,
            client,
        })
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

    /// GETs an allow-listed entry from the real IMDS: its body, or `None`
    /// when the real IMDS has no such entry (404).
    pub async fn get(&self, entry: &str) -> Result<Option<String>, UpstreamError> {
        debug_assert!(self.allowed.iter().any(|a| a == entry));
        let path = format!("/latest/{entry}");
        let url = format!("{}{path}", self.base);
        match self.client.get(path).await {
            Ok(body) => Ok(Some(body.as_ref().to_owned())),
            Err(ImdsError::ErrorResponse(response)) => {
                match response.response().status().as_u16() {
                    404 => Ok(None),
                    status => Err(UpstreamError::Status { url, status }),
                }
            }
            Err(e @ ImdsError::FailedToLoadToken(_)) => Err(UpstreamError::Token {
                url,
                message: bastion_core::logging::error_chain(&e),
            }),
            Err(e) => Err(UpstreamError::Request {
                url,
                message: bastion_core::logging::error_chain(&e),
            }),
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
        )
        .unwrap();
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
