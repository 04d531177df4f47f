//! Copies of audit events to syslog/journald (facility authpriv), for
//! central shipping. A datagram to `/dev/log`, sent non-blocking: when
//! syslog is down or its queue is full the copy is dropped (and counted),
//! never waited for. The audit file stays the record of truth.
//!
//! Hand-written rather than the `syslog` crate: that crate's unix-socket
//! writer blocks when the receiver's queue is full, and a session must never
//! wait on syslog; a non-blocking datagram in RFC 3164 form is a few lines.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// The local syslog socket.
pub const DEFAULT_SOCKET: &str = "/dev/log";

/// Facility authpriv (10), severity info (6).
const PRI_AUTHPRIV_INFO: u8 = 10 * 8 + 6;

/// A best-effort syslog sender.
#[derive(Debug)]
pub struct Syslog {
    socket_path: PathBuf,
    tag: String,
    socket: Mutex<Option<UnixDatagram>>,
    dropped: AtomicU64,
}

impl Syslog {
    pub fn new(socket_path: impl AsRef<Path>, tag: &str) -> Self {
        Self {
            socket_path: socket_path.as_ref().to_owned(),
            tag: tag.to_owned(),
            socket: Mutex::new(None),
            dropped: AtomicU64::new(0),
        }
    }

    /// How many messages could not be delivered.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends one message; never blocks, never fails.
    pub fn send(&self, message: &[u8]) {
        let mut packet = Vec::with_capacity(message.len() + 64);
        let now = time::OffsetDateTime::now_utc();
        let stamp = now
            .format(time::macros::format_description!(
                "[month repr:short] [day padding:space] [hour]:[minute]:[second]"
            ))
            .unwrap_or_default();
        packet.extend_from_slice(
            format!(
                "<{PRI_AUTHPRIV_INFO}>{stamp} {}[{}]: ",
                self.tag,
                std::process::id()
            )
            .as_bytes(),
        );
        packet.extend_from_slice(message);
        let mut guard = self.socket.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = UnixDatagram::unbound()
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .ok();
        }
        let sent = guard
            .as_ref()
            .is_some_and(|s| s.send_to(&packet, &self.socket_path).is_ok());
        if !sent {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n == 0 {
                tracing::warn!(socket = %self.socket_path.display(), "cannot send audit events to syslog; they are still in the audit log");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_receiver_drops_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("log.sock");
        let _server = UnixDatagram::bind(&sock).unwrap();
        let syslog = Syslog::new(&sock, "t");
        // Nobody reads: the queue fills and later sends are dropped, not waited on.
        let big = vec![b'x'; 16 * 1024];
        for _ in 0..1000 {
            syslog.send(&big);
        }
        assert!(syslog.dropped() > 0);
    }
}
