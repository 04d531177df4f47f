//! What bastiond tells the audit trail and the recorder about a session:
//! its kind (file transfers are counted, never recorded byte by byte), the
//! client's address, and the bridge from the byte pump to the recording.

use std::sync::Mutex;

use crate::audit::{SessionKind, TransferDirection};
use crate::protocol::WindowSize;
use crate::recording::session::SessionRecording;

use super::pump::Observer;

/// The kind of a session from its command, and a transfer's direction.
pub fn classify(command: Option<&str>) -> (SessionKind, Option<TransferDirection>) {
    let Some(command) = command else {
        return (SessionKind::Shell, None);
    };
    let words: Vec<&str> = command.split_whitespace().collect();
    let program = words
        .first()
        .map(|w| w.rsplit('/').next().unwrap_or(w))
        .unwrap_or("");
    let args = words.get(1..).unwrap_or(&[]);
    let short_flag = |letter: char| {
        args.iter().any(|a| {
            a.starts_with('-')
                && !a.starts_with("--")
                && a[1..].chars().all(|c| c.is_ascii_alphabetic())
                && a.contains(letter)
        })
    };
    match program {
        "sftp-server" => (SessionKind::FileTransfer, Some(TransferDirection::Both)),
        "scp" if short_flag('t') => (SessionKind::FileTransfer, Some(TransferDirection::Upload)),
        "scp" if short_flag('f') => (SessionKind::FileTransfer, Some(TransferDirection::Download)),
        "rsync" if args.contains(&"--server") => {
            let direction = if args.contains(&"--sender") {
                TransferDirection::Download
            } else {
                TransferDirection::Upload
            };
            (SessionKind::FileTransfer, Some(direction))
        }
        _ => (SessionKind::Command, None),
    }
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
    fn with(&self, f: impl FnOnce(&mut SessionRecording)) {
        // A poisoned lock means a recorder panicked; keep the session going.
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }
}

impl Observer for RecordingObserver {
    fn output(&self, data: &[u8]) {
        self.with(|r| r.output(data));
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
    fn transfers_are_told_apart_from_commands() {
        use SessionKind::*;
        use TransferDirection::*;
        let cases = [
            (None, Shell, None),
            (Some("kubectl get pods"), Command, None),
            (
                Some("/usr/lib/openssh/sftp-server"),
                FileTransfer,
                Some(Both),
            ),
            (Some("scp -t -- /home/a/x"), FileTransfer, Some(Upload)),
            (Some("scp -r -d -t -- dir"), FileTransfer, Some(Upload)),
            (Some("scp -f -- x"), FileTransfer, Some(Download)),
            (
                Some("rsync --server -logDtpre.iLsfxCIvu . synced/"),
                FileTransfer,
                Some(Upload),
            ),
            (
                Some("rsync --server --sender -logDtpre.iLsfxCIvu . synced/"),
                FileTransfer,
                Some(Download),
            ),
            (Some("scp-lookalike -t"), Command, None),
            (Some("echo scp -t"), Command, None),
        ];
        for (command, kind, direction) in cases {
            assert_eq!(classify(command), (kind, direction), "{command:?}");
        }
    }

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
