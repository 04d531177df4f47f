//! A session's records from start to end: the `session.start` event, the
//! recording, the `session.end` event. What a crash leaves open is closed
//! by [`super::open_marker`].

use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use time::OffsetDateTime;

use super::open_marker::{OpenMarker, PendingEnd, open_markers_dir, replace_marker, write_marker};
use super::{
    BastionHeader, CastEnv, CastHeader, Recorder, RecorderOptions, RecordingError, cast_path,
    check_name, ensure_private_dir,
};
use crate::audit::{
    AuditError, AuditEvent, AuditLog, EndedBy, RecordingSummary, SessionEnd, SessionStart,
};
use crate::config::RecordingConfig;

/// Why a session's records could not be started or ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionLogError {
    #[error(transparent)]
    Recording(#[from] RecordingError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(
        "cannot write the open-session marker {path}: {source} (is the log directory full or read-only?)"
    )]
    Marker {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the open-session markers in {path}: {source}")]
    ReadMarkers {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the end of session {session_id} could not be written to the audit log ({source}); it is kept in {marker} and written when the log takes writes again"
    )]
    EndPending {
        session_id: String,
        marker: PathBuf,
        #[source]
        source: AuditError,
    },
}

/// How a session ended, as bastiond saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOutcome {
    pub ended_by: EndedBy,
    pub exit_code: Option<i32>,
    /// Signal name without `SIG` (`"KILL"`), when one ended the process.
    pub signal: Option<String>,
    /// What failed, for `EndedBy::Error`.
    pub error: Option<String>,
}

/// One live session's records. Call [`SessionRecording::output`] /
/// [`SessionRecording::input`] from the pump with every chunk, and
/// [`SessionRecording::end`] exactly once, however the session ends.
#[derive(Debug)]
pub struct SessionRecording {
    start: SessionStart,
    started: OffsetDateTime,
    clock: Instant,
    recorder: Option<Recorder>,
    marker: PathBuf,
    bytes_in: u64,
    bytes_out: u64,
}

impl SessionRecording {
    /// Starts a session's records: the recording (when `record`; file
    /// transfers pass `false` and are only counted), the open marker, then
    /// the `session.start` event. `start.recording` and `start.record_input`
    /// are filled in here. Any failure undoes what was done and is returned,
    /// so bastiond can refuse the login (or, with `on_log_failure =
    /// "allow"`, go on unrecorded with a loud warning).
    pub fn begin(
        config: &RecordingConfig,
        audit: &AuditLog,
        mut start: SessionStart,
        record: bool,
    ) -> Result<Self, SessionLogError> {
        check_name("session id", &start.session_id)?;
        let started = crate::audit::timestamp::now();
        let clock = Instant::now();
        let markers = open_markers_dir(&config.log_dir);
        ensure_private_dir(&markers)?;
        let marker = markers.join(format!("{}.json", start.session_id));

        let recorder = if record {
            let path = cast_path(&config.log_dir, &start.user, &start.session_id)?;
            // The audit trail's reserve (the user's budget is bastiond's:
            // budget.rs, which sets max_recording_bytes to what is left).
            super::check_reserve(&config.log_dir, config.reserve.as_u64())?;
            let opts = RecorderOptions {
                record_input: config.record_input,
                max_bytes: config.max_recording_bytes.as_u64(),
                reserve: config.reserve.as_u64(),
            };
            let rec = Recorder::create(&path, &cast_header(&start, started), opts)?;
            start.recording = Some(path);
            start.record_input = config.record_input;
            Some(rec)
        } else {
            start.recording = None;
            start.record_input = false;
            None
        };
        let undo = |recorder: Option<Recorder>| {
            if let Some(rec) = recorder {
                let path = rec.path().to_owned();
                drop(rec);
                let _ = fs::remove_file(path);
            }
        };
        if let Err(e) = write_marker(
            &marker,
            &OpenMarker {
                started,
                start: start.clone(),
                ended: None,
            },
        ) {
            undo(recorder);
            return Err(e);
        }
        if let Err(e) = audit.append_at(&AuditEvent::SessionStart(start.clone()), started) {
            undo(recorder);
            let _ = fs::remove_file(&marker);
            return Err(e.into());
        }
        Ok(Self {
            start,
            started,
            clock,
            recorder,
            marker,
            bytes_in: 0,
            bytes_out: 0,
        })
    }

