//! The log disk's room: free space, the audit trail's reserve, and what a
//! user's recordings take.

use std::fs;
use std::path::Path;

use super::{RecordingError, sessions_dir};

/// Free space of the file system holding `path` (for unprivileged users,
/// as `df` shows it).
pub fn free_space(path: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    Ok(st.blocks_available() * st.fragment_size())
}

/// How much room the log disk has left, against the audit trail's reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDisk {
    /// At least twice the reserve free (or no reserve).
    Roomy,
    /// Less than twice the reserve free: recordings will soon stop.
    NearlyFull { free: u64 },
    /// Less than the reserve free: no session can be recorded.
    BelowReserve { free: u64 },
}

impl LogDisk {
    /// The state of a disk with `free` bytes free and `reserve` kept.
    pub fn of(free: u64, reserve: u64) -> Self {
        if reserve == 0 || free >= reserve.saturating_mul(2) {
            LogDisk::Roomy
        } else if free < reserve {
            LogDisk::BelowReserve { free }
        } else {
            LogDisk::NearlyFull { free }
        }
    }

    /// The state of the file system holding `log_dir`.
    pub fn check(log_dir: &Path, reserve: u64) -> std::io::Result<Self> {
        Ok(Self::of(free_space(log_dir)?, reserve))
    }
}

/// Fails when the log directory's file system has less than `reserve`
/// free.
pub fn check_reserve(log_dir: &Path, reserve: u64) -> Result<(), RecordingError> {
    if reserve == 0 {
        return Ok(());
    }
    match free_space(log_dir) {
        Ok(free) if free < reserve => Err(RecordingError::Reserve {
            path: log_dir.to_owned(),
            free: bytesize::ByteSize::b(free),
            reserve: bytesize::ByteSize::b(reserve),
        }),
        // Not readable: the file creation that follows says why.
        _ => Ok(()),
    }
}

/// Less of a user's budget than this left: no new recording.
pub const MIN_RECORDING_ROOM: u64 = 64 * 1024;

/// Bytes taken by the recordings of `user` (every file in their
/// directory).
pub fn user_usage(log_dir: &Path, user: &str) -> u64 {
    let dir = sessions_dir(log_dir).join(user);
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_disk_is_nearly_full_below_twice_the_reserve() {
        assert_eq!(LogDisk::of(10, 0), LogDisk::Roomy);
        assert_eq!(LogDisk::of(8 << 20, 4 << 20), LogDisk::Roomy);
        assert_eq!(
            LogDisk::of((8 << 20) - 1, 4 << 20),
            LogDisk::NearlyFull {
                free: (8 << 20) - 1
            }
        );
        assert_eq!(
            LogDisk::of(4 << 20, 4 << 20),
            LogDisk::NearlyFull { free: 4 << 20 }
        );
        assert_eq!(LogDisk::of(1, 4 << 20), LogDisk::BelowReserve { free: 1 });
    }
}
