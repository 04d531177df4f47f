//! `[recording]`: session recordings and the audit trail (issue 4).
//!
//! ```toml
//! [recording]
//! log_dir = "/var/log/bastion"           # recordings go to <log_dir>/sessions/<user>/<id>.cast
//! audit_log = "/var/log/bastion/audit.jsonl"
//! record_input = false                   # keystrokes (passwords!) are not recorded by default
//! max_recording_bytes = "64MiB"          # then a marker, and byte counts only
//! reserve = "1GiB"                       # kept free for the audit trail: no recording below it
//! on_log_failure = "refuse"              # or "allow": log in anyway, with a loud warning
//! banner = "This session is recorded."   # "" for none; interactive sessions only
//! syslog = true                          # also send audit events to syslog (authpriv)
//! ```

use std::path::PathBuf;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::problems::{Checks, KeyPath};

/// What bastiond does when the logs cannot be written at session start
/// (disk full, read-only, missing) — `[recording] on_log_failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnLogFailure {
    /// Refuse the login (fail closed). The default.
    #[default]
    Refuse,
    /// Let the user in unrecorded, with a loud warning in the logs.
    Allow,
}

/// The banner shown by default at the start of interactive sessions.
pub const DEFAULT_BANNER: &str =
    "This session is recorded and audited. Everything shown on this terminal is kept for review.";

/// `[recording]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Root of the logs: recordings live in `<log_dir>/sessions/<user>/`.
    pub log_dir: PathBuf,
    /// The hash-chained audit log.
    pub audit_log: PathBuf,
    /// Record what users type (`"i"` events). Off by default: passwords are
    /// typed there.
    pub record_input: bool,
    /// Size cap of one recording file. After it, a marker, then byte counts
    /// only.
    pub max_recording_bytes: ByteSize,
    /// Free space kept on the log directory's file system for the audit
    /// trail: no recording is started, and a running one stops, when less
    /// is free. bastiond warns when less than twice this is free.
    pub reserve: ByteSize,
    /// What to do when the logs cannot be written at session start.
    pub on_log_failure: OnLogFailure,
    /// Text shown at the start of interactive sessions (never in command,
    /// scp, sftp or rsync sessions). Empty: no banner.
    pub banner: String,
    /// Send each audit event to syslog (facility authpriv) as well.
    pub syslog: bool,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        Self {
            log_dir: PathBuf::from("/var/log/bastion"),
            audit_log: PathBuf::from("/var/log/bastion/audit.jsonl"),
            record_input: false,
            max_recording_bytes: ByteSize::mib(64),
            reserve: ByteSize::gib(1),
            on_log_failure: OnLogFailure::Refuse,
            banner: DEFAULT_BANNER.to_owned(),
            syslog: true,
        }
    }
}

impl RecordingConfig {
    /// The banner to show, if any (interactive sessions only: the caller
    /// decides whether the session is interactive).
    pub fn banner(&self) -> Option<&str> {
        let text = self.banner.trim_end();
        (!text.is_empty()).then_some(text)
    }

    pub(super) fn check(&self, at: &KeyPath, checks: &mut Checks) {
        if !self.log_dir.is_absolute() {
            checks.bad(at.key("log_dir"), "must be an absolute path");
        }
        if !self.audit_log.is_absolute() {
            checks.bad(at.key("audit_log"), "must be an absolute path");
        }
        if self.audit_log.file_name().is_none() {
            checks.bad(at.key("audit_log"), "must name a file");
        }
        if self.max_recording_bytes < ByteSize::kib(64) {
            checks.bad(at.key("max_recording_bytes"), "must be at least 64KiB");
        }
        if self.banner.len() > 4096 {
            checks.bad(at.key("banner"), "must be at most 4096 bytes");
        }
        if self
            .banner
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            checks.bad(
                at.key("banner"),
                "must not contain control characters (escape sequences could hide it)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    #[test]
    fn defaults_fail_closed_and_do_not_record_input() {
        let config = Config::parse("").unwrap().recording;
        assert_eq!(config.log_dir, PathBuf::from("/var/log/bastion"));
        assert_eq!(
            config.audit_log,
            PathBuf::from("/var/log/bastion/audit.jsonl")
        );
        assert!(!config.record_input);
        assert_eq!(config.max_recording_bytes, ByteSize::mib(64));
        assert_eq!(config.on_log_failure, OnLogFailure::Refuse);
        assert_eq!(config.banner(), Some(DEFAULT_BANNER));
        assert!(config.syslog);
    }

    #[test]
    fn all_keys_parse() {
        let text = "[recording]\nlog_dir = \"/srv/log\"\naudit_log = \"/srv/log/a.jsonl\"\nrecord_input = true\nmax_recording_bytes = \"1GiB\"\non_log_failure = \"allow\"\nbanner = \"\"\nsyslog = false\n";
        let config = Config::parse(text).unwrap().recording;
        assert_eq!(config.log_dir, PathBuf::from("/srv/log"));
        assert!(config.record_input);
        assert_eq!(config.max_recording_bytes, ByteSize::gib(1));
        assert_eq!(config.on_log_failure, OnLogFailure::Allow);
        assert_eq!(config.banner(), None, "an empty banner means none");
        assert!(!config.syslog);
    }

    #[test]
    fn a_bad_on_log_failure_is_named_with_its_line() {
        let problems = Config::parse("[recording]\non_log_failure = \"ignore\"\n").unwrap_err();
        let problem = &problems[0];
        assert_eq!(problem.line, Some(2), "{problem}");
        assert_eq!(
            problem.key.as_deref(),
            Some("recording.on_log_failure"),
            "{problem}"
        );
    }

    #[test]
    fn bad_values_name_their_key_and_line() {
        for (text, key, line) in [
            (
                "[recording]\nlog_dir = \"var/log\"\n",
                "recording.log_dir",
                2,
            ),
            (
                "[recording]\nsyslog = true\nmax_recording_bytes = \"1KiB\"\n",
                "recording.max_recording_bytes",
                3,
            ),
            (
                "[recording]\nbanner = \"hi\\u001b[8m\"\n",
                "recording.banner",
                2,
            ),
            (
                "[recording]\naudit_log = \"audit.jsonl\"\n",
                "recording.audit_log",
                2,
            ),
        ] {
            let problems = Config::parse(text).unwrap_err();
            let problem = &problems[0];
            assert_eq!(problem.key.as_deref(), Some(key), "{text}: {problem}");
            assert_eq!(problem.line, Some(line), "{text}: {problem}");
        }
    }
}