    /// [`SessionRecording::begin`] with `[recording] on_log_failure`
    /// applied. `refuse` (the default): any failure is returned, and the
    /// login must be refused with its message. `allow`: failures are
    /// logged loudly. If the audit log still works, the session goes on with
    /// a `session.start` but unrecorded; if not, it goes on with no records
    /// at all (`Ok(None)`).
    pub fn begin_with_policy(
        config: &RecordingConfig,
        audit: &AuditLog,
        start: SessionStart,
        record: bool,
    ) -> Result<Option<Self>, SessionLogError> {
        let err = match Self::begin(config, audit, start.clone(), record) {
            Ok(s) => return Ok(Some(s)),
            Err(e) => e,
        };
        if config.on_log_failure == super::OnLogFailure::Refuse {
            return Err(err);
        }
        tracing::error!(
            session = %start.session_id,
            user = %start.user,
            error = %err,
            "SESSION LOGS CANNOT BE WRITTEN; letting the user in anyway because on_log_failure = \"allow\""
        );
        if record {
            let mut unrecorded = start.clone();
            unrecorded.unrecorded_reason = Some(err.to_string());
            if let Ok(s) = Self::begin(config, audit, unrecorded, false) {
                return Ok(Some(s));
            }
        }
        tracing::error!(
            session = %start.session_id,
            user = %start.user,
            "SESSION IS NEITHER RECORDED NOR AUDITED (on_log_failure = \"allow\")"
        );
        Ok(None)
    }

    /// The start event as written.
    pub fn start(&self) -> &SessionStart {
        &self.start
    }

    /// Output from the session to the client. Returns whether it is still
    /// recorded (false once the recording stopped: its cap, or a write
    /// error; always true for a session that is not recorded at all).
    pub fn output(&mut self, data: &[u8]) -> bool {
        match &mut self.recorder {
            Some(rec) => {
                rec.output(data);
                !rec.stopped()
            }
            None => {
                self.bytes_out += data.len() as u64;
                true
            }
        }
    }

    /// Why the recording stopped, for the user and the record.
    pub fn stop_reason(&self) -> Option<String> {
        let rec = self.recorder.as_ref().filter(|r| r.stopped())?;
        Some(match rec.error() {
            Some(e) => e.to_string(),
            None => "it reached its size limit (max_recording_bytes, or what the user's recordings budget left)".to_owned(),
        })
    }

    /// Input from the client to the session.
    pub fn input(&mut self, data: &[u8]) {
        match &mut self.recorder {
            Some(rec) => rec.input(data),
            None => self.bytes_in += data.len() as u64,
        }
    }

    pub fn resize(&mut self, cols: u16, rows: u16) {
        if let Some(rec) = &mut self.recorder {
            rec.resize(cols, rows);
        }
    }

    pub fn marker(&mut self, label: &str) {
        if let Some(rec) = &mut self.recorder {
            rec.marker(label);
        }
    }

    /// Writes buffered recording events out (call when the session idles).
    pub fn flush(&mut self) {
        if let Some(rec) = &mut self.recorder {
            rec.flush();
        }
    }

    pub fn bytes_in(&self) -> u64 {
        self.recorder
            .as_ref()
            .map_or(self.bytes_in, Recorder::bytes_in)
    }

    pub fn bytes_out(&self) -> u64 {
        self.recorder
            .as_ref()
            .map_or(self.bytes_out, Recorder::bytes_out)
    }

    /// A write error that stopped the recording mid-session, if any.
    pub fn recording_error(&self) -> Option<&RecordingError> {
        self.recorder.as_ref().and_then(Recorder::error)
    }

