//! `sessions prune --older-than 90d`: deletes old recordings, recording each
//! deletion in the audit log (`recording.pruned`, with the file's SHA-256)
//! so `audit verify` knows the file is gone on purpose. The audit log itself
//! is rotated by logrotate, not pruned here.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::terminal_safe::SafeText;
use super::{ReviewContext, ReviewError};
use crate::audit::verify::file_sha256;
use crate::audit::{AuditEvent, AuditLog, RecordingPruned};
use crate::recording::open_marker::open_markers_dir;
use crate::recording::sessions_dir;

/// `--older-than`, `--user` and `--dry-run`.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Recordings last written longer ago than this go.
    pub older_than: Duration,
    /// Only this user's recordings.
    pub user: Option<String>,
    /// List what would go, delete nothing.
    pub dry_run: bool,
}

/// What `prune` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed: Vec<PathBuf>,
    pub bytes: u64,
    /// Recordings of live sessions, kept whatever their age.
    pub skipped_live: Vec<PathBuf>,
}

/// `bastionctl sessions prune --older-than AGE [--user NAME] [--dry-run]`.
pub fn prune(
    ctx: &ReviewContext,
    opts: PruneOptions,
    out: &mut dyn Write,
) -> Result<PruneReport, ReviewError> {
    let out = &mut SafeText::new(out);
    let cutoff = SystemTime::now()
        .checked_sub(opts.older_than)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let live = open_markers_dir(&ctx.log_dir);
    let audit = if opts.dry_run {
        None
    } else {
        let log = AuditLog::open(&ctx.audit_log)?;
        Some(if ctx.syslog { log.with_syslog() } else { log })
    };
    let by_uid = nix::unistd::getuid().as_raw();
    let mut report = PruneReport::default();
    let root = sessions_dir(&ctx.log_dir);
    let users = match fs::read_dir(&root) {
        Ok(u) => u,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(source) => return Err(ReviewError::Read { path: root, source }),
    };
    let mut candidates = Vec::new();
    for user_dir in users.flatten() {
        let user = user_dir.file_name().to_string_lossy().into_owned();
        if user.starts_with('.') || !user_dir.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if opts.user.as_ref().is_some_and(|only| *only != user) {
            continue;
        }
        let files = fs::read_dir(user_dir.path()).map_err(|source| ReviewError::Read {
            path: user_dir.path(),
            source,
        })?;
        for file in files.flatten() {
            let path = file.path();
            if path.extension().is_none_or(|x| x != "cast") {
                continue;
            }
            let Ok(meta) = file.metadata() else { continue };
            if meta.modified().is_ok_and(|m| m < cutoff) {
                candidates.push((user.clone(), path, meta.len()));
            }
        }
    }
    candidates.sort();
    for (user, path, size) in candidates {
        let session_id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if live.join(format!("{session_id}.json")).exists() {
            report.skipped_live.push(path);
            continue;
        }
        if let Some(audit) = &audit {
            let sha256 = file_sha256(&path).ok().map(|(sha, _)| sha);
            fs::remove_file(&path).map_err(|source| ReviewError::WriteFile {
                path: path.clone(),
                source,
            })?;
            audit.append(&AuditEvent::RecordingPruned(RecordingPruned {
                session_id,
                user,
                path: path.clone(),
                sha256,
                by_uid,
            }))?;
        }
        writeln!(
            out,
            "{} {}",
            if opts.dry_run {
                "would remove"
            } else {
                "removed"
            },
            path.display()
        )?;
        report.bytes += size;
        report.removed.push(path);
    }
    writeln!(
        out,
        "{} {} recording(s), {} bytes{}",
        if opts.dry_run {
            "Would remove"
        } else {
            "Removed"
        },
        report.removed.len(),
        report.bytes,
        if report.skipped_live.is_empty() {
            String::new()
        } else {
            format!("; kept {} of live sessions", report.skipped_live.len())
        }
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Fixture, fixture, text};
    use super::*;
    use crate::audit::verify;

    fn age(path: &std::path::Path, days: u64) {
        let when = SystemTime::now() - Duration::from_secs(days * 86400);
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

    /// The fixture's recordings of alice and bob.
    fn recordings(f: &Fixture) -> (PathBuf, PathBuf) {
        let sessions = f.config.log_dir.join("sessions");
        (
            sessions.join("alice/20261123-alice-1.cast"),
            sessions.join("bob/20261123-bob-1.cast"),
        )
    }

    #[test]
    fn old_recordings_go_and_verify_still_passes() {
        let f = fixture();
        let (alice, bob) = recordings(&f);
        age(&alice, 100);
        let opts = PruneOptions {
            older_than: Duration::from_secs(90 * 86400),
            user: None,
            dry_run: true,
        };
        let mut out = Vec::new();
        let report = prune(&f.ctx, opts.clone(), &mut out).unwrap();
        assert_eq!(report.removed, std::slice::from_ref(&alice));
        assert!(alice.exists(), "a dry run deletes nothing");
        assert!(text(out).contains("would remove"));

        let report = prune(
            &f.ctx,
            PruneOptions {
                dry_run: false,
                ..opts.clone()
            },
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(report.removed, std::slice::from_ref(&alice));
        assert!(!alice.exists());
        assert!(bob.exists());
        let v = verify(&f.config.audit_log).unwrap();
        assert!(v.is_ok(), "a pruned recording is not tampering: {v}");
        assert_eq!(v.recordings_checked, 1);
    }

    #[test]
    fn user_limits_pruning_to_that_users_recordings() {
        let f = fixture();
        let (alice, bob) = recordings(&f);
        age(&alice, 100);
        age(&bob, 100);
        let opts = PruneOptions {
            older_than: Duration::from_secs(90 * 86400),
            user: Some("bob".into()),
            dry_run: false,
        };
        let report = prune(&f.ctx, opts, &mut Vec::new()).unwrap();
        assert_eq!(report.removed, std::slice::from_ref(&bob));
        assert!(alice.exists());
        let v = verify(&f.config.audit_log).unwrap();
        assert!(v.is_ok(), "{v}");
    }

    #[test]
    fn a_live_sessions_recording_is_kept() {
        let f = fixture();
        let live = crate::recording::SessionRecording::begin(
            &f.config,
            &f.audit,
            super::super::testutil::start("live-1", "dave", crate::audit::SessionKind::Shell, None),
            true,
        )
        .unwrap();
        let path = live.start().recording.clone().unwrap();
        drop(live);
        age(&path, 200);
        let opts = PruneOptions {
            older_than: Duration::from_secs(90 * 86400),
            user: None,
            dry_run: false,
        };
        let report = prune(&f.ctx, opts, &mut Vec::new()).unwrap();
        assert_eq!(report.skipped_live, std::slice::from_ref(&path));
        assert!(path.exists());
    }
}
