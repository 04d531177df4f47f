//! The wire protocol between `bastion-shell` and `bastiond` on the unix
//! socket: length-prefixed JSON frames (a big-endian u32 length, then that
//! many bytes of JSON). The first frame from the shell is a [`Request`] and
//! carries the shell's stdin, stdout and stderr as SCM_RIGHTS; after it the
//! shell only sends [`ClientMessage`]s and the broker only sends
//! [`ServerMessage`]s.
//!
//! Nothing in a request is trusted for identity: the broker takes the uid
//! from SO_PEERCRED. The request only says what to run and how.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{
    Decoder, Encoder, FramedRead, LengthDelimitedCodec, LengthDelimitedCodecError,
};

/// Protocol version, bumped on any incompatible change.
pub const VERSION: u32 = 1;

/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 64 * 1024;

/// Exit status the shell uses when the bastion itself failed (not the
/// user's command), as `docker run` does.
pub const EXIT_BASTION_FAILURE: i32 = 125;

/// Environment variables the shell forwards, as data only.
pub fn forwarded_env_var(name: &str) -> bool {
    matches!(
        name,
        "TERM" | "LANG" | "SSH_CONNECTION" | "SSH_TTY" | "COLORTERM"
    ) || name.starts_with("LC_")
}

/// What the shell asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub version: u32,
    /// `Some` for `-c CMD` (commands, scp, sftp, rsync); `None` for a login shell.
    pub command: Option<String>,
    /// Whether stdin is a terminal (sshd allocated a PTY).
    pub tty: bool,
    /// Terminal size when `tty`.
    pub size: Option<WindowSize>,
    /// The allow-listed environment (see [`forwarded_env_var`]).
    pub env: BTreeMap<String, String>,
}

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub cols: u16,
    pub rows: u16,
}

impl WindowSize {
    /// A size the broker accepts: both sides non-zero.
    pub fn is_valid(self) -> bool {
        self.cols > 0 && self.rows > 0
    }
}

/// Shell → broker after the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// The terminal was resized (the shell got SIGWINCH).
    Resize(WindowSize),
}

/// Broker → shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Something the user should know (e.g. a limit that bit); print it.
    Notice { message: String },
    /// The session ended; exit with `code`.
    Exit { code: i32 },
    /// The bastion could not run the session; print `message` and exit with `code`.
    Error { message: String, code: i32 },
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed")]
    Closed,
    #[error("frame of {0} bytes is larger than the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// The frame codec: a big-endian u32 length, then that many bytes, at most
/// [`MAX_FRAME`]. Every frame either side reads or writes goes through it,
/// except the shell's first frame on the broker's side, which arrives with
/// descriptors (`recvmsg`) and is assembled by `broker::request` with
/// [`frame_len`].
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_type::<u32>()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// Encodes one frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(message)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = BytesMut::with_capacity(4 + body.len());
    codec().encode(Bytes::from(body), &mut frame)?;
    Ok(frame.to_vec())
}

/// Parses the 4-byte length prefix of the first frame (the one that comes
/// with descriptors): the same rule as [`codec`].
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

fn decode<T: for<'de> Deserialize<'de>>(frame: Option<BytesMut>) -> Result<T, FrameError> {
    let frame = frame.ok_or(FrameError::Closed)?;
    Ok(serde_json::from_slice(&frame)?)
}

/// The codec's error as ours: a frame over [`MAX_FRAME`] is `TooLarge`.
fn codec_error(e: io::Error) -> FrameError {
    if e.get_ref()
        .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>())
    {
        FrameError::TooLarge(MAX_FRAME + 1)
    } else {
        FrameError::Io(e)
    }
}

/// Reads frames from a blocking reader (the shell's side).
pub struct FrameReader<R> {
    inner: R,
    codec: LengthDelimitedCodec,
    buf: BytesMut,
}

