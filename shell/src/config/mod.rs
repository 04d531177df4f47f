//! `/etc/bastion/bastion.toml`: one file, one section per component.
//!
//! The file must be root-owned and not group/world-writable (see
//! [`crate::secure_file`]). Unknown keys are errors, and every error names
//! the key and the line, so `bastionctl check` can tell ops what to fix.

mod bastiond;
mod metadata_proxy;
mod recording;

pub use bastiond::{
    BastiondConfig, Limits, NetworkConfig, Overrides, ResolveError, USER_BRIDGE_PREFIX,
    USER_NETWORK_PREFIX, UserSettings,
};
pub use metadata_proxy::MetadataProxyConfig;
pub use recording::RecordingConfig;

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
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] SecureFileError),
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: Problem },
}

/// One thing wrong with the file, located at a key and a line where known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    /// Shown escaped: key and message quote the file's text, and control
    /// characters in it must not reach the terminal raw.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match (&self.line, &self.key) {
            (Some(line), Some(key)) => format!("line {line}, key `{key}`: {}", self.message),
            (Some(line), None) => format!("line {line}: {}", self.message),
            (None, Some(key)) => format!("key `{key}`: {}", self.message),
            (None, None) => self.message.clone(),
        };
        f.write_str(&crate::review::terminal_safe::escape(&text))
    }
}

impl Config {
    /// Loads and validates the file at `path`, which must be root-owned.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_owned_by(path, Owner::Root)
    }

    /// Like [`Config::load`], with the required owner spelled out (tests).
    pub fn load_owned_by(path: &Path, owner: Owner) -> Result<Self, ConfigError> {
        let text = secure_file::read_trusted(path, owner)?;
        Self::parse(&text).map_err(|problem| ConfigError::Invalid {
            path: path.to_owned(),
            problem,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, Problem> {
        let config: Config = toml::from_str(text).map_err(|e| problem_from_toml(text, &e))?;
        config.validate().map_err(|(key, message)| Problem {
            line: line_of_key(text, &key),
            key: Some(key),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        self.bastiond.validate()?;
        self.metadata_proxy.validate()?;
        self.recording.validate()?;
        Ok(())
    }
}

/// Turns a TOML/serde error into a located [`Problem`]: the line from the
/// error's span, the key from the text at that line.
fn problem_from_toml(text: &str, err: &toml::de::Error) -> Problem {
    let line = err.span().map(|span| line_number(text, span.start));
    let key = err
        .span()
        .and_then(|span| key_at(text, span.start))
        .or_else(|| unknown_field_name(err.message()));
    Problem {
        line,
        key,
        message: err.message().trim().to_owned(),
    }
}

fn line_number(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The `key` of a `key = value` line holding `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[start..end];
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_owned())
}

fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.split_once("unknown field `")?.1;
    Some(rest.split_once('`')?.0.to_owned())
}

/// Finds the line of a dotted key path such as `bastiond.limits.cpus` by
/// following table headers; good enough for the hand-written files ops keep.
pub fn line_of_key(text: &str, path: &str) -> Option<usize> {
    let (table, leaf) = path.rsplit_once('.').unwrap_or(("", path));
    let mut current = String::new();
    let mut table_line = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(header) = line.strip_prefix('[') {
            current = header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .split('.')
                .map(|p| p.trim().trim_matches('"'))
                .collect::<Vec<_>>()
                .join(".");
            if current == path {
                table_line = Some(i + 1);
            }
            continue;
        }
        if current == table
            && let Some((key, _)) = line.split_once('=')
            && key.trim().trim_matches('"') == leaf
        {
            return Some(i + 1);
        }
    }
    table_line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_with_control_characters_is_shown_escaped() {
        let problem = Config::parse("[bastiond]\n\"a\\u001b]0;x\\u0007\" = 1\n").unwrap_err();
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
        let problem = Config::parse(text).unwrap_err();
        assert_eq!(problem.line, Some(3), "{problem}");
        assert_eq!(problem.key.as_deref(), Some("imagee"), "{problem}");
        assert!(problem.to_string().contains("line 3"), "{problem}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_line() {
        let text = "[bastiond]\n\n[bastiond.limits]\npids = \"many\"\n";
        let problem = Config::parse(text).unwrap_err();
        assert_eq!(problem.line, Some(4), "{problem}");
        assert_eq!(problem.key.as_deref(), Some("pids"), "{problem}");
    }

    #[test]
    fn a_bad_value_is_named_with_its_line() {
        let text = "[bastiond]\nimage = \"x\"\n[bastiond.limits]\ncpus = -1.0\n";
        let problem = Config::parse(text).unwrap_err();
        assert_eq!(problem.key.as_deref(), Some("bastiond.limits.cpus"));
        assert_eq!(problem.line, Some(4), "{problem}");
    }

    #[test]
    fn line_of_key_follows_table_headers() {
        let text = "[a]\nx = 1\n[a.b]\nx = 2\n[\"c\"]\ny = 3\n";
        assert_eq!(line_of_key(text, "a.x"), Some(2));
        assert_eq!(line_of_key(text, "a.b.x"), Some(4));
        assert_eq!(line_of_key(text, "c.y"), Some(6));
        assert_eq!(line_of_key(text, "a.b"), Some(3));
        assert_eq!(line_of_key(text, "z.q"), None);
    }
}
