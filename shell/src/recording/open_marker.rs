//! Closing what a crash left open, and session ends the audit log could
//! not take yet.
//!
//! An open session is recognised by its *open marker*,
//! `<log_dir>/sessions/.open/<session-id>.json` (0600, in a 0700 directory),
//! written before `session.start` and removed after `session.end`. It holds
//! the start event, so [`recover_interrupted`] can write a complete
//! `session.end` (`ended_by = "interrupted"`) without scanning the audit
//! log's history.
//!
//! When the audit log cannot take the `session.end` (a full or immutable
//! file), the whole end — exit code, bytes, the recording's hash — is kept
//! in the marker instead, and [`retry_pending_ends`] (bastiond runs it every
//! few seconds) writes it once the log takes writes again, with the time
//! the session really ended. Nothing of the end is lost, and the session
//! is not left open until bastiond restarts.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::cast::CastReader;
use super::session::SessionLogError;
use super::sessions_dir;
use crate::audit::{AuditEvent, AuditLog, EndedBy, RecordingSummary, SessionEnd, SessionStart};

/// The content of an open marker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct OpenMarker {
    #[serde(with = "crate::audit::timestamp")]
    pub(super) started: OffsetDateTime,
    pub(super) start: SessionStart,
    /// The session's end, when it ended but the audit log could not take
    /// it yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) ended: Option<PendingEnd>,
}

/// A session end waiting for the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PendingEnd {
    #[serde(with = "crate::audit::timestamp")]
    pub(super) at: OffsetDateTime,
    pub(super) end: SessionEnd,
}

/// `<log_dir>/sessions/.open`.
pub fn open_markers_dir(log_dir: &Path) -> PathBuf {
    sessions_dir(log_dir).join(".open")
}

/// Writes a new marker at `path` (0600; never over an existing file).
pub(super) fn write_marker(path: &Path, marker: &OpenMarker) -> Result<(), SessionLogError> {
    let err = |source| SessionLogError::Marker {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    let json = serde_json::to_vec(marker).map_err(|e| err(e.into()))?;
    file.write_all(&json).map_err(err)?;
    Ok(())
}

/// Replaces the marker at `path` whole (a new file renamed over it).
pub(super) fn replace_marker(path: &Path, marker: &OpenMarker) -> Result<(), SessionLogError> {
    let tmp = path.with_extension("json.new");
    let _ = fs::remove_file(&tmp);
    write_marker(&tmp, marker)?;
    fs::rename(&tmp, path).map_err(|source| SessionLogError::Marker {
        path: path.to_owned(),
        source,
    })
}

/// The markers of `log_dir`, each with its content (`None`: unreadable).
fn read_markers(log_dir: &Path) -> Result<Vec<(PathBuf, Option<OpenMarker>)>, SessionLogError> {
    let dir = open_markers_dir(log_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(SessionLogError::ReadMarkers { path: dir, source }),
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|p| {
            let marker = fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            (p, marker)
        })
        .collect())
}

/// Writes the ends of sessions the audit log could not take when they
/// ended (kept in their markers), and removes those markers. Live
/// sessions' markers are left alone. Returns the ends written; stops at
/// the first that still cannot be written.
pub fn retry_pending_ends(
    log_dir: &Path,
    audit: &AuditLog,
) -> Result<Vec<SessionEnd>, SessionLogError> {
    let mut written = Vec::new();
    for (path, marker) in read_markers(log_dir)? {
        let Some(pending) = marker.and_then(|m| m.ended) else {
            continue;
        };
        audit.append_at(&AuditEvent::SessionEnd(pending.end.clone()), pending.at)?;
        let _ = fs::remove_file(&path);
        tracing::info!(session = %pending.end.session_id, "wrote a session end the audit log could not take before");
        written.push(pending.end);
    }
    Ok(written)
}

