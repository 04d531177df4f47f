//! `[metadata_proxy]`: settings of `bastion-metadata-proxy` (issue 3).
//!
//! The proxy listens on the bastion bridge's gateway (see
//! `[bastiond.network]`) at `port`; iptables DNATs the containers' traffic
//! for 169.254.169.254:80 (IMDS) and 169.254.170.2:80 (container
//! credentials) there. `/healthz` and `/metrics` live on `admin_listen`,
//! loopback by default, which containers cannot reach.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use super::problems::{Checks, KeyPath};

/// `[metadata_proxy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataProxyConfig {
    /// TCP port on the bridge gateway that iptables DNATs metadata traffic to.
    pub port: u16,
    /// Listen here instead of the bridge gateway (tests, unusual setups).
    pub listen_address: Option<IpAddr>,
    /// `/healthz` and `/metrics`; must not be reachable from containers.
    pub admin_listen: SocketAddr,
    /// Refuse IMDSv1 (token-less) reads: IMDSv2 only.
    pub require_imdsv2: bool,
    /// Open connections one source address (one container) may hold; its
    /// next one is closed at once.
    pub max_connections_per_source: usize,
    /// AWS account of role names given without an ARN; when unset, the
    /// account of the proxy's own credentials (sts:GetCallerIdentity).
    pub account_id: Option<String>,
    /// ARN partition of roles built from names.
    pub partition: String,
    /// Prepended to role names (`bastion-` turns `alice` into
    /// `role/bastion-alice`); may carry an IAM path such as `bastion/`.
    pub role_prefix: String,
    /// ExternalId passed to every AssumeRole.
    pub external_id: Option<String>,
    /// DurationSeconds of AssumeRole (role chaining is capped at 1 h by AWS).
    #[serde(with = "humantime_serde")]
    pub session_duration: Duration,
    /// Refresh cached credentials when less than this is left; more than
    /// 20 minutes, so served credentials always have more than 20 minutes.
    #[serde(with = "humantime_serde")]
    pub refresh_ahead: Duration,
    /// Tag sessions with `bastion-user` and `bastion-container`
    /// (the role's trust policy must allow sts:TagSession).
    pub session_tags: bool,
    /// STS endpoint override (an STS-compatible server, e.g. the demo's moto).
    pub sts_endpoint: Option<String>,
    /// Region of the STS client; from the environment/IMDS when unset.
    pub sts_region: Option<String>,
    /// The real instance metadata service, reached by the host itself.
    pub imds_upstream: String,
    /// Paths under `/latest/` passed through to the real IMDS, matched
    /// exactly (e.g. `meta-data/placement/region`). Everything else is
    /// denied; IAM paths, identity credentials and user-data never pass.
    pub passthrough: Vec<String>,
}

impl Default for MetadataProxyConfig {
    fn default() -> Self {
        Self {
            port: 8775,
            listen_address: None,
            admin_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8776)),
            require_imdsv2: false,
            max_connections_per_source: 64,
            account_id: None,
            partition: "aws".to_owned(),
            role_prefix: String::new(),
            external_id: None,
            session_duration: Duration::from_secs(3600),
            refresh_ahead: Duration::from_secs(30 * 60),
            session_tags: false,
            sts_endpoint: None,
            sts_region: None,
            imds_upstream: "http://169.254.169.254".to_owned(),
            passthrough: vec![
                "meta-data/placement/region".to_owned(),
                "meta-data/placement/availability-zone".to_owned(),
                "meta-data/instance-id".to_owned(),
            ],
        }
    }
}

/// Passthrough prefixes that would hand out the host's secrets or data.
const NEVER_PASSED: &[&str] = &[
    "meta-data/iam",
    "meta-data/identity-credentials",
    "user-data",
    "api",
];

impl MetadataProxyConfig {
    /// Served credentials always have more than this left (botocore keeps
    /// using credentials past their expiry when handed ones with less).
    pub const MIN_SERVED_LIFETIME: Duration = Duration::from_secs(20 * 60);

