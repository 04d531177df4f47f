//! Sessions as the audit log tells them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use time::OffsetDateTime;

use super::ReviewError;
use crate::audit::verify::{log_files, read_maybe_gz};
use crate::audit::{AuditEvent, AuditRecord, SessionEnd, SessionStart};

/// One session: its start, its end (unless still live or never closed) and
/// the credentials its container received while it was live.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub session_id: String,
    pub host: Option<String>,
    #[serde(with = "crate::audit::timestamp")]
    pub started: OffsetDateTime,
    #[serde(with = "crate::audit::timestamp::option")]
    pub ended: Option<OffsetDateTime>,
    pub start: Option<SessionStart>,
    pub end: Option<SessionEnd>,
    /// `credentials.issued` and `sts.assume_role` records of the session's
    /// container between its start and end.
    pub credentials: Vec<AuditRecord>,
}

impl SessionInfo {
    pub fn user(&self) -> &str {
        self.start
            .as_ref()
            .map(|s| s.user.as_str())
            .or(self.end.as_ref().map(|e| e.user.as_str()))
            .unwrap_or("?")
    }

    pub fn container(&self) -> &str {
        self.start
            .as_ref()
            .map(|s| s.container.as_str())
            .or(self.end.as_ref().map(|e| e.container.as_str()))
            .unwrap_or("?")
    }

    /// The recording file, if the session was recorded.
    pub fn recording(&self) -> Option<&Path> {
        self.end
            .as_ref()
            .and_then(|e| e.recording.as_ref().map(|r| r.path.as_path()))
            .or(self.start.as_ref().and_then(|s| s.recording.as_deref()))
    }

    /// Ended with a non-zero exit code or a signal.
    pub fn exit_nonzero(&self) -> bool {
        self.end
            .as_ref()
            .is_some_and(|e| e.exit_code.is_some_and(|c| c != 0) || e.signal.is_some())
    }
}

/// All sessions of the audit log (live file and rotated ones).
#[derive(Debug, Default)]
pub struct SessionIndex {
    pub sessions: Vec<SessionInfo>,
    /// Files read.
    pub files: Vec<PathBuf>,
}

impl SessionIndex {
    /// Reads the audit log at `audit_log` and its rotated siblings. Lines
    /// that do not parse are skipped here (`audit verify` reports them).
    pub fn load(audit_log: &Path) -> Result<Self, ReviewError> {
        let files = log_files(audit_log)?;
        let mut records = Vec::new();
        for file in &files {
            let bytes = read_maybe_gz(file).map_err(|source| ReviewError::Read {
                path: file.clone(),
                source,
            })?;
            records.extend(
                bytes
                    .split(|&b| b == b'\n')
                    .filter_map(|l| serde_json::from_slice::<AuditRecord>(l).ok()),
            );
        }
        records.sort_by_key(|r| r.seq);
        Ok(Self::from_records(records, files))
    }

    pub fn from_records(records: Vec<AuditRecord>, files: Vec<PathBuf>) -> Self {
        let mut by_id: BTreeMap<String, SessionInfo> = BTreeMap::new();
        let mut creds = Vec::new();
        let blank = |id: &str, ts| SessionInfo {
            session_id: id.to_owned(),
            host: None,
            started: ts,
            ended: None,
            start: None,
            end: None,
            credentials: Vec::new(),
        };
        for rec in records {
            match &rec.event {
                AuditEvent::SessionStart(s) => {
                    let info = by_id
                        .entry(s.session_id.clone())
                        .or_insert_with(|| blank(&s.session_id, rec.ts));
                    info.started = rec.ts;
                    info.host = Some(rec.host.clone());
                    info.start = Some(s.clone());
                }
                AuditEvent::SessionEnd(e) => {
                    let info = by_id
                        .entry(e.session_id.clone())
                        .or_insert_with(|| blank(&e.session_id, e.started));
                    info.ended = Some(rec.ts);
                    info.end = Some(e.clone());
                }
                AuditEvent::CredentialsIssued(_) | AuditEvent::StsAssumeRole(_) => creds.push(rec),
                _ => {}
            }
        }
        let mut sessions: Vec<SessionInfo> = by_id.into_values().collect();
        for s in &mut sessions {
            let container = s.container().to_owned();
            let (from, to) = (s.started, s.ended);
            s.credentials = creds
                .iter()
                .filter(|r| {
                    let c = match &r.event {
                        AuditEvent::CredentialsIssued(c) => &c.container,
                        AuditEvent::StsAssumeRole(c) => &c.container,
                        _ => return false,
                    };
                    *c == container && r.ts >= from && to.is_none_or(|to| r.ts <= to)
                })
                .cloned()
                .collect();
        }
        sessions.sort_by(|a, b| (a.started, &a.session_id).cmp(&(b.started, &b.session_id)));
        Self { sessions, files }
    }

    /// The session whose id is `id`, or the only one starting with it.
    pub fn find(&self, id: &str) -> Result<&SessionInfo, ReviewError> {
        if let Some(s) = self.sessions.iter().find(|s| s.session_id == id) {
            return Ok(s);
        }
        let matches: Vec<_> = self
            .sessions
            .iter()
            .filter(|s| s.session_id.starts_with(id))
            .collect();
        match matches.len() {
            1 => Ok(matches[0]),
            0 => Err(ReviewError::NoSuchSession(id.to_owned())),
            count => Err(ReviewError::AmbiguousSession {
                id: id.to_owned(),
                count,
            }),
        }
    }
}
