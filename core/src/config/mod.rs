//! `/etc/bastion/bastion.toml`: one file, one section per component.
//!
//! The file must be root-owned and not group/world-writable (see
//! [`crate::secure_file`]). Unknown keys are errors, and every error names
//! the key and the line, so `bastionctl check` can tell ops what to fix.

mod bastiond;
mod metadata_proxy;
pub mod problems;
mod recording;
mod sshd;

pub use bastiond::{
    BastiondConfig, Limits, NetworkConfig, Overrides, PartialLimits, ResolveError,
    USER_BRIDGE_PREFIX, USER_NETWORK_PREFIX, UserSettings,
};
pub use metadata_proxy::MetadataProxyConfig;
pub use problems::{Checks, Invalid, KeyPath, Problem, Problems};
pub use recording::{OnLogFailure, RecordingConfig};
pub use sshd::{DEFAULT_SSHD_PORT, SshdConfig};

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secure_file::{self, Owner, SecureFileError};

/// Where the config lives unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/bastion/bastion.toml";

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub bastiond: BastiondConfig,
    pub metadata_proxy: MetadataProxyConfig,
    pub recording: RecordingConfig,
    pub sshd: SshdConfig,
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] SecureFileError),
    #[error("{path}: {}", problems.to_string().replace('\n', &format!("\n{}: ", path.display())))]
    Invalid { path: PathBuf, problems: Problems },
}

impl Config {
    /// Loads and validates the file at `path`, which must be root-owned.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_owned_by(path, Owner::Root)
    }

    /// Like [`Config::load`], with the required owner spelled out (tests).
    pub fn load_owned_by(path: &Path, owner: Owner) -> Result<Self, ConfigError> {
        let text = secure_file::read_trusted(path, owner)?;
        Self::parse(&text).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// Parses and validates config text: the config, or every problem of
    /// the text, each at its full key and line.
    pub fn parse(text: &str) -> Result<Self, Problems> {
        problems::parse_checked(text, |config: &Config, checks| config.check(checks))
    }

    fn check(&self, checks: &mut Checks) {
        let root = KeyPath::root();
        self.bastiond.check(&root.key("bastiond"), checks);
        self.metadata_proxy
            .check(&root.key("metadata_proxy"), checks);
        self.recording.check(&root.key("recording"), checks);
        self.sshd.check(&root.key("sshd"), checks);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_with_control_characters_is_shown_escaped() {
        let problems = Config::parse("[bastiond]\n\"a\\u001b]0;x\\u0007\" = 1\n").unwrap_err();
        let problem = &problems[0];
        let shown = problem.to_string();
        assert!(
            !shown.contains('\u{1b}') && !shown.contains('\u{7}'),
            "{shown:?}"
        );
        assert!(shown.contains("unknown field `a\\x1b]0;x\\x07`"), "{shown}");
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.bastiond.network.name, "bastion0");
        assert_eq!(
            config.bastiond.socket,
            PathBuf::from("/run/bastion/bastiond.sock")
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let text = "[bastiond]\nimage = \"x\"\nimagee = \"y\"\n";
        let problems = Config::parse(text).unwrap_err();
        let problem = &problems[0];
        assert_eq!(problem.line, Some(3), "{problem}");
        assert_eq!(problem.key.as_deref(), Some("bastiond.imagee"), "{problem}");
        assert!(problem.to_string().contains("line 3"), "{problem}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_line() {
        let text = "[bastiond]\n\n[bastiond.limits]\npids = \"many\"\n";
        let problems = Config::parse(text).unwrap_err();
        let problem = &problems[0];
        assert_eq!(problem.line, Some(4), "{problem}");
        assert_eq!(
            problem.key.as_deref(),
            Some("bastiond.limits.pids"),
            "{problem}"
        );
    }

    #[test]
    fn a_bad_value_is_named_with_its_line() {
        let text = "[bastiond]\nimage = \"x\"\n[bastiond.limits]\ncpus = -1.0\n";
        let problems = Config::parse(text).unwrap_err();
        let problem = &problems[0];
        assert_eq!(problem.key.as_deref(), Some("bastiond.limits.cpus"));
        assert_eq!(problem.line, Some(4), "{problem}");
    }

    #[test]
    fn every_problem_of_the_file_is_reported_with_its_full_key_and_line() {
        let text = "\
[bastiond]
image = \"\"
limits = { pids = \"many\", cpus = -2.0 }
allow_users = [\"alice\", 3]
[bastiond.users.bob]
limits = { memory = \"1MiB\" }
[metadata_proxy]
port = 0
[recording]
on_log_failure = \"maybe\"
";
        let problems = Config::parse(text).unwrap_err();
        let found: Vec<(Option<&str>, Option<usize>)> = problems
            .iter()
            .map(|p| (p.key.as_deref(), p.line))
            .collect();
        assert_eq!(
            found,
            [
                (Some("bastiond.image"), Some(2)),
                (Some("bastiond.limits.pids"), Some(3)),
                (Some("bastiond.limits.cpus"), Some(3)),
                (Some("bastiond.allow_users[1]"), Some(4)),
                (Some("bastiond.users.bob.limits.memory"), Some(6)),
                (Some("metadata_proxy.port"), Some(8)),
                (Some("recording.on_log_failure"), Some(10)),
            ],
            "{problems}"
        );
        // One line each when shown, each naming the file.
        let shown = ConfigError::Invalid {
            path: "/etc/bastion/bastion.toml".into(),
            problems,
        }
        .to_string();
        assert_eq!(shown.lines().count(), 7, "{shown}");
        assert!(
            shown
                .lines()
                .all(|l| l.starts_with("/etc/bastion/bastion.toml: line ")),
            "{shown}"
        );
    }
}
