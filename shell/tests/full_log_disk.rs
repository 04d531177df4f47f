//! A full log disk fails the session start closed (the login is refused),
//! with a message that says what happened; with `on_log_failure = "allow"`
//! the session goes on without records. The disk is a real, tiny tmpfs
//! mounted on the log directory.
//!
//! Needs root (to mount the tmpfs).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use bastion::audit::{AuditLog, EndedBy, SessionKind, SessionStart};
use bastion::config::RecordingConfig;
use bastion::recording::{OnLogFailure, SessionOutcome, SessionRecording};

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
