//! Moving a session's bytes between the SSH side (the passed descriptors)
//! and the exec's attach stream, with every byte also shown to the
//! session's [`Observer`] (the recorder).
//!
//! One read buffer per direction and no other copy: bytes read from one side
//! are written from the same buffer to the other side and to the observer.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::fdio::FdIo;
use crate::protocol::WindowSize;

/// Size of each direction's buffer.
pub const BUF_SIZE: usize = 128 * 1024;

/// Sees what a session shows and is sent (the recording).
pub trait Observer: Send + Sync {
    fn output(&self, data: &[u8]);
    fn input(&self, data: &[u8]);
    fn resize(&self, size: WindowSize);
}

/// An observer that keeps nothing (file transfers, and tests).
pub struct NoObserver;

impl Observer for NoObserver {
    fn output(&self, _: &[u8]) {}
    fn input(&self, _: &[u8]) {}
    fn resize(&self, _: WindowSize) {}
}

/// Bytes moved, both ways.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Counters {
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        )
    }
}

/// How a direction ended.
#[derive(Debug)]
pub enum PumpEnd {
    /// The source reached end of input.
    Eof,
    /// The destination went away (the SSH client for output).
    SinkGone(io::Error),
    /// Reading the source failed.
    SourceFailed(io::Error),
}

/// SSH client → exec: copies stdin into the attach stream until EOF, then
/// half-closes the stream so the process sees EOF on its stdin.
pub async fn input(
    from: &FdIo,
    mut to: impl AsyncWrite + Unpin,
    observer: &dyn Observer,
    counters: &Counters,
) -> PumpEnd {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return PumpEnd::SourceFailed(e),
        };
        observer.input(&buf[..n]);
        if let Err(e) = to.write_all(&buf[..n]).await {
            return PumpEnd::SinkGone(e);
        }
        counters.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }
    // EOF delivered: the Engine closes the process's stdin on half-close.
    let _ = to.shutdown().await;
    PumpEnd::Eof
}

/// Exec → SSH client for TTY sessions: the stream is raw terminal output.
pub async fn output_raw(
    mut from: impl AsyncRead + Unpin,
    to: &FdIo,
    observer: &dyn Observer,
    counters: &Counters,
) -> PumpEnd {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return PumpEnd::Eof,
            Ok(n) => n,
            Err(e) => return PumpEnd::SourceFailed(e),
        };
        observer.output(&buf[..n]);
        if let Err(e) = to.write_all(&buf[..n]).await {
            return PumpEnd::SinkGone(e);
        }
        counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Exec → SSH client without a TTY: Docker multiplexes stdout and stderr in
/// frames of an 8-byte header (stream, 0, 0, 0, big-endian u32 length) and
/// a payload; payloads go to stdout or stderr as they arrive, never merged.
pub async fn output_multiplexed(
    from: impl AsyncRead + Unpin,
    stdout: &FdIo,
    stderr: &FdIo,
    observer: &dyn Observer,
    counters: &Counters,
) -> PumpEnd {
    let mut from = tokio::io::BufReader::with_capacity(16 * 1024, from);
    let mut buf = vec![0u8; BUF_SIZE];
    let mut header = [0u8; 8];
    loop {
        match read_header(&mut from, &mut header).await {
            Ok(true) => {}
            Ok(false) => return PumpEnd::Eof,
            Err(e) => return PumpEnd::SourceFailed(e),
        }
        let target = match header[0] {
            1 => Some(stdout),
            2 => Some(stderr),
            _ => None, // stdin echo frames are never requested; skip anything else
        };
        let mut remaining =
            u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        while remaining > 0 {
            let want = remaining.min(buf.len());
            let n = match from.read(&mut buf[..want]).await {
                Ok(0) => {
                    return PumpEnd::SourceFailed(io::ErrorKind::UnexpectedEof.into());
                }
                Ok(n) => n,
                Err(e) => return PumpEnd::SourceFailed(e),
            };
            remaining -= n;
            let Some(target) = target else { continue };
            observer.output(&buf[..n]);
            if let Err(e) = target.write_all(&buf[..n]).await {
                return PumpEnd::SinkGone(e);
            }
            counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Reads one frame header; `Ok(false)` on a clean end between frames.
async fn read_header(
    from: &mut (impl AsyncRead + Unpin),
    header: &mut [u8; 8],
) -> io::Result<bool> {
    let mut got = 0;
    while got < header.len() {
        let n = from.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(false)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        got += n;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;
    use tokio::io::Interest;

    fn pipe() -> (OwnedFd, OwnedFd) {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap()
    }

    async fn drain(fd: OwnedFd) -> Vec<u8> {
        let io = FdIo::new(fd, Interest::READABLE).unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match io.read(&mut buf).await.unwrap() {
                0 => return all,
                n => all.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn frame(stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![stream, 0, 0, 0];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test]
    async fn multiplexed_output_keeps_stdout_and_stderr_apart() {
        let (out_r, out_w) = pipe();
        let (err_r, err_w) = pipe();
        let mut stream = Vec::new();
        stream.extend(frame(1, b"out1 "));
        stream.extend(frame(2, b"err1"));
        stream.extend(frame(1, &[0u8, 1, 2, 255]));
        stream.extend(frame(0, b"ignored"));
        let readers = tokio::spawn(async move { (drain(out_r).await, drain(err_r).await) });
        {
            let out = FdIo::new(out_w, Interest::WRITABLE).unwrap();
            let err = FdIo::new(err_w, Interest::WRITABLE).unwrap();
            let counters = Counters::default();
            let end = output_multiplexed(&stream[..], &out, &err, &NoObserver, &counters).await;
            assert!(matches!(end, PumpEnd::Eof), "{end:?}");
            assert_eq!(counters.snapshot(), (0, 13));
        }
        let (out, err) = readers.await.unwrap();
        assert_eq!(out, b"out1 \x00\x01\x02\xff");
        assert_eq!(err, b"err1");
    }

    #[tokio::test]
    async fn raw_output_passes_bytes_that_look_like_frame_headers() {
        let (r, w) = pipe();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 3) as u8).collect();
        let expected = data.clone();
        let reader = tokio::spawn(drain(r));
        {
            let to = FdIo::new(w, Interest::WRITABLE).unwrap();
            let end = output_raw(&data[..], &to, &NoObserver, &Counters::default()).await;
            assert!(matches!(end, PumpEnd::Eof));
        }
        assert_eq!(reader.await.unwrap(), expected);
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error_not_a_clean_end() {
        let (_r, w) = pipe();
        let (_r2, w2) = pipe();
        let out = FdIo::new(w, Interest::WRITABLE).unwrap();
        let err = FdIo::new(w2, Interest::WRITABLE).unwrap();
        let mut stream = frame(1, b"abcdef");
        stream.truncate(10);
        let end =
            output_multiplexed(&stream[..], &out, &err, &NoObserver, &Counters::default()).await;
        assert!(matches!(end, PumpEnd::SourceFailed(_)), "{end:?}");
    }

    #[tokio::test]
    async fn a_closed_reader_is_seen_as_hang_up() {
        let (r, w) = pipe();
        let out = FdIo::new(w, Interest::WRITABLE).unwrap();
        let watcher = out.hangup_watcher().unwrap();
        drop(r);
        watcher.hung_up().await.unwrap();
    }
}
