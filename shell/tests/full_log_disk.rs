//! A full log disk fails the session start closed (the login is refused),
//! with a message that says what happened; with `on_log_failure = "allow"`
//! the session goes on without records. The disk is a real, tiny tmpfs
//! mounted on the log directory.
//!
//! Needs root (to mount the tmpfs).
#![forbid(unsafe_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use bastion::audit::{AuditLog, EndedBy, SessionKind, SessionStart};
use bastion::config::RecordingConfig;
use bastion::recording::budget::Budgets;
use bastion::recording::{LogDisk, OnLogFailure, SessionOutcome, SessionRecording};
use bytesize::ByteSize;
use std::sync::Arc;

struct Mounted(PathBuf);

impl Mounted {
    fn tmpfs(at: &Path, size: &str) -> Self {
        fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mounted(at.to_owned())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn start(id: &str) -> SessionStart {
    SessionStart {
        session_id: id.into(),
        user: "alice".into(),
        uid: 1000,
        groups: vec![],
        remote_addr: Some("192.0.2.7".into()),
        remote_port: Some(50122),
        container: "bastion-alice".into(),
        container_id: None,
        image: "bastion/user:1".into(),
        image_digest: None,
        role: None,
        kind: SessionKind::Shell,
        command: None,
        shell: Some("/bin/bash".into()),
        transfer_direction: None,
        tty: true,
        term: Some("xterm".into()),
        cols: Some(80),
        rows: Some(24),
        recording: None,
        record_input: false,
        unrecorded_reason: None,
    }
}

#[test]
fn a_full_log_disk_refuses_the_session_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let _mount = Mounted::tmpfs(&log_dir, "256k");
    let mut config = RecordingConfig {
        log_dir: log_dir.clone(),
        audit_log: log_dir.join("audit.jsonl"),
        syslog: false,
        // This test fills the disk to the last byte.
        reserve: ByteSize::b(0),
        ..RecordingConfig::default()
    };
    let audit = AuditLog::open(&config.audit_log).unwrap();

    // While there is room, a session is recorded and audited.
    let mut s = SessionRecording::begin(&config, &audit, start("ok-1"), true).unwrap();
    s.output(b"hello\r\n");
    let outcome = SessionOutcome {
        ended_by: EndedBy::Exit,
        exit_code: Some(0),
        signal: None,
        error: None,
    };
    s.end(&audit, outcome.clone()).unwrap();

    // Fill the disk.
    let mut filler = fs::File::create(log_dir.join("filler")).unwrap();
    let block = vec![b'x'; 4096];
    while filler.write_all(&block).is_ok() {}
    drop(filler);

    let err = SessionRecording::begin(&config, &audit, start("full-1"), true).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("No space left on device") && message.contains(log_dir.to_str().unwrap()),
        "the error says what happened and where: {message}"
    );
    assert!(
        !log_dir.join("sessions/.open/full-1.json").exists(),
        "a refused start leaves no open marker"
    );
    let err = SessionRecording::begin_with_policy(&config, &audit, start("full-2"), true);
    assert!(err.is_err(), "on_log_failure = refuse (default) refuses");

    config.on_log_failure = OnLogFailure::Allow;
    let allowed = SessionRecording::begin_with_policy(&config, &audit, start("full-3"), true)
        .expect("allow lets the session in");
    assert!(
        allowed.is_none(),
        "nothing can be written: no records at all"
    );

    // Room again: the chain is intact and recordings match.
    fs::remove_file(log_dir.join("filler")).unwrap();
    let report = bastion::audit::verify(&config.audit_log).unwrap();
    assert!(report.is_ok(), "{report}");
}

fn exit0() -> SessionOutcome {
    SessionOutcome {
        ended_by: EndedBy::Exit,
        exit_code: Some(0),
        signal: None,
        error: None,
    }
}

