//! The shell's first frame: a [`Request`] and exactly three descriptors
//! (stdin, stdout, stderr) passed with SCM_RIGHTS on its first bytes.
//!
//! Anyone on the host may connect to bastiond's socket, so this is the code
//! a hostile local account talks to first. Two rules hold whatever the peer
//! sends:
//! - every descriptor the kernel installed in bastiond's table is owned at
//!   once ([`OwnedFd`], through rustix's ancillary-buffer parsing, which
//!   also owns what a truncated control message carried) and so is closed
//!   whenever the frame is refused;
//! - a frame with any other number of descriptors, descriptors after its
//!   first bytes, or bytes beyond the frame is refused.
//!
//! [`FirstFrame`] is the pure part (bytes and descriptors in, a request or
//! an error out); [`recv_chunk`] is the one `recvmsg`.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};

use crate::protocol::{self, FrameError, MAX_FRAME, Request};

/// Descriptors a request carries: stdin, stdout, stderr.
pub const REQUEST_FDS: usize = 3;

/// Why a first frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("connection closed before a whole request arrived ({got} of {want} bytes)")]
    Closed { got: usize, want: usize },
    #[error("cannot receive from the shell: {0}")]
    Recv(#[source] io::Error),
    #[error("request frame of {0} bytes is larger than the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("bytes after the request frame (the shell sends nothing before the reply)")]
    TrailingBytes,
    #[error("the request carried more than {REQUEST_FDS} file descriptors")]
    TooManyFds,
    #[error("file descriptors arrived after the first bytes of the request")]
    LateFds,
    #[error("the request carried {got} file descriptors, expected {REQUEST_FDS}")]
    WrongFdCount { got: usize },
    #[error("malformed request: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("unsupported protocol version {0}")]
    Version(u32),
    #[error("no whole request within {0:?}")]
    Timeout(std::time::Duration),
}

impl From<FrameError> for RequestError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::TooLarge(n) => Self::TooLarge(n),
            FrameError::Malformed(e) => Self::Malformed(e),
            FrameError::Closed => Self::Closed { got: 0, want: 4 },
            FrameError::Io(e) => Self::Recv(e),
        }
    }
}