    /// Closes the recording and writes `session.end` (with the recording's
    /// SHA-256). On success the open marker is removed; if the audit write
    /// fails the end goes into the marker ([`SessionLogError::EndPending`])
    /// for [`retry_pending_ends`] (or, failing that too, the next start-up
    /// closes the session as interrupted).
    pub fn end(
        self,
        audit: &AuditLog,
        outcome: SessionOutcome,
    ) -> Result<SessionEnd, SessionLogError> {
        let duration_secs = self.clock.elapsed().as_secs_f64();
        let (recording, bytes_in, bytes_out) = match self.recorder {
            Some(rec) => {
                let out = rec.finish();
                let summary = RecordingSummary {
                    path: out.path,
                    sha256: out.sha256,
                    size: out.size,
                    truncated: out.truncated,
                    error: out.error,
                };
                (Some(summary), out.bytes_in, out.bytes_out)
            }
            None => (None, self.bytes_in, self.bytes_out),
        };
        let end = SessionEnd {
            session_id: self.start.session_id.clone(),
            user: self.start.user.clone(),
            container: self.start.container.clone(),
            started: self.started,
            duration_secs,
            exit_code: outcome.exit_code,
            signal: outcome.signal,
            bytes_in,
            bytes_out,
            ended_by: outcome.ended_by,
            recording,
            error: outcome.error,
        };
        let at = crate::audit::timestamp::now();
        if let Err(source) = audit.append_at(&AuditEvent::SessionEnd(end.clone()), at) {
            let pending = OpenMarker {
                started: self.started,
                start: self.start.clone(),
                ended: Some(PendingEnd {
                    at,
                    end: end.clone(),
                }),
            };
            if let Err(e) = replace_marker(&self.marker, &pending) {
                tracing::error!(session = %end.session_id, error = %e, "cannot keep a session's end in its marker either; it will be closed as interrupted");
            }
            return Err(SessionLogError::EndPending {
                session_id: end.session_id,
                marker: self.marker,
                source,
            });
        }
        let _ = fs::remove_file(&self.marker);
        Ok(end)
    }
}