    pub(super) fn check(&self, at: &KeyPath, checks: &mut Checks) {
        if self.port == 0 {
            checks.bad(at.key("port"), "must be a TCP port (1-65535)");
        }
        if self.max_connections_per_source == 0 {
            checks.bad(at.key("max_connections_per_source"), "must be at least 1");
        }
        if self.admin_listen.ip().is_unspecified() {
            checks.bad(
                at.key("admin_listen"),
                "must not be a wildcard address: containers could reach /metrics; use 127.0.0.1",
            );
        }
        if let Some(account) = &self.account_id
            && !(account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
        {
            checks.bad(at.key("account_id"), "must be a 12-digit AWS account id");
        }
        if self.partition.is_empty()
            || !self
                .partition
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-')
        {
            checks.bad(
                at.key("partition"),
                "must be an ARN partition such as `aws`",
            );
        }
        if !self
            .role_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c))
        {
            checks.bad(
                at.key("role_prefix"),
                "may only hold letters, digits and +=,.@_-/",
            );
        }
        if let Some(id) = &self.external_id
            && !(2..=1224).contains(&id.len())
        {
            checks.bad(
                at.key("external_id"),
                "must be 2 to 1224 characters (STS ExternalId)",
            );
        }
        if let Some(id) = &self.external_id
            && !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@:/-".contains(c))
        {
            checks.bad(
                at.key("external_id"),
                "may only hold letters, digits and _+=,.@:/- (STS ExternalId)",
            );
        }
        let secs = self.session_duration.as_secs();
        if !(900..=43200).contains(&secs) || self.session_duration.subsec_nanos() != 0 {
            checks.bad(at.key("session_duration"), "must be whole seconds from 15m to 12h (STS DurationSeconds); role chaining caps it at 1h");
        }
        if self.refresh_ahead <= Self::MIN_SERVED_LIFETIME {
            checks.bad(at.key("refresh_ahead"), "must be more than 20m: credentials are always served with more than 20 minutes left");
        }
        if self.session_duration < self.refresh_ahead + Duration::from_secs(300) {
            checks.bad(at.key("session_duration"), "must be at least refresh_ahead + 5m, or credentials would be refreshed as soon as they are issued");
        }
        if let Some(endpoint) = &self.sts_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            checks.bad(at.key("sts_endpoint"), "must be an http:// or https:// URL");
        }
        if !self.imds_upstream.starts_with("http://") {
            checks.bad(
                at.key("imds_upstream"),
                "must be an http:// URL (the real IMDS is http://169.254.169.254)",
            );
        }
        for (i, path) in self.passthrough.iter().enumerate() {
            if let Err(message) = check_passthrough(path) {
                checks.bad(
                    at.key("passthrough").index(i),
                    format!("entry {} (`{path}`) {message}", i + 1),
                );
            }
        }
    }
}

