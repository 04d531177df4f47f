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

use serde::{Deserialize, Serialize};

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

/// Encodes one frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let body = serde_json::to_vec(message)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// Parses the 4-byte length prefix.
pub fn frame_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Writes one frame to a blocking writer.
pub fn write_frame<T: Serialize>(w: &mut impl Write, message: &T) -> Result<(), FrameError> {
    w.write_all(&encode(message)?)?;
    Ok(())
}

/// Reads one frame from a blocking reader.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, FrameError> {
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        other => other?,
    }
    let mut body = vec![0u8; frame_len(prefix)?];
    r.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

/// Reads one frame from an async reader.
pub async fn read_frame_async<T: for<'de> Deserialize<'de>>(
    r: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<T, FrameError> {
    use tokio::io::AsyncReadExt;
    let mut prefix = [0u8; 4];
    match r.read_exact(&mut prefix).await {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        other => other?,
    };
    let mut body = vec![0u8; frame_len(prefix)?];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
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
        let back: Request = read_frame(&mut &bytes[..]).unwrap();
        assert_eq!(back, request);

        let exit = ServerMessage::Exit { code: 42 };
        let back: ServerMessage = read_frame(&mut &encode(&exit).unwrap()[..]).unwrap();
        assert_eq!(back, exit);
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let mut big = (MAX_FRAME as u32 + 1).to_be_bytes().to_vec();
        big.extend_from_slice(b"{}");
        assert!(matches!(
            read_frame::<ServerMessage>(&mut &big[..]),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            read_frame::<ServerMessage>(&mut &[][..]),
            Err(FrameError::Closed)
        ));
        let short = [0u8, 0, 0, 10, b'{'];
        assert!(matches!(
            read_frame::<ServerMessage>(&mut &short[..]),
            Err(FrameError::Io(_))
        ));
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
