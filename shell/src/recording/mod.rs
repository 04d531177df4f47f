//! Session recordings in asciicast v2 (`<log_dir>/sessions/<user>/<id>.cast`):
//! the writer ([`recorder`]), the log disk's room ([`log_disk`]), users'
//! budgets ([`budget`]), reading recordings back ([`cast`]), and where they
//! live (here).
//!
//! [`session::SessionRecording`] ties a recording to the `session.start` /
//! `session.end` audit events and to crash recovery.

pub mod budget;
pub mod cast;
mod log_disk;
pub mod open_marker;
mod recorder;
pub mod session;
mod writer;

pub use log_disk::{LogDisk, MIN_RECORDING_ROOM, check_reserve, free_space, user_usage};
pub use recorder::{
    BastionHeader, CastEnv, CastHeader, Recorder, RecorderOptions, RecordingOutcome,
};

pub use open_marker::{recover_interrupted, retry_pending_ends};
pub use session::{SessionLogError, SessionOutcome, SessionRecording};

use std::fs::{self};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

pub use crate::config::OnLogFailure;

/// Why a recording could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error(
        "invalid {what} {value:?} for a recording path: it must be 1-128 characters of letters, digits, '.', '_', '-' and not start with '.'"
    )]
    BadName { what: &'static str, value: String },
    #[error(
        "cannot create the recordings directory {path}: {source} (check that the log directory exists, is writable by root and the disk is not full)"
    )]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the recordings directory {path} is writable by group or others (mode {mode:o}): run `chmod 0700 {path}`"
    )]
    UnsafeDir { path: PathBuf, mode: u32 },
    #[error(
        "cannot create the recording {path}: {source} (is the log directory full or read-only?)"
    )]
    CreateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the recording {path}: {source} (is the disk full?)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the log disk {path} has {free} free, below the {reserve} kept for the audit trail: free space there or lower [recording] reserve"
    )]
    Reserve {
        path: PathBuf,
        free: bytesize::ByteSize,
        reserve: bytesize::ByteSize,
    },
    #[error(
        "the recordings of {user} take {used}, their budget is {budget}: prune old ones (bastionctl sessions prune --user {user}) or raise [bastiond.limits] recordings"
    )]
    Budget {
        user: String,
        used: bytesize::ByteSize,
        budget: bytesize::ByteSize,
    },
}

/// The path of a session's recording: `<log_dir>/sessions/<user>/<id>.cast`.
/// User and session id are checked so neither can leave that directory.
pub fn cast_path(log_dir: &Path, user: &str, session_id: &str) -> Result<PathBuf, RecordingError> {
    check_name("user name", user)?;
    check_name("session id", session_id)?;
    Ok(sessions_dir(log_dir)
        .join(user)
        .join(format!("{session_id}.cast")))
}

/// `<log_dir>/sessions`.
pub fn sessions_dir(log_dir: &Path) -> PathBuf {
    log_dir.join("sessions")
}

fn check_name(what: &'static str, value: &str) -> Result<(), RecordingError> {
    let ok = !value.is_empty()
        && value.len() <= 128
        && !value.starts_with('.')
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RecordingError::BadName {
            what,
            value: value.to_owned(),
        })
    }
}

/// Creates `dir` and its missing parents with mode 0700 (set at creation,
/// not changed afterwards), and refuses an existing one that group or
/// others can write.
pub fn ensure_private_dir(dir: &Path) -> Result<(), RecordingError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| RecordingError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
    let meta = fs::metadata(dir).map_err(|source| RecordingError::CreateDir {
        path: dir.to_owned(),
        source,
    })?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(RecordingError::UnsafeDir {
            path: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}