/// issue 9, class 4: recordings stop at the reserve kept for the audit
/// trail, which then still has room for every session's end.
#[test]
fn recordings_stop_at_the_reserve_and_the_audit_trail_keeps_its_room() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let _mount = Mounted::tmpfs(&log_dir, "8m");
    let config = RecordingConfig {
        log_dir: log_dir.clone(),
        audit_log: log_dir.join("audit.jsonl"),
        syslog: false,
        reserve: ByteSize::mib(4),
        ..RecordingConfig::default()
    };
    let audit = AuditLog::open(&config.audit_log).unwrap();
    let disk = || LogDisk::check(&log_dir, config.reserve.as_u64()).unwrap();
    assert_eq!(disk(), LogDisk::Roomy);
    let mut s = SessionRecording::begin(&config, &audit, start("big-1"), true).unwrap();
    // 6 MiB of output, more than is free above the reserve.
    let chunk = vec![b'y'; 64 * 1024];
    for _ in 0..96 {
        s.output(&chunk);
    }
    let end = s.end(&audit, exit0()).unwrap();
    let recording = end.recording.expect("recorded until the reserve");
    assert!(
        recording
            .error
            .as_deref()
            .is_some_and(|e| e.contains("kept free for the audit trail")),
        "{recording:?}"
    );
    assert_eq!(end.bytes_out, 96 * 64 * 1024, "every byte is still counted");
    let free = bastion::recording::free_space(&log_dir).unwrap();
    assert!(free >= 4 << 20, "the reserve is left: {free} free");
    // What the reaper warns of (bastiond's log), before the reserve is hit.
    assert_eq!(disk(), LogDisk::NearlyFull { free });
    // Below the reserve now? Then no new recording; the refusal is clear.
    std::fs::write(
        log_dir.join("filler"),
        vec![0u8; (free - (3 << 20)) as usize],
    )
    .unwrap();
    assert!(
        matches!(disk(), LogDisk::BelowReserve { .. }),
        "{:?}",
        disk()
    );
    let err = SessionRecording::begin(&config, &audit, start("big-2"), true).unwrap_err();
    assert!(
        err.to_string().contains("kept for the audit trail"),
        "{err}"
    );
    // The audit trail still takes events: the chain verifies.
    let report = bastion::audit::verify(&config.audit_log).unwrap();
    assert!(report.is_ok(), "{report}");
}

/// issue 9, class 4: one user's recordings take at most their budget;
/// then that user's recorded sessions are refused, nobody else's.
#[test]
fn a_users_recordings_stop_at_their_budget() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let _mount = Mounted::tmpfs(&log_dir, "16m");
    let config = RecordingConfig {
        log_dir: log_dir.clone(),
        audit_log: log_dir.join("audit.jsonl"),
        syslog: false,
        reserve: ByteSize::b(0),
        max_recording_bytes: ByteSize::mib(1),
        ..RecordingConfig::default()
    };
    let audit = AuditLog::open(&config.audit_log).unwrap();
    let budgets = Arc::new(Budgets::default());
    let budget = 1536 * 1024;
    let chunk = vec![b'z'; 64 * 1024];
    // As bastiond does: a reservation, then a recording of at most its cap.
    let session = |id: &str, user: &str| {
        let reservation = budgets.reserve(
            &log_dir,
            user,
            id,
            budget,
            config.max_recording_bytes.as_u64(),
        )?;
        let capped = RecordingConfig {
            max_recording_bytes: ByteSize::b(reservation.cap),
            ..config.clone()
        };
        let mut s = start(id);
        s.user = user.into();
        Ok::<_, bastion::recording::RecordingError>((
            SessionRecording::begin(&capped, &audit, s, true).unwrap(),
            reservation,
        ))
    };
    // Sessions live at the same time share the budget too.
    let (mut first, r1) = session("c-1", "alice").unwrap();
    let (mut second, r2) = session("c-2", "alice").unwrap();
    // (The first's header is on disk already: counted besides its cap.)
    let both = r1.cap + r2.cap;
    assert!(
        both <= budget && both > budget - 4096,
        "two live sessions split it: {both}"
    );
    assert!(session("c-3", "alice").is_err(), "a third gets nothing");
    for _ in 0..32 {
        first.output(&chunk);
        second.output(&chunk);
    }
    first.end(&audit, exit0()).unwrap();
    second.end(&audit, exit0()).unwrap();
    drop((r1, r2));
    let mut refused = None;
    for n in 0..5 {
        match session(&format!("b-{n}"), "alice") {
            Ok((mut s, _reservation)) => {
                for _ in 0..32 {
                    s.output(&chunk);
                }
                s.end(&audit, exit0()).unwrap();
            }
            Err(e) => {
                refused = Some((n, e));
                break;
            }
        }
    }
    let (n, err) = refused.expect("the budget ends the recordings");
    assert!(err.to_string().contains("budget"), "{err}");
    let used = bastion::recording::user_usage(&log_dir, "alice");
    assert!(
        used <= (1536 + 64) * 1024,
        "{used} bytes used for a 1.5 MiB budget"
    );
    // Another user is not affected.
    let (bob, _r) = session("bob-1", "bob").unwrap();
    bob.end(&audit, exit0()).unwrap();
    let starts = std::fs::read_to_string(&config.audit_log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("session.start"))
        .count();
    assert_eq!(
        starts,
        2 + n + 1,
        "the two concurrent ones, those that fit, bob"
    );
}
