//! The shipped logrotate config (`provisioning/logrotate-bastion`) run by the
//! real `logrotate`, between appends: the chain must stay verifiable across
//! the rotated (and compressed) files.
//!
//! Needs `logrotate` (`apt-get install logrotate`) and root (logrotate's
//! `su root root`).
#![forbid(unsafe_code)]

use std::fs;
use std::path::Path;
use std::process::Command;

use bastion::audit::{AuditEvent, AuditLog, ContainerEvent, verify};

fn event(n: usize) -> AuditEvent {
    AuditEvent::ContainerStart(ContainerEvent {
        user: format!("user{n}"),
        container: format!("bastion-user{n}"),
        container_id: None,
        image: Some("bastion/user:1".into()),
        image_digest: None,
        reason: None,
    })
}

fn rotate(config: &Path, state: &Path) {
    let out = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(state)
        .arg(config)
        .output()
        .expect("logrotate is not installed: run `apt-get install logrotate`");
    assert!(
        out.status.success(),
        "logrotate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_chain_survives_the_shipped_logrotate_config() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("audit.jsonl");
    let shipped = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../provisioning/logrotate-bastion"),
    )
    .unwrap();
    // The audit log's stanza alone (the daemons' logs have their own).
    let start = shipped
        .find("/var/log/bastion/audit.jsonl {")
        .expect("a stanza for the audit log");
    let stanza = &shipped[start..start + shipped[start..].find('}').unwrap() + 1];
    assert!(!stanza.lines().any(|l| l.trim() == "copytruncate"));
    let config = dir.path().join("logrotate.conf");
    fs::write(
        &config,
        stanza.replace("/var/log/bastion/audit.jsonl", log_path.to_str().unwrap()),
    )
    .unwrap();
    let state = dir.path().join("state");

    let log = AuditLog::open(&log_path).unwrap();
    let mut n = 0;
    for round in 0..3 {
        for _ in 0..4 {
            log.append(&event(n)).unwrap();
            n += 1;
        }
        rotate(&config, &state);
        assert!(
            !log_path.exists(),
            "round {round}: rotation renames, creates nothing"
        );
        // dateext names rotated files by the second: the next rotation
        // needs a new name.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    log.append(&event(n)).unwrap();

    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("audit.jsonl-"))
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".gz")).count(),
        2,
        "delaycompress: all but the newest rotated file compressed: {names:?}"
    );
    let report = verify(&log_path).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.lines, 13);
    assert_eq!(report.files.len(), 4);
}