/// A request as received: the frame and the three passed descriptors.
#[derive(Debug)]
pub struct Received {
    pub request: Request,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// One `recvmsg`'s worth: bytes, the descriptors that came with them, and
/// whether the kernel had to drop some (they were closed by the kernel; the
/// ones it installed are in `fds`).
#[derive(Debug)]
pub struct Chunk {
    pub bytes: usize,
    pub fds: Vec<OwnedFd>,
    pub truncated: bool,
}

/// Receives bytes into `buf` and any descriptors sent with them
/// (close-on-exec). Room is made for one descriptor more than a request
/// may carry, so an extra one is seen even when nothing is truncated.
pub fn recv_chunk(socket: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Chunk> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(REQUEST_FDS + 1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = rustix::net::recvmsg(socket, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok(Chunk {
        bytes: msg.bytes,
        fds,
        truncated: msg.flags.contains(ReturnFlags::CTRUNC),
    })
}

/// Assembles the first frame from the chunks `recvmsg` returns.
#[derive(Debug)]
pub struct FirstFrame {
    buf: Vec<u8>,
    have: usize,
    fds: Vec<OwnedFd>,
    chunks: usize,
}

impl Default for FirstFrame {
    fn default() -> Self {
        Self::new()
    }
}

impl FirstFrame {
    pub fn new() -> Self {
        Self {
            // One byte more than the largest frame: a byte beyond it is
            // received (and refused) without overwriting the frame.
            buf: vec![0; 4 + MAX_FRAME + 1],
            have: 0,
            fds: Vec::new(),
            chunks: 0,
        }
    }

    /// Where the next chunk's bytes go; never empty while the frame is
    /// incomplete (there is always room for a byte beyond it).
    pub fn space(&mut self) -> &mut [u8] {
        &mut self.buf[self.have..]
    }

    /// Takes a chunk written into [`FirstFrame::space`]: `Ok(None)` while
    /// more is needed, the request once it is whole. On any error every
    /// descriptor received so far is closed (dropped with `self`).
    pub fn push(&mut self, chunk: Chunk) -> Result<Option<Received>, RequestError> {
        let Chunk {
            bytes,
            fds,
            truncated,
        } = chunk;
        self.chunks += 1;
        if truncated || self.fds.len() + fds.len() > REQUEST_FDS {
            return Err(RequestError::TooManyFds);
        }
        if !fds.is_empty() && self.chunks > 1 {
            return Err(RequestError::LateFds);
        }
        self.fds.extend(fds);
        let want = self.wanted()?;
        if bytes == 0 {
            return Err(RequestError::Closed {
                got: self.have,
                want: want.unwrap_or(4),
            });
        }
        self.have += bytes;
        let Some(want) = self.wanted()? else {
            return Ok(None);
        };
        if self.have > want {
            return Err(RequestError::TrailingBytes);
        }
        if self.have < want {
            return Ok(None);
        }
        let request: Request =
            serde_json::from_slice(&self.buf[4..want]).map_err(RequestError::Malformed)?;
        if request.version != protocol::VERSION {
            return Err(RequestError::Version(request.version));
        }
        let got = self.fds.len();
        let mut fds = std::mem::take(&mut self.fds).into_iter();
        match (fds.next(), fds.next(), fds.next()) {
            (Some(stdin), Some(stdout), Some(stderr)) => Ok(Some(Received {
                request,
                stdin,
                stdout,
                stderr,
            })),
            _ => Err(RequestError::WrongFdCount { got }),
        }
    }

    /// The frame's whole length once its prefix is in.
    fn wanted(&self) -> Result<Option<usize>, RequestError> {
        if self.have < 4 {
            return Ok(None);
        }
        let prefix = self.buf[..4].try_into().expect("4 bytes");
        Ok(Some(4 + protocol::frame_len(prefix)?))
    }
}

/// Feeds `data` to a [`FirstFrame`] as a peer would, in chunks: each
/// element is (bytes, number of descriptors, truncated). The descriptors
/// are real (duplicates of /dev/null), so a caller can count the process's
/// open descriptors before and after. For tests and the fuzz target.
pub fn assemble_from(chunks: &[(&[u8], usize, bool)]) -> Result<Option<Received>, RequestError> {
    let null = std::fs::File::open("/dev/null").map_err(RequestError::Recv)?;
    let mut frame = FirstFrame::new();
    for &(data, nfds, truncated) in chunks {
        let space = frame.space();
        let n = data.len().min(space.len());
        space[..n].copy_from_slice(&data[..n]);
        let mut fds = Vec::with_capacity(nfds);
        for _ in 0..nfds {
            fds.push(OwnedFd::from(null.try_clone().map_err(RequestError::Recv)?));
        }
        if let Some(done) = frame.push(Chunk {
            bytes: n,
            fds,
            truncated,
        })? {
            return Ok(Some(done));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::IoSlice;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

    use super::*;
    use crate::protocol::{VERSION, encode};

    fn frame() -> Vec<u8> {
        encode(&Request {
            version: VERSION,
            command: Some("true".into()),
            tty: false,
            size: None,
            env: BTreeMap::new(),
        })
        .unwrap()
    }

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    /// Sends `data` with `n` descriptors (duplicates of stdin) over `s`.
    fn send(s: &UnixStream, data: &[u8], n: usize) {
        let null = std::fs::File::open("/dev/null").unwrap();
        let fds: Vec<BorrowedFd<'_>> = (0..n).map(|_| null.as_fd()).collect();
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(n.max(1)))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if n > 0 {
            assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        }
        rustix::net::sendmsg(s, &[IoSlice::new(data)], &mut control, SendFlags::empty()).unwrap();
    }

    fn receive(s: &UnixStream) -> Result<Option<Received>, RequestError> {
        let mut frame = FirstFrame::new();
        loop {
            let chunk = recv_chunk(s.as_fd(), frame.space()).map_err(RequestError::Recv)?;
            if let Some(done) = frame.push(chunk)? {
                return Ok(Some(done));
            }
        }
    }

    #[test]
    fn a_request_with_three_descriptors_is_received() {
        let (a, b) = UnixStream::pair().unwrap();
        send(&a, &frame(), 3);
        let got = receive(&b).unwrap().unwrap();
        assert_eq!(got.request.command.as_deref(), Some("true"));
    }

    #[test]
    fn every_descriptor_of_a_refused_frame_is_closed() {
        // Run in one test: the fd count of the process is shared by tests
        // running in parallel threads, so it is compared around a loop.
        let before = open_fds();
        for round in 0..200 {
            for (n, _why) in [
                (4, "one too many"),
                (8, "truncated"),
                (2, "too few"),
                (0, "none"),
            ] {
                let (a, b) = UnixStream::pair().unwrap();
                send(&a, &frame(), n);
                let err = receive(&b).unwrap_err();
                assert!(
                    matches!(
                        err,
                        RequestError::TooManyFds | RequestError::WrongFdCount { .. }
                    ),
                    "{n} fds (round {round}): {err}"
                );
            }
            // Descriptors spread over several messages (the kernel ends a
            // read at each message that carries some).
            let (a, b) = UnixStream::pair().unwrap();
            let whole = frame();
            send(&a, &whole[..2], 2);
            send(&a, &whole[2..], 1);
            assert!(matches!(receive(&b), Err(RequestError::LateFds)));
            let (a, b) = UnixStream::pair().unwrap();
            send(&a, &whole[..2], 3);
            send(&a, &whole[2..4], 3);
            assert!(matches!(receive(&b), Err(RequestError::TooManyFds)));
            // A frame that never completes, then EOF.
            let (a, b) = UnixStream::pair().unwrap();
            send(&a, &whole[..10], 3);
            drop(a);
            assert!(matches!(receive(&b), Err(RequestError::Closed { .. })));
        }
        let after = open_fds();
        // Other tests of this binary may hold a few descriptors meanwhile;
        // a leak here would be hundreds.
        assert!(after < before + 20, "{before} open before, {after} after");
    }

    #[test]
    fn trailing_bytes_and_bad_frames_are_refused() {
        let mut extra = frame();
        extra.push(b'x');
        assert!(matches!(
            assemble_from(&[(&extra, 3, false)]),
            Err(RequestError::TrailingBytes)
        ));
        let mut big = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        big.extend_from_slice(b"{}");
        assert!(matches!(
            assemble_from(&[(&big, 3, false)]),
            Err(RequestError::TooLarge(_))
        ));
        let mut bad = 2u32.to_be_bytes().to_vec();
        bad.extend_from_slice(b"{}");
        assert!(matches!(
            assemble_from(&[(&bad, 3, false)]),
            Err(RequestError::Malformed(_))
        ));
        let whole = frame();
        assert!(
            assemble_from(&[(&whole[..1], 3, false), (&whole[1..5], 0, false)])
                .unwrap()
                .is_none(),
            "a partial frame needs more"
        );
        assert!(
            assemble_from(&[(&whole[..1], 3, false), (&whole[1..], 0, false)])
                .unwrap()
                .is_some()
        );
    }
}