impl<R: Read> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            codec: codec(),
            buf: BytesMut::new(),
        }
    }

    /// The next message; [`FrameError::Closed`] at the end of the stream
    /// between frames.
    pub fn read<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T, FrameError> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).map_err(codec_error)? {
                return decode(Some(frame));
            }
            let mut chunk = [0u8; 4096];
            let n = self.inner.read(&mut chunk)?;
            if n == 0 {
                return match self.codec.decode_eof(&mut self.buf).map_err(codec_error)? {
                    Some(frame) => decode(Some(frame)),
                    None if self.buf.is_empty() => Err(FrameError::Closed),
                    None => Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Writes one frame to a blocking writer.
pub fn write_frame<T: Serialize>(w: &mut impl Write, message: &T) -> Result<(), FrameError> {
    w.write_all(&encode(message)?)?;
    Ok(())
}

/// Reads frames from an async reader (the broker's side, after the first
/// frame).
pub struct AsyncFrameReader<R> {
    frames: FramedRead<R, LengthDelimitedCodec>,
}

impl<R: tokio::io::AsyncRead + Unpin> AsyncFrameReader<R> {
    pub fn new(inner: R) -> Self {
        Self {
            frames: FramedRead::new(inner, codec()),
        }
    }

    /// The next message; [`FrameError::Closed`] at the end of the stream.
    pub async fn read<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T, FrameError> {
        use futures_util::StreamExt;
        decode(self.frames.next().await.transpose().map_err(codec_error)?)
    }
}

/// Writes one frame to an async writer.
pub async fn write_frame_async<T: Serialize>(
    w: &mut (impl tokio::io::AsyncWrite + Unpin),
    message: &T,
) -> Result<(), FrameError> {
    use tokio::io::AsyncWriteExt;
    w.write_all(&encode(message)?).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let request = Request {
            version: VERSION,
            command: Some("printf '%s' \"a b\"".into()),
            tty: true,
            size: Some(WindowSize { cols: 80, rows: 24 }),
            env: BTreeMap::from([("TERM".into(), "xterm".into())]),
        };
        let bytes = encode(&request).unwrap();
        assert_eq!(&bytes[..4], &((bytes.len() - 4) as u32).to_be_bytes());
        let back: Request = FrameReader::new(&bytes[..]).read().unwrap();
        assert_eq!(back, request);

        // Several frames in one stream, read one by one, then the end.
        let exit = ServerMessage::Exit { code: 42 };
        let notice = ServerMessage::Notice {
            message: "hi".into(),
        };
        let stream = [encode(&notice).unwrap(), encode(&exit).unwrap()].concat();
        let mut reader = FrameReader::new(&stream[..]);
        assert_eq!(reader.read::<ServerMessage>().unwrap(), notice);
        assert_eq!(reader.read::<ServerMessage>().unwrap(), exit);
        assert!(matches!(
            reader.read::<ServerMessage>(),
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn the_async_reader_reads_what_the_shell_writes() {
        let (a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for cols in 1..=50u16 {
                let resize = ClientMessage::Resize(WindowSize { cols, rows: 24 });
                write_frame_async(&mut b, &resize).await.unwrap();
            }
        });
        let mut reader = AsyncFrameReader::new(a);
        for cols in 1..=50u16 {
            assert_eq!(
                reader.read::<ClientMessage>().await.unwrap(),
                ClientMessage::Resize(WindowSize { cols, rows: 24 })
            );
        }
        writer.await.unwrap();
        assert!(matches!(
            reader.read::<ClientMessage>().await,
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut big = (MAX_FRAME as u32 + 1).to_be_bytes().to_vec();
        big.extend_from_slice(b"{}");
        assert!(matches!(
            FrameReader::new(&big[..]).read::<ServerMessage>(),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            FrameReader::new(&[][..]).read::<ServerMessage>(),
            Err(FrameError::Closed)
        ));
        let short = [0u8, 0, 0, 10, b'{'];
        assert!(matches!(
            FrameReader::new(&short[..]).read::<ServerMessage>(),
            Err(FrameError::Io(_))
        ));
        let too_big = ServerMessage::Notice {
            message: "x".repeat(MAX_FRAME),
        };
        assert!(matches!(encode(&too_big), Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn only_terminal_and_locale_variables_are_forwarded() {
        for ok in [
            "TERM",
            "LANG",
            "LC_ALL",
            "LC_CTYPE",
            "SSH_CONNECTION",
            "SSH_TTY",
        ] {
            assert!(forwarded_env_var(ok), "{ok}");
        }
        for no in [
            "LD_PRELOAD",
            "PATH",
            "HOME",
            "BASH_ENV",
            "AWS_ACCESS_KEY_ID",
            "DOCKER_HOST",
        ] {
            assert!(!forwarded_env_var(no), "{no}");
        }
    }
}
