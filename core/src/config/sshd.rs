//! `[sshd]`: the bastion's own OpenSSH server, which `provisioning/install.sh`
//! configures (its sshd_config is generated from a template) and
//! `bastionctl doctor` checks. bastion's daemons do not read it.
//!
//! ```toml
//! [sshd]
//! listen = "0.0.0.0:2222"   # never the host's admin sshd port
//! ```

use std::net::{Ipv4Addr, SocketAddr};

use serde::Deserialize;

use super::problems::{Checks, KeyPath};

/// `[sshd]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SshdConfig {
    /// Address and port the bastion sshd listens on. The default keeps the
    /// host's own sshd (port 22) untouched.
    pub listen: SocketAddr,
}

/// The default port: beside, never instead of, the host's admin sshd.
pub const DEFAULT_SSHD_PORT: u16 = 2222;

impl Default for SshdConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_SSHD_PORT)),
        }
    }
}

impl SshdConfig {
    pub(super) fn check(&self, at: &KeyPath, checks: &mut Checks) {
        if self.listen.port() == 0 {
            checks.bad(at.key("listen"), "must name a port (e.g. \"0.0.0.0:2222\")");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_default_listens_beside_the_hosts_sshd() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.sshd.listen.to_string(), "0.0.0.0:2222");
    }

    #[test]
    fn a_listen_address_is_read_and_port_zero_refused() {
        let config = Config::parse("[sshd]\nlisten = \"10.0.0.5:22\"\n").unwrap();
        assert_eq!(config.sshd.listen.to_string(), "10.0.0.5:22");
        let problems = Config::parse("[sshd]\nlisten = \"10.0.0.5:0\"\n").unwrap_err();
        assert_eq!(
            problems[0].key.as_deref(),
            Some("sshd.listen"),
            "{problems}"
        );
        let problems = Config::parse("[sshd]\nlisten = \"somewhere\"\n").unwrap_err();
        assert_eq!(problems[0].line, Some(2), "{problems}");
    }
}
