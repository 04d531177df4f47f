//! The crate's only `unsafe`: taking ownership of file descriptors that the
//! kernel handed us over SCM_RIGHTS. Every block says why it is sound.
#![allow(unsafe_code)]

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

/// Most descriptors one message may carry; more are closed and refused.
pub const MAX_FDS: usize = 3;

/// Receives bytes and any descriptors sent with them (close-on-exec).
/// Returns the byte count and the descriptors, owned.
pub fn recv_with_fds(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel installed `fd` in our table for this
                // message alone (SCM_RIGHTS); nothing else in the process
                // knows it, so we are its only owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        // Descriptors beyond our buffer were closed by the kernel; the rest
        // are dropped (closed) here.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "peer sent more file descriptors than allowed",
        ));
    }
    Ok((msg.bytes, fds))
}

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
