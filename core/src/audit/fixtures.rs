//! Ready-made audit events for tests, here and in the crates that use
//! this one (feature `test-fixtures`).

use super::{SessionKind, SessionStart};

/// The start of a session as bastiond would record it for `user`.
pub fn session_start(
    id: &str,
    user: &str,
    kind: SessionKind,
    command: Option<&str>,
) -> SessionStart {
    SessionStart {
        session_id: id.into(),
        user: user.into(),
        uid: 1000,
        groups: vec!["ops".into()],
        remote_addr: Some("192.0.2.7".into()),
        remote_port: Some(50122),
        container: format!("bastion-{user}"),
        container_id: Some("c0ffee".into()),
        image: "bastion/user:1".into(),
        image_digest: Some("sha256:0123".into()),
        role: Some("arn:aws:iam::123456789012:role/ops".into()),
        kind,
        command: command.map(str::to_owned),
        shell: Some("/bin/bash".into()),
        transfer_direction: None,
        tty: kind == SessionKind::Shell,
        term: Some("xterm-256color".into()),
        cols: Some(80),
        rows: Some(24),
        recording: None,
        record_input: false,
        unrecorded_reason: None,
    }
}