/// The header of a session's recording.
pub fn cast_header(start: &SessionStart, started: OffsetDateTime) -> CastHeader {
    CastHeader {
        version: 2,
        width: start.cols.unwrap_or(80),
        height: start.rows.unwrap_or(24),
        timestamp: started.unix_timestamp(),
        command: Some(
            start
                .command
                .clone()
                .or_else(|| start.shell.clone())
                .unwrap_or_else(|| "login shell".to_owned()),
        ),
        title: Some(format!("{} in {}", start.user, start.container)),
        idle_time_limit: None,
        env: CastEnv {
            term: start.term.clone(),
            shell: start.shell.clone(),
        },
        bastion: Some(BastionHeader {
            session_id: start.session_id.clone(),
            user: start.user.clone(),
            uid: start.uid,
            container: start.container.clone(),
            image: Some(start.image.clone()),
            image_digest: start.image_digest.clone(),
            role: start.role.clone(),
            remote_addr: start.remote_addr.clone(),
            remote_port: start.remote_port,
            host: Some(crate::audit::hostname()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;
    use std::path::Path;

    use crate::audit::{SessionKind, verify};
    use crate::recording::cast::read_cast;
    use crate::recording::open_marker::{recover_interrupted, retry_pending_ends};
    use crate::recording::sessions_dir;

    fn config(dir: &Path) -> RecordingConfig {
        RecordingConfig {
            log_dir: dir.join("log"),
            audit_log: dir.join("log/audit.jsonl"),
            // Not this host's free space: tests/full_log_disk.rs checks it.
            reserve: bytesize::ByteSize::b(0),
            ..RecordingConfig::default()
        }
    }

    pub(crate) fn start(id: &str, user: &str) -> SessionStart {
        SessionStart {
            cols: Some(100),
            rows: Some(30),
            ..bastion_core::audit::fixtures::session_start(id, user, SessionKind::Shell, None)
        }
    }

    fn exit(code: i32) -> SessionOutcome {
        SessionOutcome {
            ended_by: EndedBy::Exit,
            exit_code: Some(code),
            signal: None,
            error: None,
        }
    }

    fn events(audit: &Path) -> Vec<crate::audit::AuditRecord> {
        fs::read_to_string(audit)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn a_session_writes_start_recording_and_end_with_the_recordings_hash() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let audit = AuditLog::open(&cfg.audit_log).unwrap();
        let mut s = SessionRecording::begin(&cfg, &audit, start("s1", "alice"), true).unwrap();
        assert!(open_markers_dir(&cfg.log_dir).join("s1.json").exists());
        s.output(b"$ echo hi\r\nhi\r\n");
        s.input(b"echo hi\r");
        s.resize(120, 40);
        let end = s.end(&audit, exit(7)).unwrap();
        assert_eq!(end.exit_code, Some(7));
        assert_eq!(end.bytes_out, 15);
        assert_eq!(end.bytes_in, 8);
        let rec = end.recording.clone().unwrap();
        assert_eq!(rec.path, cfg.log_dir.join("sessions/alice/s1.cast"));
        let recs = events(&cfg.audit_log);
        assert_eq!(recs.len(), 2);
        match &recs[0].event {
            AuditEvent::SessionStart(st) => {
                assert_eq!(st.recording.as_deref(), Some(rec.path.as_path()));
                assert!(!st.record_input);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(recs[1].event, AuditEvent::SessionEnd(end));
        assert!(!open_markers_dir(&cfg.log_dir).join("s1.json").exists());
        let (header, _) = read_cast(&rec.path).unwrap();
        assert_eq!((header.width, header.height), (100, 30));
        assert_eq!(header.title.as_deref(), Some("alice in bastion-alice"));
        assert_eq!(header.env.shell.as_deref(), Some("/bin/bash"));
        let report = verify(&cfg.audit_log).unwrap();
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.recordings_checked, 1);
    }

    #[test]
    fn a_file_transfer_is_counted_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let audit = AuditLog::open(&cfg.audit_log).unwrap();
        let mut st = start("t1", "bob");
        st.kind = SessionKind::FileTransfer;
        st.command = Some("/usr/lib/openssh/sftp-server".into());
        let mut s = SessionRecording::begin(&cfg, &audit, st, false).unwrap();
        s.input(&[0u8; 4096]);
        s.output(&[1u8; 100]);
        let end = s.end(&audit, exit(0)).unwrap();
        assert_eq!((end.bytes_in, end.bytes_out), (4096, 100));
        assert!(end.recording.is_none());
        assert!(!cfg.log_dir.join("sessions/bob").exists());
    }

    #[test]
    fn an_unwritable_log_dir_fails_the_start_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let audit = AuditLog::open(&cfg.audit_log).unwrap();
        // The recordings directory is a file: nothing can be created there.
        fs::create_dir_all(sessions_dir(&cfg.log_dir)).unwrap();
        fs::write(sessions_dir(&cfg.log_dir).join("alice"), "").unwrap();
        let err = SessionRecording::begin(&cfg, &audit, start("s1", "alice"), true).unwrap_err();
        assert!(err.to_string().contains("sessions/alice"), "{err}");
        assert!(fs::read_to_string(&cfg.audit_log).unwrap().is_empty());
        assert!(!open_markers_dir(&cfg.log_dir).join("s1.json").exists());
    }

    #[test]
    fn on_log_failure_allow_goes_on_unrecorded_refuse_fails() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        let audit = AuditLog::open(&cfg.audit_log).unwrap();
        fs::create_dir_all(sessions_dir(&cfg.log_dir)).unwrap();
        fs::write(sessions_dir(&cfg.log_dir).join("alice"), "").unwrap();
        assert!(
            SessionRecording::begin_with_policy(&cfg, &audit, start("s1", "alice"), true).is_err()
        );
        cfg.on_log_failure = crate::recording::OnLogFailure::Allow;
        let s = SessionRecording::begin_with_policy(&cfg, &audit, start("s2", "alice"), true)
            .unwrap()
            .expect("audited, unrecorded");
        assert!(s.start().recording.is_none());
        assert!(
            s.start()
                .unrecorded_reason
                .as_deref()
                .is_some_and(|r| r.contains("sessions/alice")),
            "the audit trail says why it is not recorded"
        );
        s.end(&audit, exit(0)).unwrap();
        // Neither the recordings nor the audit log can be written.
        let broken = AuditLog::new(&dir.path().join("missing/dir/audit.jsonl"));
        assert!(
            SessionRecording::begin_with_policy(&cfg, &broken, start("s3", "alice"), true)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_crashed_session_is_closed_as_interrupted_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let audit = AuditLog::open(&cfg.audit_log).unwrap();
        let mut s = SessionRecording::begin(&cfg, &audit, start("s1", "alice"), true).unwrap();
        s.output(b"working...\r\n");
        let path = s.start().recording.clone().unwrap();
        // Wait until the recorder's thread has written it all.
        s.recorder.as_mut().unwrap().sha256_so_far();
        // A crash: the process vanishes mid-line, nothing is finished.
        std::mem::forget(s);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"[1.5, \"o\", \"half").unwrap();
        let mut other = SessionRecording::begin(&cfg, &audit, start("s2", "bob"), false).unwrap();
        other.input(b"x");
        std::mem::forget(other);

        let closed = recover_interrupted(&cfg.log_dir, &audit).unwrap();
        assert_eq!(closed.len(), 2);
        let alice = &closed[0];
        assert_eq!(alice.ended_by, EndedBy::Interrupted);
        assert_eq!(alice.bytes_out, 12);
        let (_, evs) = read_cast(&path).unwrap();
        assert!(evs.last().unwrap().data.contains("interrupted"));
        assert!(
            fs::read_dir(open_markers_dir(&cfg.log_dir))
                .unwrap()
                .next()
                .is_none()
        );
        let report = verify(&cfg.audit_log).unwrap();
        assert!(report.is_ok(), "{report}");
        // Running it again finds nothing left to close.
        assert!(
            recover_interrupted(&cfg.log_dir, &audit)
                .unwrap()
                .is_empty()
        );
    }

    /// An immutable file (chattr +i): the real fault, not a test double.
    struct Immutable(PathBuf);

    impl Immutable {
        fn set(path: &Path) -> Self {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(path)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "chattr +i {} failed (root and ext4 needed)",
                path.display()
            );
            Self(path.to_owned())
        }
    }

    impl Drop for Immutable {
        fn drop(&mut self) {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        }
    }

    #[test]
    fn an_end_the_audit_log_cannot_take_is_kept_and_written_later() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let audit = AuditLog::open(&cfg.audit_log).unwrap();
        let mut s = SessionRecording::begin(&cfg, &audit, start("p1", "alice"), true).unwrap();
        s.output(b"work done\r\n");
        s.input(b"abc");
        let locked = Immutable::set(&cfg.audit_log);
        let err = s.end(&audit, exit(7)).unwrap_err();
        assert!(matches!(err, SessionLogError::EndPending { .. }), "{err}");
        let marker = open_markers_dir(&cfg.log_dir).join("p1.json");
        let kept: OpenMarker = serde_json::from_slice(&fs::read(&marker).unwrap()).unwrap();
        assert_eq!(kept.ended.as_ref().unwrap().end.exit_code, Some(7));
        // Still unwritable: nothing is lost, the marker stays.
        assert!(retry_pending_ends(&cfg.log_dir, &audit).is_err());
        assert!(marker.exists());
        drop(locked);
        let written = retry_pending_ends(&cfg.log_dir, &audit).unwrap();
        assert_eq!(written.len(), 1);
        assert!(!marker.exists());
        let recs = events(&cfg.audit_log);
        match &recs.last().unwrap().event {
            AuditEvent::SessionEnd(end) => {
                assert_eq!(end.exit_code, Some(7));
                assert_eq!(end.ended_by, EndedBy::Exit);
                assert_eq!((end.bytes_in, end.bytes_out), (3, 11));
                assert!(end.recording.as_ref().unwrap().sha256.len() == 64);
            }
            other => panic!("{other:?}"),
        }
        let report = verify(&cfg.audit_log).unwrap();
        assert!(report.is_ok(), "{report}");
        // A live session's marker is never taken for a pending end.
        let live = SessionRecording::begin(&cfg, &audit, start("p2", "alice"), true).unwrap();
        assert!(retry_pending_ends(&cfg.log_dir, &audit).unwrap().is_empty());
        live.end(&audit, exit(0)).unwrap();
    }

    #[test]
    fn a_pending_end_survives_a_restart_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let audit = AuditLog::open(&cfg.audit_log).unwrap();
        let s = SessionRecording::begin(&cfg, &audit, start("p3", "bob"), false).unwrap();
        {
            let _locked = Immutable::set(&cfg.audit_log);
            assert!(s.end(&audit, exit(3)).is_err());
        }
        let closed = recover_interrupted(&cfg.log_dir, &audit).unwrap();
        assert_eq!(closed.len(), 1);
        assert_eq!(
            closed[0].exit_code,
            Some(3),
            "the real end, not 'interrupted'"
        );
        assert_eq!(closed[0].ended_by, EndedBy::Exit);
    }

    #[test]
    fn a_marker_whose_end_was_written_is_only_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let audit = AuditLog::open(&cfg.audit_log).unwrap();
        let s = SessionRecording::begin(&cfg, &audit, start("s1", "alice"), true).unwrap();
        let marker = open_markers_dir(&cfg.log_dir).join("s1.json");
        let saved = fs::read(&marker).unwrap();
        s.end(&audit, exit(0)).unwrap();
        fs::write(&marker, saved).unwrap();
        assert!(
            recover_interrupted(&cfg.log_dir, &audit)
                .unwrap()
                .is_empty()
        );
        assert!(!marker.exists());
        assert_eq!(events(&cfg.audit_log).len(), 2);
    }
}
