//! Async reads and writes on the descriptors the shell passed us (a PTY, or
//! sshd's pipes/socketpairs), driven by epoll readiness: no polling loops,
//! no helper threads.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::OFlags;
use rustix::io::Errno;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// One passed descriptor: non-blocking and registered with the runtime, or,
/// for the rare descriptor epoll cannot watch (a regular file or /dev/null
/// when the shell is run outside sshd), read and written in place.
pub enum FdIo {
    Async(AsyncFd<OwnedFd>),
    Blocking(OwnedFd),
}

impl FdIo {
    /// Takes `fd`, makes it non-blocking and registers it for `interest`.
    pub fn new(fd: OwnedFd, interest: Interest) -> io::Result<Self> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?;
        match crate::sys::register_fd(fd, interest) {
            Ok(fd) => Ok(Self::Async(fd)),
            // epoll refuses regular files and /dev/null.
            Err((fd, e)) if e.raw_os_error() == Some(Errno::PERM.raw_os_error()) => {
                rustix::fs::fcntl_setfl(&fd, flags)?;
                Ok(Self::Blocking(fd))
            }
            Err((_, e)) => Err(e),
        }
    }

    /// The descriptor, for terminal ioctls.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Self::Async(fd) => fd.get_ref().as_fd(),
            Self::Blocking(fd) => fd.as_fd(),
        }
    }

    /// Reads some bytes; `Ok(0)` at end of input. A PTY whose other side is
    /// gone reports EIO, which is end of input too.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let fd = match self {
            Self::Async(fd) => fd,
            // Files and /dev/null never block for long: read in place.
            // (Not in `block_in_place`: handing the worker over on every
            // chunk costs more thread wake-ups than the read itself.)
            Self::Blocking(fd) => return rustix::io::read(fd, buf).map_err(io::Error::from),
        };
        loop {
            let mut guard = fd.readable().await?;
            match guard.try_io(|fd| match rustix::io::read(fd.get_ref(), &mut *buf) {
                Err(Errno::IO) => Ok(0),
                other => other.map_err(io::Error::from),
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        let fd = match self {
            Self::Async(fd) => fd,
            Self::Blocking(fd) => {
                while !buf.is_empty() {
                    buf = &buf[rustix::io::write(fd, buf)?..];
                }
                return Ok(());
            }
        };
        while !buf.is_empty() {
            let mut guard = fd.writable().await?;
            match guard.try_io(|fd| rustix::io::write(fd.get_ref(), buf).map_err(io::Error::from)) {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// A watcher that reports when this descriptor's reader or peer goes
    /// away. It watches a duplicate of the descriptor, so its readiness
    /// bookkeeping never steals a wake-up from a writer of this one.
    pub fn hangup_watcher(&self) -> io::Result<HangupWatcher> {
        let Self::Async(fd) = self else {
            return Ok(HangupWatcher { fd: None });
        };
        let dup = rustix::io::fcntl_dupfd_cloexec(fd.get_ref(), 3)?;
        Ok(HangupWatcher {
            fd: Some(crate::sys::register_fd(dup, Interest::WRITABLE).map_err(|(_, e)| e)?),
        })
    }
}

/// See [`FdIo::hangup_watcher`].
pub struct HangupWatcher {
    /// `None` for descriptors that cannot hang up (files): never resolves.
    fd: Option<AsyncFd<OwnedFd>>,
}

impl HangupWatcher {
    /// Resolves when the descriptor reports an error or hang-up: the reader
    /// of a pipe went away, or a socket's peer closed. That is how we learn
    /// that an SSH client vanished while its command printed nothing.
    pub async fn hung_up(&self) -> io::Result<()> {
        let Some(fd) = &self.fd else {
            return std::future::pending().await;
        };
        loop {
            let mut guard = fd.ready(Interest::WRITABLE).await?;
            let ready = guard.ready();
            if ready.is_error() || ready.is_write_closed() {
                return Ok(());
            }
            // Merely writable: wait for the next edge.
            guard.clear_ready();
        }
    }
}
