//! What bastiond tells the audit trail and the recorder about a session:
//! the client's address, and the bridge from the byte pump to the
//! recording. (Its kind comes from its [`super::plan::Plan`].)

use std::sync::Mutex;

use crate::protocol::WindowSize;
use crate::recording::session::SessionRecording;

use super::pump::Observer;

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