/// At bastiond's start-up: closes every session a crash left open. Each
/// gets its recording repaired (a half-written last line cut off, a marker
/// event appended) and a `session.end` with `ended_by = "interrupted"`,
/// `duration_secs` up to its last recorded event, and the bytes counted from
/// the recording (a lower bound; 0 when it was not recorded). Sessions whose
/// `session.end` is already in the live audit log (a crash between writing it
/// and removing the marker) only lose their marker.
pub fn recover_interrupted(
    log_dir: &Path,
    audit: &AuditLog,
) -> Result<Vec<SessionEnd>, SessionLogError> {
    let markers = read_markers(log_dir)?;
    if markers.is_empty() {
        return Ok(Vec::new());
    }
    let ended = ended_sessions(audit.path());
    let mut closed = Vec::new();
    for (path, marker) in markers {
        let Some(marker) = marker else {
            tracing::error!(marker = %path.display(), "unreadable open-session marker; set aside as .bad");
            let _ = fs::rename(&path, path.with_extension("bad"));
            continue;
        };
        if ended.contains(&marker.start.session_id) {
            let _ = fs::remove_file(&path);
            continue;
        }
        // It ended, but the audit log could not take its end: that end,
        // as it was.
        if let Some(pending) = marker.ended {
            audit.append_at(&AuditEvent::SessionEnd(pending.end.clone()), pending.at)?;
            let _ = fs::remove_file(&path);
            closed.push(pending.end);
            continue;
        }
        let mut end = SessionEnd {
            session_id: marker.start.session_id.clone(),
            user: marker.start.user.clone(),
            container: marker.start.container.clone(),
            started: marker.started,
            duration_secs: 0.0,
            exit_code: None,
            signal: None,
            bytes_in: 0,
            bytes_out: 0,
            ended_by: EndedBy::Interrupted,
            recording: None,
            error: Some(
                "bastiond stopped while the session was live; closed at its next start-up".into(),
            ),
        };
        if let Some(cast) = &marker.start.recording {
            match close_cast(cast) {
                Ok(c) => {
                    end.duration_secs = c.last_time;
                    end.bytes_in = c.bytes_in;
                    end.bytes_out = c.bytes_out;
                    end.recording = Some(RecordingSummary {
                        path: cast.clone(),
                        sha256: c.sha256,
                        size: c.size,
                        truncated: c.truncated,
                        error: None,
                    });
                }
                Err(e) => {
                    tracing::error!(recording = %cast.display(), error = %e, "cannot close an interrupted recording");
                    end.error = Some(format!(
                        "bastiond stopped while the session was live; its recording could not be closed: {e}"
                    ));
                }
            }
        }
        audit.append(&AuditEvent::SessionEnd(end.clone()))?;
        let _ = fs::remove_file(&path);
        closed.push(end);
    }
    Ok(closed)
}

/// Session ids with a `session.end` in the live audit log.
fn ended_sessions(audit_path: &Path) -> Vec<String> {
    #[derive(Deserialize)]
    struct Line {
        event: String,
        session_id: Option<String>,
    }
    let Ok(text) = fs::read(audit_path) else {
        return Vec::new();
    };
    text.split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice::<Line>(l).ok())
        .filter(|l| l.event == "session.end")
        .filter_map(|l| l.session_id)
        .collect()
}

struct ClosedCast {
    last_time: f64,
    bytes_in: u64,
    bytes_out: u64,
    truncated: bool,
    sha256: String,
    size: u64,
}

fn close_cast(path: &Path) -> std::io::Result<ClosedCast> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    // Cut a half-written last line.
    let len = file.seek(SeekFrom::End(0))?;
    let back = len.min(1 << 20);
    file.seek(SeekFrom::Start(len - back))?;
    let mut tail = Vec::with_capacity(back as usize);
    Read::by_ref(&mut file).take(back).read_to_end(&mut tail)?;
    if tail.last().is_some_and(|&b| b != b'\n')
        && let Some(i) = tail.iter().rposition(|&b| b == b'\n')
    {
        file.set_len(len - back + i as u64 + 1)?;
    }
    let (mut last_time, mut bytes_in, mut bytes_out, mut truncated) = (0.0f64, 0u64, 0u64, false);
    let reader = CastReader::open(path).map_err(std::io::Error::other)?;
    for event in reader {
        let Ok(event) = event else { break };
        last_time = last_time.max(event.time);
        match event.code.as_str() {
            "o" => bytes_out += event.data.len() as u64,
            "i" => bytes_in += event.data.len() as u64,
            "m" if event.data.starts_with("bastion: recording stopped") => truncated = true,
            _ => {}
        }
    }
    let label =
        "bastion: session interrupted (bastiond stopped); recording closed at its next start-up";
    let line = format!(
        "[{last_time:.6}, \"m\", {}]\n",
        serde_json::to_string(label).map_err(std::io::Error::other)?
    );
    file.seek(SeekFrom::End(0))?;
    file.write_all(line.as_bytes())?;
    file.sync_data()?;
    let (sha256, size) = crate::audit::verify::file_sha256(path)?;
    Ok(ClosedCast {
        last_time,
        bytes_in,
        bytes_out,
        truncated,
        sha256,
        size,
    })
}
