//! A log directory with a few real sessions, written through the same
//! library bastiond uses.

use crate::audit::{AuditEvent, AuditLog, CredentialsIssued, EndedBy, SessionKind, StsAssumeRole};
use crate::config::RecordingConfig;
use crate::recording::{SessionOutcome, SessionRecording};

use super::ReviewContext;

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub ctx: ReviewContext,
    pub config: RecordingConfig,
    pub audit: AuditLog,
}

pub(crate) use bastion_core::audit::fixtures::session_start as start;

pub(crate) fn outcome(code: i32) -> SessionOutcome {
    SessionOutcome {
        ended_by: EndedBy::Exit,
        exit_code: Some(code),
        signal: None,
        error: None,
    }
}

pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = RecordingConfig {
        log_dir: dir.path().join("log"),
        audit_log: dir.path().join("log/audit.jsonl"),
        syslog: false,
        ..RecordingConfig::default()
    };
    let audit = AuditLog::open(&config.audit_log).unwrap();
    let ctx = ReviewContext::from_config(&config);

    let mut alice = SessionRecording::begin(
        &config,
        &audit,
        start("20261123-alice-1", "alice", SessionKind::Shell, None),
        true,
    )
    .unwrap();
    alice.output(b"alice@bastion:~$ ");
    alice.output(b"kubectl get nodes\r\nhello from alice\r\n\x1b[31mERROR: disk ");
    alice.output(b"full\x1b[0m\r\nalice@bastion:~$ ");
    alice.output(b"exit\r\n");
    issue_credentials(&audit, "alice");
    alice.end(&audit, outcome(0)).unwrap();

    let mut bob = SessionRecording::begin(
        &config,
        &audit,
        start(
            "20261123-bob-1",
            "bob",
            SessionKind::Command,
            Some("kubectl get pods"),
        ),
        true,
    )
    .unwrap();
    bob.output(b"No resources found in default namespace.\n");
    bob.end(&audit, outcome(7)).unwrap();

    let carol = SessionRecording::begin(
        &config,
        &audit,
        start(
            "20261123-carol-1",
            "carol",
            SessionKind::FileTransfer,
            Some("/usr/lib/openssh/sftp-server"),
        ),
        false,
    )
    .unwrap();
    carol.end(&audit, outcome(0)).unwrap();
    Fixture {
        dir,
        ctx,
        config,
        audit,
    }
}

fn issue_credentials(audit: &AuditLog, user: &str) {
    let expiration = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    audit
        .append(&AuditEvent::StsAssumeRole(StsAssumeRole {
            user: user.into(),
            container: format!("bastion-{user}"),
            role_arn: "arn:aws:iam::123456789012:role/ops".into(),
            session_name: user.into(),
            source_identity: Some(user.into()),
            expiration: Some(expiration),
            access_key_id: Some("ASIAEXAMPLE".into()),
            request_id: Some("req-1".into()),
            error: None,
        }))
        .unwrap();
    audit
        .append(&AuditEvent::CredentialsIssued(CredentialsIssued {
            user: user.into(),
            container: format!("bastion-{user}"),
            container_id: Some("c0ffee".into()),
            source_ip: Some("172.30.0.2".into()),
            role_arn: "arn:aws:iam::123456789012:role/ops".into(),
            session_name: user.into(),
            source_identity: Some(user.into()),
            access_key_id: Some("ASIAEXAMPLE".into()),
            expiration,
            endpoint: "imds".into(),
        }))
        .unwrap();
}

pub(crate) fn text(buf: Vec<u8>) -> String {
    String::from_utf8(buf).unwrap()
}