fn check_passthrough(path: &str) -> Result<(), String> {
    let well_formed = !path.is_empty()
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        && !path.starts_with('/')
        && !path.ends_with('/')
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    if !well_formed {
        return Err(
            "must be a plain path under /latest/ such as `meta-data/placement/region` (no leading or trailing slash, no `..`)".into(),
        );
    }
    if !(path.starts_with("meta-data/") || path.starts_with("dynamic/")) {
        return Err("must start with `meta-data/` or `dynamic/`".into());
    }
    if let Some(never) = NEVER_PASSED
        .iter()
        .find(|p| path == **p || path.starts_with(&format!("{p}/")))
    {
        return Err(format!(
            "would expose the host's own `{never}`: it is never passed through"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::MetadataProxyConfig;

    fn problem(text: &str) -> (Option<String>, Option<usize>) {
        let problems = Config::parse(text).unwrap_err();
        (problems[0].key.clone(), problems[0].line)
    }

    #[test]
    fn defaults_are_valid() {
        let config = Config::parse("[metadata_proxy]\n").unwrap().metadata_proxy;
        assert_eq!(config.port, 8775);
        assert!(config.admin_listen.ip().is_loopback());
        assert!(!config.passthrough.is_empty());
    }

    #[test]
    fn host_role_paths_are_refused_in_the_passthrough_list() {
        for path in [
            "meta-data/iam/security-credentials/host-role",
            "meta-data/iam",
            "meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
            "user-data",
        ] {
            let text = format!(
                "[metadata_proxy]\npassthrough = [\"meta-data/instance-id\", \"{path}\"]\n"
            );
            let (key, line) = problem(&text);
            assert_eq!(
                key.as_deref(),
                Some("metadata_proxy.passthrough[1]"),
                "{path}"
            );
            assert_eq!(line, Some(2), "{path}");
        }
        for path in [
            "meta-data/../iam",
            "/meta-data/x",
            "meta-data/x/",
            "meta-data//x",
            "meta-data/x?y",
        ] {
            let text = format!("[metadata_proxy]\npassthrough = [\"{path}\"]\n");
            assert_eq!(
                problem(&text).0.as_deref(),
                Some("metadata_proxy.passthrough[0]"),
                "{path}"
            );
        }
    }

    #[test]
    fn durations_follow_sts_and_the_20_minute_rule() {
        let (key, line) = problem("[metadata_proxy]\nport = 80\nsession_duration = \"5m\"\n");
        assert_eq!(key.as_deref(), Some("metadata_proxy.session_duration"));
        assert_eq!(line, Some(3));
        let (key, _) = problem("[metadata_proxy]\nrefresh_ahead = \"10m\"\n");
        assert_eq!(key.as_deref(), Some("metadata_proxy.refresh_ahead"));
        let (key, _) = problem("[metadata_proxy]\nsession_duration = \"13h\"\n");
        assert_eq!(key.as_deref(), Some("metadata_proxy.session_duration"));
        assert!(
            Config::parse("[metadata_proxy]\nsession_duration = \"12h\"\nrefresh_ahead = \"2h\"\n")
                .is_ok()
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            (
                "admin_listen = \"0.0.0.0:8776\"",
                "metadata_proxy.admin_listen",
            ),
            ("account_id = \"12345\"", "metadata_proxy.account_id"),
            ("external_id = \"x\"", "metadata_proxy.external_id"),
            ("external_id = \"a b\"", "metadata_proxy.external_id"),
            ("role_prefix = \"a b\"", "metadata_proxy.role_prefix"),
            (
                "sts_endpoint = \"localhost:5000\"",
                "metadata_proxy.sts_endpoint",
            ),
            ("port = 0", "metadata_proxy.port"),
        ] {
            let (got, line) = problem(&format!("[metadata_proxy]\n{text}\n"));
            assert_eq!(got.as_deref(), Some(key), "{text}");
            assert_eq!(line, Some(2), "{text}");
        }
        let (got, _) = problem("[metadata_proxy]\nrequire_imdsv3 = true\n");
        assert_eq!(got.as_deref(), Some("metadata_proxy.require_imdsv3"));
    }

    #[test]
    fn the_documented_section_parses_with_every_key_set() {
        // provisioning/metadata-proxy.toml lists every key, commented out.
        let doc = include_str!("../../../provisioning/metadata-proxy.toml");
        let text: String = doc
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    }) =>
                {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let config = Config::parse(&text).unwrap_or_else(|p| panic!("{p}\n{text}"));
        let proxy = config.metadata_proxy;
        assert_eq!(proxy.listen_address, Some("172.30.0.1".parse().unwrap()));
        assert_eq!(proxy.port, MetadataProxyConfig::default().port);
        assert_eq!(proxy.account_id.as_deref(), Some("123456789012"));
        assert_eq!(proxy.passthrough.len(), 3);
    }
}
