//! The security reviewer's tools behind `bastionctl sessions …` and
//! `bastionctl audit verify`. Each command is one function taking a
//! [`ReviewContext`], its options and where to write; `bastionctl`'s main
//! only parses arguments and calls them.
//!
//! Sessions come from the audit log (live and rotated files): a session is
//! its `session.start`, its `session.end` and the credential hand-outs of
//! its container while it was live. Recordings come from
//! `<log_dir>/sessions/<user>/<id>.cast`.

use bastion_core::escape;
mod export;
mod index;
mod list;
mod play;
mod prune;
mod search;
pub mod string_sequences;
pub mod terminal_safe;

pub use export::{StandardOutput, export_html, render_html};
pub use index::{SessionIndex, SessionInfo};
pub use list::{ListOptions, OutputFormat, list, show};
pub use play::{PlayOptions, play, play_events};
pub use prune::{PruneOptions, PruneReport, prune};
pub use search::{SearchMatch, SearchOptions, search};
use terminal_safe::SafeText;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;

use crate::audit::AuditError;
use crate::audit::verify::VerifyError;
use crate::config::RecordingConfig;
use crate::recording::cast::CastError;

/// Where the logs are (from `[recording]`).
#[derive(Debug, Clone)]
pub struct ReviewContext {
    pub log_dir: PathBuf,
    pub audit_log: PathBuf,
    /// Send `prune`'s audit events to syslog too.
    pub syslog: bool,
}

impl ReviewContext {
    pub fn from_config(config: &RecordingConfig) -> Self {
        Self {
            log_dir: config.log_dir.clone(),
            audit_log: config.audit_log.clone(),
            syslog: config.syslog,
        }
    }
}

/// Why a review command failed.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("cannot read the audit log: {0}")]
    Audit(#[from] VerifyError),
    #[error("cannot write to the audit log: {0}")]
    AuditWrite(#[from] AuditError),
    #[error(transparent)]
    Cast(#[from] CastError),
    #[error("no session {0} in the audit log (see `bastionctl sessions list`)")]
    NoSuchSession(String),
    #[error("session id {id} is ambiguous: it starts {count} sessions; give more of it")]
    AmbiguousSession { id: String, count: usize },
    #[error("session {0} has no recording (file transfers are not recorded)")]
    NotRecorded(String),
    #[error("invalid pattern {pattern:?}: {source}")]
    BadPattern {
        pattern: String,
        #[source]
        source: regex::Error,
    },
    #[error(
        "invalid time {0:?}: use RFC 3339 (2026-11-23T08:00:00Z), a date (2026-11-23) or an age (2h, 7d)"
    )]
    BadTime(String),
    #[error("invalid age {0:?}: use e.g. 90d, 12h, 2weeks")]
    BadAge(String),
    #[error("invalid speed {0}: must be a positive number")]
    BadSpeed(f64),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    #[error(
        "not writing an HTML page to a terminal: redirect it (`--html - > page.html`) or name a file"
    )]
    PageToTerminal,
}

impl From<std::io::Error> for ReviewError {
    fn from(e: std::io::Error) -> Self {
        ReviewError::Output(e)
    }
}

/// Parses `--since`/`--until`: RFC 3339, a date (midnight UTC), or an age
/// meaning that long ago (`2h`, `7d`). Usable as a clap `value_parser`.
pub fn parse_time(text: &str) -> Result<OffsetDateTime, ReviewError> {
    parse_time_at(text, OffsetDateTime::now_utc())
}

fn parse_time_at(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, ReviewError> {
    let text = text.trim();
    if let Ok(t) = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    let date_format = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(text, date_format) {
        return Ok(d.midnight().assume_utc());
    }
    if let Ok(age) = humantime::parse_duration(text) {
        return Ok(now - age);
    }
    Err(ReviewError::BadTime(text.to_owned()))
}

/// Parses `--older-than`: `90d`, `12h`, `2weeks`. Usable as a clap
/// `value_parser`.
pub fn parse_age(text: &str) -> Result<Duration, ReviewError> {
    humantime::parse_duration(text.trim()).map_err(|_| ReviewError::BadAge(text.to_owned()))
}

/// `bastionctl audit verify [PATH]`: checks the chain (live and rotated
/// files) and every recording against its end event, prints the report and
/// returns whether all is intact (exit 0) or not (exit 1).
pub fn verify_audit(
    ctx: &ReviewContext,
    path: Option<&Path>,
    out: &mut dyn Write,
) -> Result<bool, ReviewError> {
    let report = crate::audit::verify(path.unwrap_or(&ctx.audit_log))?;
    writeln!(SafeText::new(out), "{report}")?;
    Ok(report.is_ok())
}

/// `12.5` → `0:00:12.5`; `3725` → `1:02:05.0`.
pub(crate) fn format_offset(secs: f64) -> String {
    let tenths = (secs.max(0.0) * 10.0).round() as u64;
    let (h, m, s, t) = (
        tenths / 36000,
        tenths / 600 % 60,
        tenths / 10 % 60,
        tenths % 10,
    );
    format!("{h}:{m:02}:{s:02}.{t}")
}

pub(crate) fn format_ts(t: OffsetDateTime) -> String {
    t.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second]"
    ))
    .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn times_parse_in_three_forms() {
        let now = datetime!(2026-11-23 08:00:00 UTC);
        assert_eq!(
            parse_time_at("2026-11-20T10:00:00Z", now).unwrap(),
            datetime!(2026-11-20 10:00:00 UTC)
        );
        assert_eq!(
            parse_time_at("2026-11-20", now).unwrap(),
            datetime!(2026-11-20 00:00:00 UTC)
        );
        assert_eq!(
            parse_time_at("2h", now).unwrap(),
            datetime!(2026-11-23 06:00:00 UTC)
        );
        assert!(matches!(
            parse_time_at("yesterday-ish", now),
            Err(ReviewError::BadTime(_))
        ));
    }

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("90d").unwrap(), Duration::from_secs(90 * 86400));
        assert!(parse_age("soon").is_err());
    }

    #[test]
    fn verify_audit_reports_and_returns_the_verdict() {
        let f = testutil::fixture();
        let mut out = Vec::new();
        assert!(verify_audit(&f.ctx, None, &mut out).unwrap());
        assert!(testutil::text(out).starts_with("OK: 8 lines"));
        let text = std::fs::read_to_string(&f.ctx.audit_log).unwrap();
        std::fs::write(&f.ctx.audit_log, text.replacen("alice", "mallory", 1)).unwrap();
        let mut out = Vec::new();
        assert!(!verify_audit(&f.ctx, None, &mut out).unwrap());
        let report = testutil::text(out);
        assert!(report.contains("CHAIN BROKEN"), "{report}");
        assert!(report.contains("audit.jsonl:1: edited"), "{report}");
    }

    #[test]
    fn offsets_format() {
        assert_eq!(format_offset(12.54), "0:00:12.5");
        assert_eq!(format_offset(3725.0), "1:02:05.0");
    }
}
