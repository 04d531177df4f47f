//! The SSH side's terminal: raw mode for the session (the container's own
//! PTY does the line discipline), restored afterwards.

use std::os::fd::{AsFd, BorrowedFd};

use rustix::termios::{OptionalActions, Termios, tcgetattr, tcsetattr};

/// Raw mode on a terminal, restored on [`RawMode::restore`] or drop.
pub struct RawMode<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Option<Termios>,
}

impl<'fd> RawMode<'fd> {
    /// Puts `fd`'s terminal in raw mode.
    pub fn enter(fd: BorrowedFd<'fd>) -> std::io::Result<Self> {
        let saved = tcgetattr(fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(fd, OptionalActions::Now, &raw)?;
        Ok(Self {
            fd,
            saved: Some(saved),
        })
    }

    /// Restores the saved mode (best effort: the terminal may be gone).
    pub fn restore(&mut self) {
        if let Some(saved) = self.saved.take() {
            let _ = tcsetattr(self.fd.as_fd(), OptionalActions::Now, &saved);
        }
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        self.restore();
    }
}
