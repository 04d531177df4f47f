//! What bastiond tells the audit trail and the recorder about a session:
//! its `session.start` (from who, where and what it runs; its kind comes
//! from its [`super::plan::Plan`]), the beginning of its records within the
//! user's recording budget, and the bridge from the byte pump to the
//! recording.

use std::sync::{Arc, Mutex};

use crate::audit::{self, AuditLog, SessionStart};
use crate::config::RecordingConfig;
use crate::protocol::{Request, WindowSize};
use crate::recording::budget::{Budgets, Reservation};
use crate::recording::session::SessionRecording;
use crate::recording::{OnLogFailure, SessionLogError};

use super::container_state::Running;
use super::identity::Identity;
use super::plan::Plan;
use super::pump::Observer;

/// The `session.start` event of session `id`: `who` running `plan` in
/// `running`, as `request` asked. What the user controls is bounded.
pub fn session_start(
    id: &str,
    who: &Identity,
    running: &Running,
    request: &Request,
    plan: &Plan,
    shell: &str,
) -> SessionStart {
    let (remote_addr, remote_port) =
        remote_of(request.env.get("SSH_CONNECTION").map(String::as_str));
    SessionStart {
        session_id: id.to_owned(),
        user: who.name.clone(),
        uid: who.uid,
        groups: who.groups.clone(),
        remote_addr,
        remote_port,
        container: running.name.clone(),
        container_id: Some(running.id.clone()),
        image: running.image.clone(),
        image_digest: Some(running.image_id.clone()),
        role: running.role.clone(),
        kind: plan.kind(),
        command: request
            .command
            .as_deref()
            .map(|c| audit::bounded(c, audit::MAX_COMMAND_BYTES)),
        shell: Some(shell.to_owned()),
        transfer_direction: plan.transfer_direction(),
        tty: request.tty,
        term: request
            .env
            .get("TERM")
            .map(|t| audit::bounded(t, audit::MAX_TERM_BYTES)),
        cols: request.size.map(|s| s.cols),
        rows: request.size.map(|s| s.rows),
        recording: None,
        record_input: false,
        unrecorded_reason: None,
    }
}

/// A session's records, begun.
pub struct Begun {
    /// `None`: not recorded (a transfer, or `on_log_failure = "allow"`).
    pub recording: Option<SessionRecording>,
    /// What the recording holds of the user's budget until it ends.
    pub reservation: Option<Reservation>,
}

/// Begins a session's records (blocking I/O): reserves what its recording
/// may take of the user's `budget`, writes `session.start` and opens the
/// recording (when `record`). Under `on_log_failure = "allow"` a session
/// that cannot be recorded goes on unrecorded, and its start says why.
pub fn begin(
    mut config: RecordingConfig,
    audit: &AuditLog,
    budgets: &Arc<Budgets>,
    budget: u64,
    mut start: SessionStart,
    mut record: bool,
) -> Result<Begun, SessionLogError> {
    let mut reservation = None;
    if record {
        match budgets.reserve(
            &config.log_dir,
            &start.user,
            &start.session_id,
            budget,
            config.max_recording_bytes.as_u64(),
        ) {
            Ok(r) => {
                config.max_recording_bytes = bytesize::ByteSize::b(r.cap);
                reservation = Some(r);
            }
            Err(e) if config.on_log_failure == OnLogFailure::Refuse => return Err(e.into()),
            Err(e) => {
                tracing::error!(user = %start.user, error = %e, "SESSION IS NOT RECORDED (on_log_failure = \"allow\")");
                start.unrecorded_reason = Some(e.to_string());
                record = false;
            }
        }
    }
    let recording = SessionRecording::begin_with_policy(&config, audit, start, record)?;
    Ok(Begun {
        recording,
        reservation,
    })
}

/// Client address and port from `SSH_CONNECTION` ("client_ip client_port
/// server_ip server_port"), as sshd set it for the shell.
pub fn remote_of(ssh_connection: Option<&str>) -> (Option<String>, Option<u16>) {
    let Some(value) = ssh_connection else {
        return (None, None);
    };
    let mut parts = value.split_whitespace();
    let addr = parts
        .next()
        .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
        .map(str::to_owned);
    let port = parts.next().and_then(|p| p.parse().ok());
    (addr, port)
}

/// The recording seen as the pump's observer.
pub struct RecordingObserver(pub Mutex<SessionRecording>);

impl RecordingObserver {
    /// Why the recording stopped, if it did.
    pub fn stop_reason(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stop_reason()
    }

    fn with(&self, f: impl FnOnce(&mut SessionRecording)) {
        // A poisoned lock means a recorder panicked; keep the session going.
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }
}

impl Observer for RecordingObserver {
    fn output(&self, data: &[u8]) -> bool {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        guard.output(data)
    }

    fn input(&self, data: &[u8]) {
        self.with(|r| r.input(data));
    }

    fn resize(&self, size: WindowSize) {
        self.with(|r| r.resize(size.cols, size.rows));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_address_comes_from_ssh_connection() {
        assert_eq!(
            remote_of(Some("192.0.2.7 50122 192.0.2.1 22")),
            (Some("192.0.2.7".into()), Some(50122))
        );
        assert_eq!(
            remote_of(Some("::1 40000 ::1 2222")),
            (Some("::1".into()), Some(40000))
        );
        assert_eq!(remote_of(Some("garbage")), (None, None));
        assert_eq!(remote_of(None), (None, None));
    }
}
