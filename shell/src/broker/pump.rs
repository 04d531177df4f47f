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
    /// Sees output before the client does; false: it can no longer be
    /// recorded, so it must not reach the client (the session ends).
    fn output(&self, data: &[u8]) -> bool;
    fn input(&self, data: &[u8]);
    fn resize(&self, size: WindowSize);
}

/// An observer that keeps nothing (file transfers, and tests).
pub struct NoObserver;

impl Observer for NoObserver {
    fn output(&self, _: &[u8]) -> bool {
        true
    }
    fn input(&self, _: &[u8]) {}
    fn resize(&self, _: WindowSize) {}
}

/// Bytes moved, both ways.
#[derive(Debug, Default)]
pub struct ByteCounts {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl ByteCounts {
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
    /// The recording stopped: the output that did not fit was not passed on.
    RecordingStopped,
}

/// SSH client → exec: copies stdin into the attach stream until EOF, then
/// half-closes the stream so the process sees EOF on its stdin.
pub async fn input(
    from: &FdIo,
    mut to: impl AsyncWrite + Unpin,
    observer: &dyn Observer,
    counters: &ByteCounts,
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
    counters: &ByteCounts,
) -> PumpEnd {
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return PumpEnd::Eof,
            Ok(n) => n,
            Err(e) => return PumpEnd::SourceFailed(e),
        };
        if !observer.output(&buf[..n]) {
            return PumpEnd::RecordingStopped;
        }
        if let Err(e) = to.write_all(&buf[..n]).await {
            return PumpEnd::SinkGone(e);
        }
        counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Exec → SSH client without a TTY: Docker multiplexes stdout and stderr in
/// frames of an 8-byte header (stream, 0, 0, 0, big-endian u32 length) and
/// a payload; payloads go to stdout or stderr as they arrive, never merged.
///
/// Frames are parsed in place in one large buffer: one read can carry many
/// frames, and payloads are written straight from where they were read.
pub async fn output_multiplexed(
    mut from: impl AsyncRead + Unpin,
    stdout: &FdIo,
    stderr: &FdIo,
    observer: &dyn Observer,
    counters: &ByteCounts,
) -> PumpEnd {
    let mut buf = vec![0u8; BUF_SIZE];
    let (mut start, mut end) = (0usize, 0usize);
    // The frame being read: its stream and the payload bytes still to come.
    let mut frame: Option<(u8, usize)> = None;
    loop {
        loop {
            match frame {
                None if end - start >= 8 => {
                    let h = &buf[start..start + 8];
                    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
                    frame = Some((h[0], len));
                    start += 8;
                }
                None => break,
                Some((_, 0)) => frame = None,
                Some((stream, remaining)) => {
                    let n = remaining.min(end - start);
                    if n == 0 {
                        break;
                    }
                    let data = &buf[start..start + n];
                    // 1 = stdout, 2 = stderr; stdin echo is never asked for.
                    let target = match stream {
                        1 => Some(stdout),
                        2 => Some(stderr),
                        _ => None,
                    };
                    if let Some(target) = target {
                        if !observer.output(data) {
                            return PumpEnd::RecordingStopped;
                        }
                        if let Err(e) = target.write_all(data).await {
                            return PumpEnd::SinkGone(e);
                        }
                        counters.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    start += n;
                    frame = Some((stream, remaining - n));
                }
            }
        }
        // Only a split header (under 8 bytes) is ever left over: move it
        // to the front and read after it.
        buf.copy_within(start..end, 0);
        end -= start;
        start = 0;
        match from.read(&mut buf[end..]).await {
            Ok(0) if end == 0 && frame.is_none() => return PumpEnd::Eof,
            Ok(0) => return PumpEnd::SourceFailed(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => end += n,
            Err(e) => return PumpEnd::SourceFailed(e),
        }
    }
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
            let counters = ByteCounts::default();
            let end = output_multiplexed(&stream[..], &out, &err, &NoObserver, &counters).await;
            assert!(matches!(end, PumpEnd::Eof), "{end:?}");
            assert_eq!(counters.snapshot(), (0, 13));
        }
        let (out, err) = readers.await.unwrap();
        assert_eq!(out, b"out1 \x00\x01\x02\xff");
        assert_eq!(err, b"err1");
    }

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl tokio::io::AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            out: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let n = self.step.min(self.data.len()).min(out.remaining());
            out.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn frames_split_anywhere_across_reads_are_reassembled() {
        let mut stream: Vec<u8> = Vec::new();
        let mut want_out: Vec<u8> = Vec::new();
        let mut want_err: Vec<u8> = Vec::new();
        for i in 0..50u32 {
            let payload: Vec<u8> = (0..(i * 37 % 300)).map(|j| (i + j) as u8).collect();
            let which = if i % 3 == 0 { 2 } else { 1 };
            stream.extend(frame(which, &payload));
            if which == 1 {
                want_out.extend(&payload)
            } else {
                want_err.extend(&payload)
            }
        }
        for step in [1, 3, 7, 8, 9, 64, 1000] {
            let (out_r, out_w) = pipe();
            let (err_r, err_w) = pipe();
            let readers = tokio::spawn(async move { (drain(out_r).await, drain(err_r).await) });
            {
                let out = FdIo::new(out_w, Interest::WRITABLE).unwrap();
                let err = FdIo::new(err_w, Interest::WRITABLE).unwrap();
                let from = Trickle {
                    data: &stream,
                    step,
                };
                let end =
                    output_multiplexed(from, &out, &err, &NoObserver, &ByteCounts::default()).await;
                assert!(matches!(end, PumpEnd::Eof), "step {step}: {end:?}");
            }
            let (out, err) = readers.await.unwrap();
            assert_eq!(out, want_out, "step {step}");
            assert_eq!(err, want_err, "step {step}");
        }
    }

    #[tokio::test]
    async fn raw_output_passes_bytes_that_look_like_frame_headers() {
        let (r, w) = pipe();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 3) as u8).collect();
        let expected = data.clone();
        let reader = tokio::spawn(drain(r));
        {
            let to = FdIo::new(w, Interest::WRITABLE).unwrap();
            let end = output_raw(&data[..], &to, &NoObserver, &ByteCounts::default()).await;
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
            output_multiplexed(&stream[..], &out, &err, &NoObserver, &ByteCounts::default()).await;
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
