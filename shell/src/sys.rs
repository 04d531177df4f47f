//! The crate's only `unsafe`: ignoring a signal and registering a passed
//! descriptor with the tokio reactor. Every block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;

/// Makes the process ignore `signal` (SIG_IGN).
pub fn ignore_signal(signal: nix::sys::signal::Signal) -> io::Result<()> {
    use nix::sys::signal::{SigHandler, signal as set_handler};
    // SAFETY: SIG_IGN installs no handler code, so none of the
    // async-signal-safety rules of `signal` can be broken.
    unsafe { set_handler(signal, SigHandler::SigIgn) }
        .map(drop)
        .map_err(io::Error::from)
}

/// Registers `fd` with the tokio reactor for `interest`; on failure the
/// descriptor comes back with the error.
pub fn register_fd(
    fd: OwnedFd,
    interest: tokio::io::Interest,
) -> Result<tokio::io::unix::AsyncFd<OwnedFd>, (OwnedFd, io::Error)> {
    // SAFETY: an `OwnedFd` is a valid open descriptor that nothing else
    // closes, and `as_raw_fd` returns the same number for its whole life, so
    // it stays the same open file description while the AsyncFd owns it.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }
        .map_err(|e| e.into_parts())
}
